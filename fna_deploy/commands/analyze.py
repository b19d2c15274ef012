"""``fna-deploy analyze``: massive/artifact tokens, FNA error per layer, a config for an error budget."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import click

from ..cli import CliError, user_errors
from ..contract import DEFAULT_METHOD, LANDMARK_METHODS
from ..config import ARTIFACT_DETECTION_RATIO, DEFAULT_MASSIVE_RATIO
from .common import FiniteFloatRange, check_output_dir, load_cli_model, weights_seed_for
from .options import MAX_BATCH, MAX_PINV_ITERS, MAX_RESOLUTION, count
from .options import device_option, quiet_option, random_option, report_option, resolve_device, verbose_option
from .progress import progress


def _parse_landmarks(text: str) -> list[int]:
    values = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            value = int(part)
        except ValueError:
            raise CliError(f"--landmarks: {part!r} is not an integer; give a list such as 32,64,128") from None
        if value < 1:
            raise CliError(f"--landmarks: {value} landmarks is not possible; use m >= 1")
        values.append(value)
    if not values:
        raise CliError("--landmarks: give at least one number, e.g. 32,64,128")
    return values


def _fmt(value: Optional[float], spec: str = ".2e") -> str:
    return "-" if value is None else format(value, spec)


def _tokens(tokens: list[int], stable: bool) -> str:
    if not tokens:
        return "-"
    shown = ", ".join(map(str, tokens[:6])) + (f" (+{len(tokens) - 6})" if len(tokens) > 6 else "")
    return shown if stable else f"{shown} [dim](varies)[/dim]"


def print_report(report: Any, console: Any, model_args: str = "MODEL", verbose: bool = False) -> None:
    from rich.table import Table

    table = Table(
        title=f"{report.model.get('model_class', 'model')}: {report.num_tokens} tokens "
        f"({report.image_size[0]}x{report.image_size[1]}), {report.num_images} image(s)",
    )
    table.add_column("layer", justify="right")
    table.add_column("median", justify="right")
    table.add_column("max/med", justify="right")
    table.add_column("massive")
    table.add_column("sink", justify="right")
    table.add_column("artifacts")
    ms = sorted(report.layers[0].fna_error) if report.layers else []
    for m in ms:
        table.add_column(f"m={m}", justify="right")
    rec_layers = set(report.recommendation.layers)
    for layer in report.layers:
        mark = "*" if layer.index in rec_layers else ""
        table.add_row(
            f"{layer.index}{mark}",
            f"{layer.norm_median:.3g}",
            f"{layer.norm_ratio:.1f}",
            _tokens(layer.massive_tokens, layer.massive_stable),
            f"{layer.sink_mass:.3f}",
            _tokens(layer.artifact_tokens, layer.artifact_stable),
            *[_fmt(layer.fna_error.get(m)) for m in ms],
        )
    console.print(table)
    console.print(
        "[dim]median: residual-stream token norm entering the layer; sink: attention share the massive tokens "
        "receive; m=: relative error of FNA's attention output[/dim]"
    )
    if verbose and report.candidates:
        candidates = Table(title="candidates: the largest layer set within the budget, per m and landmark variant")
        for name in ("m", "variant", "layers", "1 - cos", "FLOP saving", "passes"):
            candidates.add_column(name, justify="left" if name in ("variant", "layers") else "right")
        for c in report.candidates:
            layers = ", ".join(map(str, c.layers)) if c.layers else "-"
            candidates.add_row(str(c.num_landmarks), c.variant, layers, _fmt(c.end_to_end_error),
                               f"{100 * c.flops_saving:.1f}%", str(c.evaluations))
        console.print(candidates)
    rec = report.recommendation
    if report.skipped_landmarks:
        for m, why in report.skipped_landmarks.items():
            console.print(f"[dim]m={m} skipped: {why}[/dim]")
    speedup = f"; expected speedup {rec.expected_speedup[0]:.2f}-{rec.expected_speedup[1]:.2f}x" if rec.expected_speedup else ""
    if rec.uses_fna:
        console.print(
            f"[bold]recommended[/bold] (* in the table): m={rec.num_landmarks} on layers "
            f"{', '.join(map(str, rec.layers))}; end-to-end 1 - cos = {rec.end_to_end_error:.2e} "
            f"(budget {rec.budget:g}); predicted FLOP saving {100 * rec.flops_saving:.1f}%{speedup}"
        )
        console.print(f"  fna-deploy export {model_args} {rec.export_flags}", highlight=False, soft_wrap=True)
    else:
        console.print(f"[bold]recommended[/bold]: keep the model dense: {rec.reason}")
        if rec.layers:
            console.print("  the best FNA config anyway (* in the table):", highlight=False)
            console.print(f"  fna-deploy export {model_args} {rec.export_flags}", highlight=False, soft_wrap=True)


@click.command()
@click.argument("model")
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="Weights (.safetensors / state-dict .pt) for a timm:NAME or hf:DIR MODEL.")
@click.option("--arch", help="Architecture (timm:NAME) when MODEL is a bare weights file.")
@click.option("--allow-pickle", is_flag=True, help="Allow unpickling a whole-module .pt file (runs code it carries; trusted files only).")
@click.option("--images", "images_dir", type=click.Path(file_okay=False), help="Directory of images to analyze on (your data).")
@random_option("Analyze on N random images instead (default: 8).")
@click.option("--resolution", type=count(1, MAX_RESOLUTION), help="Input resolution in pixels (default: the model's own).")
@click.option("--landmarks", default="32,64,128,256", show_default=True, help="Comma-separated numbers of landmarks m to measure.")
@click.option("--budget", type=FiniteFloatRange(min=0), default=0.01, show_default=True, help="Allowed end-to-end error: 1 - cosine of the outputs, worst image.")
@click.option("--massive-ratio", type=FiniteFloatRange(min=0), default=DEFAULT_MASSIVE_RATIO, show_default=True,
              help="Norm / median at which a token is massive, guaranteed as a landmark (0: off; every command's default).")
@click.option("--artifact-ratio", type=FiniteFloatRange(min=0), default=ARTIFACT_DETECTION_RATIO, show_default=True,
              help="Norm / median at which a patch token is reported as an artifact, and masking it is tried (0: off); "
                   "a recommendation that masks gives --artifact-ratio explicitly (export's default is 0).")
@click.option("--method", type=click.Choice(LANDMARK_METHODS), default=DEFAULT_METHOD, show_default=True, help="Landmark selection.")
@click.option("--pinv-iters", type=count(0, MAX_PINV_ITERS), default=6, show_default=True, help="Newton-Schulz iterations for the pseudo-inverse.")
@click.option("--batch-size", type=count(1, MAX_BATCH), default=8, show_default=True, help="Images per forward pass.")
@click.option("--min-saving", type=FiniteFloatRange(min=0, max=1, max_open=True), default=0.10, show_default=True,
              help="Advise staying dense when the best config saves less than this fraction of the FLOPs (0: off).")
@click.option("--break-even-tokens", type=count(0, 10**8), default=800, show_default=True,
              help="Advise staying dense below this many tokens (measured on CPU for ViT-B/16, docs/benchmarks.md; 0: off).")
@device_option()
@report_option("Write the full report as JSON to FILE.")
@click.option("--plot", "plot_dir", type=click.Path(file_okay=False), metavar="DIR", help="Write PNG plots into this directory.")
@quiet_option()
@verbose_option("Also print every candidate (m, landmark variant, layers, error, saving).")
@user_errors
def analyze(
    model: str,
    checkpoint: Optional[str],
    arch: Optional[str],
    allow_pickle: bool,
    images_dir: Optional[str],
    random_count: Optional[int],
    resolution: Optional[int],
    landmarks: str,
    budget: float,
    massive_ratio: float,
    artifact_ratio: float,
    method: str,
    pinv_iters: int,
    batch_size: int,
    min_saving: float,
    break_even_tokens: int,
    device: str,
    report_path: Optional[str],
    plot_dir: Optional[str],
    quiet: bool,
    verbose: bool,
) -> None:
    """Find massive and artifact tokens, measure FNA's error per layer, and recommend export flags.

    Runs MODEL on your images (or random ones), records the residual-stream token norms and the
    attention each layer's tokens receive, measures how far FNA's attention output is from dense
    attention for each m, and searches for the layers and m that keep the model's output within
    --budget (measured end to end) with the largest FLOP saving.
    """
    if images_dir is not None and random_count is not None:
        raise CliError("--images and --random exclude each other; give one")
    ms = _parse_landmarks(landmarks)
    if report_path is not None and Path(report_path).is_dir():
        raise CliError(f"--report: {report_path!r} is a directory; give a file name such as analysis.json")
    if report_path is not None:
        from ..export.graph import check_writable

        check_writable(Path(report_path))
    check_output_dir(plot_dir, "--plot")
    if plot_dir is not None and Path(plot_dir).exists() and not Path(plot_dir).is_dir():
        raise CliError(f"--plot: {plot_dir!r} exists and is not a directory")
    if plot_dir is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise CliError("--plot needs matplotlib; install it with: pip install matplotlib") from None

    import torch
    from rich.console import Console

    from ..analyze import analyze as run_analysis
    from ..analyze import write_plots, write_report
    from ..config import FNAConfig
    from ..images import load_images, random_images

    err = Console(stderr=True)
    dev = torch.device(resolve_device(device))
    config = FNAConfig(method=method, pinv_iters=pinv_iters)
    with progress(err, quiet=quiet) as reporter:
        seed = weights_seed_for(model, checkpoint, arch, None)
        reporter.step("loading the model" + (f" with random weights (seed {seed})" if seed is not None else ""))
        net = load_cli_model(model, checkpoint, arch, allow_pickle, resolution, seed)
        if images_dir is not None:
            inputs = load_images(images_dir, net, resolution)
        else:
            inputs = random_images(random_count or 8, net, resolution)
        net = net.to(dev)
        report = run_analysis(
            net,
            inputs,
            landmarks=ms,
            budget=budget,
            massive_ratio=massive_ratio,
            artifact_ratio=artifact_ratio,
            config=config,
            batch_size=batch_size,
            progress=reporter.bar,
            resolution=resolution,
            min_saving=min_saving,
            break_even_tokens=break_even_tokens,
        )
    import sys

    # piped or redirected output keeps every column instead of the 80-column default
    parts = [model] + ([f"--arch {arch}"] if arch else []) + ([f"--checkpoint {checkpoint}"] if checkpoint else [])
    parts += ["--allow-pickle"] if allow_pickle else []
    print_report(report, Console() if sys.stdout.isatty() else Console(width=160), " ".join(parts), verbose=verbose)
    if report_path is not None:
        path = write_report(report, report_path)
        err.print(f"report written to {path}")
    if plot_dir is not None:
        files = write_plots(report, plot_dir)
        err.print(f"plots written: {', '.join(str(f) for f in files) or 'none'}")
