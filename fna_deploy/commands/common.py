"""Option groups shared by the commands that take a model (export, verify, bench, analyze, run).

Like Polygraphy's argument groups: one decorator per group, one function that turns the parsed
values into library objects, so every command spells the same flag the same way.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import click

from ..cli import CliError
from .options import MAX_LANDMARKS, MAX_PINV_ITERS, MAX_RESOLUTION, count
from ..config import DEFAULT_ARTIFACT_RATIO, DEFAULT_MASSIVE_RATIO
from ..contract import DEFAULT_METHOD, LANDMARK_METHODS


class FiniteFloatRange(click.FloatRange):
    """A FloatRange that refuses nan and inf (a tolerance of nan or inf would judge nothing)."""

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        import math

        result = super().convert(value, param, ctx)
        if not math.isfinite(result):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return result


def check_input_file(path: "str | None", flag: str, hint: str) -> Optional[Path]:
    """Fail before any long work when an input file is missing or a folder (one sentence naming it)."""
    if path is None:
        return None
    file = Path(path)
    if not file.exists():
        raise CliError(f"{flag} {path!r} does not exist; {hint}")
    if not file.is_file():
        raise CliError(f"{flag} {path!r} is not a file; {hint}")
    return file


def read_onnx(path: "str | None", flag: str = "--onnx", *, attributes: bool = True):
    """An ONNX file given as input after the one validation pass of
    :func:`fna_deploy.export.validate.validate_onnx` (opsets, dims, fna attributes, external data):
    a ``ValidatedOnnx`` (model without weights, metadata, external data files), or None for no path."""
    hint = "give a .onnx written by 'fna-deploy export'"
    file = check_input_file(path, flag, hint)
    if file is None:
        return None
    from ..export.validate import validate_onnx

    return validate_onnx(file, flag, attributes=attributes)


def read_onnx_metadata(path: "str | None", flag: str = "--onnx", *, attributes: bool = True) -> Optional[dict]:
    """The metadata of an ONNX file given as input (after :func:`read_onnx`'s validation pass)."""
    checked = read_onnx(path, flag, attributes=attributes)
    return None if checked is None else checked.metadata


def check_output_dir(path: "str | None", flag: str) -> None:
    """An output folder that can be created or written: refuse a file, or a path below a file."""
    if path is None:
        return
    folder = Path(path)
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        where = "is a file" if probe == folder else f"is below {str(probe)!r}, which is a file"
        raise CliError(f"{flag} {path!r} {where}; give a folder")


def seed_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--seed", "weights_seed", type=click.IntRange(min=0), default=None, metavar="N",
                        help="Seed of the random weights a timm:NAME MODEL without --checkpoint gets "
                             "(default 0, or the seed recorded in the artifact).")(func)


def model_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """MODEL [--checkpoint FILE] [--arch timm:NAME] [--seed N] [--allow-pickle] [--resolution R]."""
    decorators = [
        click.argument("model"),
        click.option("--checkpoint", type=click.Path(dir_okay=False), help="Weights (.safetensors or state-dict .pt/.pth) for a timm:NAME or hf:DIR MODEL."),
        seed_option,
        click.option("--arch", metavar="timm:NAME", help="Architecture of a bare weights file given as MODEL."),
        click.option("--allow-pickle", is_flag=True, help="Allow loading a whole pickled module (.pt). Unpickling runs code from the file: only for files you trust."),
        click.option("--resolution", type=count(1, MAX_RESOLUTION), help="Input resolution in pixels (square); default: the model's own."),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def fna_options(func: Callable[..., Any], *, served: bool = False) -> Callable[..., Any]:
    """The FNAConfig flags. ``served``: the flags override a config recorded elsewhere (infer's
    served config), so --help shows no defaults that would not apply."""
    show = not served
    note = " Default: the served config's." if served else ""
    decorators = [
        click.option("--landmarks", "num_landmarks", type=count(1, MAX_LANDMARKS), default=64, show_default=show, help="Number of landmark tokens m." + note),
        click.option("--layers", default=None, metavar="SPEC", help="Blocks with FNA: all, a-b, a-b,c" + ("." + note if served else " (default: the second half).")),
        click.option("--method", type=click.Choice(LANDMARK_METHODS), default=DEFAULT_METHOD, show_default=show, help="Landmark selection." + note),
        click.option("--features", type=click.Choice(["q", "k", "v", "input"]), default="q", show_default=show,
                     help="What FPS measures distances on (input: the residual stream entering the block, as the official FNA code)." + note),
        click.option("--resample/--no-resample", "resample_every_layer", default=False, show_default=show, help="Select landmarks anew in every FNA layer." + note),
        click.option("--massive-ratio", type=FiniteFloatRange(min=0), default=DEFAULT_MASSIVE_RATIO, show_default=show,
                     help="Guarantee tokens whose norm is >= X x median as landmarks (the attention sinks; 0 = off)." + note),
        click.option("--artifact-ratio", type=FiniteFloatRange(min=0), default=DEFAULT_ARTIFACT_RATIO, show_default=show,
                     help="Exclude tokens whose norm is >= X x median (artifact masking; 0 = off)." + note),
        click.option("--pinv-iters", type=count(0, MAX_PINV_ITERS), default=6, show_default=show, help="Newton-Schulz iterations for the pseudo-inverse." + note),
        click.option("--num-prefix", type=count(0, MAX_LANDMARKS), default=None, help="Prefix tokens always kept" + ("." + note if served else " (default: detected: CLS + registers).")),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def served_fna_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """:func:`fna_options` for a command whose FNA config defaults to a served one."""
    return fna_options(func, served=True)


FNA_OPTION_NAMES = (
    "num_landmarks",
    "layers",
    "method",
    "features",
    "resample_every_layer",
    "massive_ratio",
    "artifact_ratio",
    "pinv_iters",
    "num_prefix",
)


def config_from_options(options: dict[str, Any]):
    """An FNAConfig from the parsed fna_options values (ValueError names a bad field)."""
    from ..config import FNAConfig

    return FNAConfig(**{name: options[name] for name in FNA_OPTION_NAMES if name in options})


FLAG_OF = {name: "--" + name.replace("_", "-") for name in FNA_OPTION_NAMES}
FLAG_OF.update({"num_landmarks": "--landmarks", "resample_every_layer": "--resample/--no-resample"})


def explicit_options(ctx: click.Context, names: "tuple[str, ...]" = FNA_OPTION_NAMES) -> set[str]:
    """The options of ``names`` the user typed (not left at their defaults)."""
    return {n for n in names if ctx.get_parameter_source(n) not in (None, click.core.ParameterSource.DEFAULT)}


def artifact_config(ctx: click.Context, options: dict[str, Any], stored: "str | dict | None", source: str, num_blocks: int):
    """The FNAConfig an artifact was exported with (``stored``: its JSON or dict), checked against
    the FNA flags the user typed: a flag that contradicts the artifact is refused with a sentence.
    Without a stored config, the flags (or their defaults) are the config."""
    from ..config import FNAConfig

    if not stored:
        return config_from_options(options)
    config = FNAConfig.from_json(stored) if isinstance(stored, str) else FNAConfig.from_dict(stored)
    for name in sorted(explicit_options(ctx)):
        given, kept = options[name], getattr(config, name)
        if name == "layers":
            same = FNAConfig(layers=given).resolve_layers(num_blocks) == config.resolve_layers(num_blocks)
        else:
            same = given == kept
        if not same:
            raise CliError(
                f"{FLAG_OF[name]} {given} contradicts {source}, which was exported with {name}={kept}; "
                "drop the flag (the configuration is read from the file) or give the artifact exported with it"
            )
    return config


def weights_seed_for(model: str, checkpoint: Optional[str], arch: Optional[str], seed: Optional[int],
                     recorded: Optional[int] = None, source: str = "") -> Optional[int]:
    """The seed MODEL's random weights are drawn from, or None when MODEL has real weights.

    ``recorded``: the seed an artifact (``source``) was exported with; it is the default, and a
    --seed that contradicts it is refused. --seed with real weights is refused too."""
    from ..loading import DEFAULT_SEED, has_random_weights

    if arch is not None or not has_random_weights(model, checkpoint):
        if seed is not None:
            raise CliError(f"--seed draws random weights for a timm:NAME model without --checkpoint; {model!r} "
                           f"{'with --checkpoint ' if checkpoint else ''}has its own weights: drop --seed")
        return None
    if recorded is not None and seed is not None and seed != recorded:
        raise CliError(f"--seed {seed} contradicts {source}, which was exported with random weights (seed {recorded}); "
                       "drop --seed (it is read from the file)")
    return seed if seed is not None else (recorded if recorded is not None else DEFAULT_SEED)


def recorded_seed(meta: Optional[dict]) -> Optional[int]:
    """The random-weights seed an artifact's metadata records (``random_seed``), or None."""
    value = (meta or {}).get("random_seed")
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def load_cli_model(model: str, checkpoint: Optional[str], arch: Optional[str], allow_pickle: bool, resolution: Optional[int],
                   seed: Optional[int] = None):
    """MODEL [--checkpoint FILE] [--arch timm:NAME] as the commands take them (``seed``: the random
    weights' seed from :func:`weights_seed_for`)."""
    from ..loading import load_model

    if arch is not None:
        if checkpoint is not None:
            raise CliError("--arch takes the weights from MODEL; drop --checkpoint (or pass the spec as MODEL)")
        if not (arch.startswith("timm:") or arch.startswith("hf:")):
            raise CliError(f"--arch {arch!r}: expected timm:NAME or hf:DIR")
        return load_model(arch, checkpoint=model, img_size=resolution, allow_pickle=allow_pickle)
    return load_model(model, checkpoint=checkpoint, img_size=resolution, allow_pickle=allow_pickle, seed=seed)


def model_label(model: str, arch: Optional[str]) -> str:
    return f"{arch} ({model})" if arch else model


@contextlib.contextmanager
def steps(console: Any, enabled: bool = True) -> Iterator[Callable[[str], None]]:
    """Progress for multi-step work; yields ``step(message)`` (see :mod:`.progress`: rich on a
    terminal, one line per stage with the elapsed time in logs, nothing when not ``enabled``)."""
    from .progress import progress

    with progress(console, quiet=not enabled) as reporter:
        yield reporter.step


RESULT_WIDTH = 132  # columns of a result table written to a file or pipe (rich's default there is 80)


def result_console() -> Any:
    """The console for a command's result tables: the terminal's width on a terminal, else
    RESULT_WIDTH, so tables in logs and pipes do not cut names at 80 columns (COLUMNS still wins)."""
    import os

    from rich.console import Console

    console = Console()
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        console = Console(width=RESULT_WIDTH)
    return console


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{size:.1f} GiB"
