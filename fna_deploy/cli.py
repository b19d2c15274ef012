"""The ``fna-deploy`` command line: thin click commands over the library.

Each command parses its flags, calls the library and prints; errors the user can fix come back
as one sentence on stderr and a non-zero exit (never a traceback). Command modules are imported
lazily, so ``fna-deploy --help`` stays fast and a missing optional dependency only affects the
command that needs it. A new command is one line in ``COMMANDS``.
"""

from __future__ import annotations

import functools
import importlib
import sys
from typing import Any, Callable

import click

from ._version import __version__

# name -> "module:attribute" of a click.Command; imported only when the command runs
COMMANDS: dict[str, str] = {
    "analyze": "fna_deploy.commands.analyze:analyze",
    "info": "fna_deploy.commands.info:info",
    "export": "fna_deploy.commands.export:export",
    "build": "fna_deploy.commands.build:build",
    "verify": "fna_deploy.commands.verify:verify",
    "bench": "fna_deploy.commands.bench:bench",
    "plugin": "fna_deploy.commands.plugin:plugin",
    "triton": "fna_deploy.commands.triton:triton",
    "serve": "fna_deploy.commands.serve:serve",
    "infer": "fna_deploy.commands.infer:infer",
    "run": "fna_deploy.commands.run:run",
}

EXIT_USAGE = 2  # bad input, or a missing dependency / device the user has to provide
EXIT_FAILED = 1  # ran, but the result failed its check


class CliError(click.ClickException):
    """A user-facing error: printed as one sentence, exits with ``exit_code``."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def user_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the library's user-facing exceptions into one-sentence CLI errors."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except (ValueError, FileNotFoundError, PermissionError, IsADirectoryError) as exc:
            raise CliError(_sentence(exc)) from None
        except ImportError as exc:
            raise CliError(f"a required package is missing: {exc}") from None
        except KeyboardInterrupt:
            raise CliError("interrupted", exit_code=130) from None

    return wrapper


def _sentence(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.strerror or type(exc).__name__}: {exc.filename}"
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> "click.Command | None":
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "-V", "--version", prog_name="fna-deploy")
def cli() -> None:
    """Take vision transformers with Fast Nystrom Attention (FNA) from PyTorch to production.

    FNA replaces a ViT's N x N softmax attention by a Nystrom approximation on m landmark
    tokens (O(N*m)); it pays off at high resolution. The flow:

    \b
      analyze  MODEL          where FNA is safe: sinks, artifacts, error per layer and m
      export   MODEL          ONNX with fna::FnaLandmarks + fna::NystromAttention
      plugin   build          the CUDA kernels and TensorRT plugins
      build    MODEL.onnx     a TensorRT engine with the plugins
      verify   MODEL          parity: PyTorch, ONNX Runtime, TensorRT
      bench    MODEL          dense vs FNA latency across resolutions
      triton   ARTIFACT       a Triton model repository; serve / infer to try it
      run      MODEL          all of the above in one go

    MODEL is timm:NAME, hf:DIR, a .pt2 archive or a .pt module. Every command has --help.
    """


def main(argv: "list[str] | None" = None) -> int:
    try:
        cli.main(args=argv, prog_name="fna-deploy", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        click.echo("aborted", err=True)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
