"""The flag vocabulary every command speaks (docs/cli.md), and hidden aliases for old spellings.

    --report FILE        write the command's JSON report to FILE
    --json               print JSON to stdout instead of a table (no file)
    --random N           N random inputs
    -q, --quiet          no progress display, only results and errors
    -v, --verbose        more detail (library and server logs)
    --device auto|cpu|cuda   default auto: cuda when a GPU is here, else cpu

An old spelling stays for one release as a hidden option: using it prints one deprecation line on
stderr and does what the new spelling does (:func:`renamed`).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import click

from ..config import MAX_LANDMARKS, MAX_PINV_ITERS  # noqa: F401  (the bounds of config values, flags and files alike)
from ..utils import DEVICES, resolve_device  # noqa: F401  (commands import both from here)

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]

# upper bounds of the numeric flags (every one has one: an unbounded count can run for days or
# overflow a library's int32/int64); a value outside gets click's one-line range error, exit 2
MAX_RESOLUTION = 16384  # px
MAX_BATCH = 4096
MAX_COUNT = 1_000_000  # iterations, warmup runs, random inputs
MAX_THREADS = 1024
MAX_SEED = 2**32 - 1
MAX_REQUESTS = 10**9
MIN_OPSET, MAX_OPSET = 18, 23  # the fna function bodies need 18; torch.onnx exports up to 23 (ONNX_MAX_OPSET)
MAX_MODEL_VERSION = 2**63 - 1  # Triton versions are int64


def count(low: int, high: int) -> click.IntRange:
    """An integer flag within ``low..high`` (both inclusive)."""
    return click.IntRange(low, high)


def report_option(help: str = "Write the report as JSON to FILE.") -> Decorator:
    return click.option("--report", "report_path", type=click.Path(dir_okay=False), metavar="FILE", help=help)


def random_option(help: str, dest: str = "random_count") -> Decorator:
    return click.option("--random", dest, type=count(1, MAX_COUNT), metavar="N", default=None, help=help)


def quiet_option(help: str = "No progress display; print only results and errors.") -> Decorator:
    return click.option("-q", "--quiet", is_flag=True, help=help)


def verbose_option(help: str = "More detail.") -> Decorator:
    return click.option("-v", "--verbose", is_flag=True, help=help)


def device_option(help: str = "Where torch runs: auto picks cuda when a GPU is here, else cpu.") -> Decorator:
    return click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True, help=help)


def openvino_precision_option() -> Decorator:
    return click.option("--openvino-precision", type=click.Choice(["f32", "bf16"]), default="f32", show_default=True,
                        help="OpenVINO inference precision; bf16 (OpenVINO's own CPU default where bf16 units exist) is "
                             "named as such in the report and loses about 1e-2 in the output.")


def backend_list(text: str, choices: "tuple[str, ...]", flag: str = "--backends") -> list[str]:
    """The comma-separated names in ``text``, each one of ``choices`` (a CliError naming the first that is not)."""
    from ..cli import CliError

    chosen = [b.strip() for b in text.split(",") if b.strip()]
    if not chosen:
        raise CliError(f"{flag} {text!r}: name at least one of {', '.join(choices)}")
    bad = [b for b in chosen if b not in choices]
    if bad:
        raise CliError(f"{flag}: unknown backend {bad[0]!r}; choose from {', '.join(choices)}")
    return chosen


def deprecated(old: str, new: str) -> None:
    """One line on stderr: ``old`` still works for this release; ``new`` is the spelling to use."""
    click.echo(f"note: {old} is deprecated and goes away in the next release; use {new}", err=True)


def renamed(old: str, new: str, dest: str, *, is_flag: bool = False, value: Any = None, type: Any = None,
            convert: Optional[Callable[[Any], Any]] = None) -> Decorator:
    """A hidden ``old`` option that sets parameter ``dest`` as the ``new`` spelling would.

    ``is_flag``: the old spelling was a switch; it sets ``dest`` to ``value``. ``convert`` maps an
    old value to the new one. The new spelling wins when both are given. Place it below
    ``@click.command`` like any option.
    """
    hidden = "_old_" + old.lstrip("-").replace("-", "_")

    def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            given = kwargs.pop(hidden, None)
            if given is not None and given is not False:
                deprecated(old, new)
                if kwargs.get(dest) in (None, False, ()):
                    kwargs[dest] = value if is_flag else (convert(given) if convert else given)
            return func(*args, **kwargs)

        option = click.option(old, hidden, hidden=True, is_flag=is_flag, default=None, type=type, expose_value=True)
        return option(wrapper)

    return decorator
