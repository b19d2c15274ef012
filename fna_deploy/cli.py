"""The ``fna-deploy`` command line: thin click commands over the library.

Each command parses its flags, calls the library and prints; errors the user can fix come back
as one sentence on stderr and a non-zero exit (never a traceback). Command modules are imported
lazily, so ``fna-deploy --help`` stays fast and a missing optional dependency only affects the
command that needs it. A new command is one line in ``COMMANDS``.
"""

from __future__ import annotations

from .errors import FnaDeployError

import contextlib
import functools
import importlib
import os
import signal
import sys
import threading
from typing import Any, Callable, Iterator

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
    "k8s": "fna_deploy.commands.k8s:k8s",
    "run": "fna_deploy.commands.run:run",
}

EXIT_USAGE = 2  # bad input, or a missing dependency / device the user has to provide
EXIT_FAILED = 1  # ran, but the result failed its check (a parity verdict); nothing else uses 1
DEBUG_ENV = "FNA_DEPLOY_DEBUG"  # =1: print the traceback behind an error (as --debug does)
SIGNAL_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129}


class CliError(click.ClickException):
    """A user-facing error: printed as one line ``error: ...``, exits with ``exit_code``."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {one_line(self.format_message())}", err=True)


class Interrupted(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP arrived: unwinds like Ctrl-C, so every ``finally`` cleans up."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def one_line(text: str) -> str:
    """The first non-empty line of ``text`` (a message is one sentence on one line)."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else ""


def _sentence(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.strerror or type(exc).__name__}: {exc.filename}"
    return one_line(str(exc)) or type(exc).__name__


def as_cli_error(exc: BaseException) -> "CliError | None":
    """The one-line CLI error for an exception the user can act on, or None for an unexpected one."""
    import errno

    if isinstance(exc, CliError):
        return exc
    if isinstance(exc, click.UsageError):
        ctx = exc.ctx
        where = f"fna-deploy {ctx.command_path.split(' ', 1)[1]} --help" if ctx and " " in ctx.command_path else "fna-deploy --help"
        return CliError(f"{one_line(exc.format_message()).rstrip('.')}; see {where}")
    if isinstance(exc, click.ClickException):
        return CliError(one_line(exc.format_message()), exit_code=EXIT_USAGE)
    if isinstance(exc, Interrupted):
        return CliError(f"interrupted by {signal.Signals(exc.signum).name}; files this run had not finished were removed",
                        exit_code=SIGNAL_EXIT.get(exc.signum, 130))
    if isinstance(exc, KeyboardInterrupt):
        return CliError("interrupted; files this run had not finished were removed", exit_code=130)
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" writing {exc.filename}" if exc.filename else ""
        return CliError(f"no space left on the device{where}; free some space or write the output elsewhere")
    if isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and any(
            text in str(exc).lower() for text in ("can't allocate memory", "out of memory", "cannot allocate memory"))):
        return CliError("ran out of memory; try a smaller --resolution or --batch")
    if isinstance(exc, (FnaDeployError, ValueError, OSError)):
        return CliError(_sentence(exc))
    if isinstance(exc, ImportError):
        return CliError(f"a required package is missing: {_sentence(exc)}")
    return None


def debug_enabled() -> bool:
    return _DEBUG[0] or os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


_DEBUG = [False]


def user_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the library's user-facing exceptions into one-line CLI errors (the command's own layer;
    the group's boundary in ``LazyGroup.main`` catches everything else)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except (FnaDeployError, ValueError, OSError, ImportError, MemoryError) as exc:
            if debug_enabled():
                raise
            raise as_cli_error(exc) from None  # type: ignore[misc]

    return wrapper


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP raise :class:`Interrupted` like Ctrl-C does, so cleanup code runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise Interrupted(signum)

    previous = {}
    for signum in (signal.SIGTERM, signal.SIGHUP):
        try:
            previous[signum] = signal.signal(signum, handler)
        except (ValueError, OSError):  # pragma: no cover - not settable here
            pass
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


START_NOTICE_S = 0.25  # a command silent this long after its start says what it is loading
_NOTICE: "list[threading.Timer]" = []


def _start_notice(argv: "list[str]") -> None:
    """Unless the command speaks first (:func:`output_started`), one line on stderr after
    START_NOTICE_S: the heavy imports (torch, onnx, timm) take seconds before any progress.
    Not for --help, -q/--quiet, --json or --version."""
    words = [a for a in argv if not a.startswith("-")]
    if not words or words[0] not in COMMANDS or any(a in ("-h", "--help", "-q", "--quiet", "--json", "-V", "--version") for a in argv):
        return
    timer = threading.Timer(START_NOTICE_S, lambda: click.echo(f"fna-deploy {words[0]}: loading torch, onnx and the model libraries ...", err=True))
    timer.daemon = True
    _NOTICE.append(timer)
    timer.start()


def output_started() -> None:
    """The command printed its first progress line: the start notice is no longer needed."""
    while _NOTICE:
        _NOTICE.pop().cancel()


def _command_label(args: "list[str] | None") -> str:
    words = [a for a in (args if args is not None else sys.argv[1:]) if not a.startswith("-")]
    return f"fna-deploy {words[0]}" if words and words[0] in COMMANDS else "fna-deploy"


def _debug_option(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        _DEBUG[0] = True


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> "click.Command | None":
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)

    def main(self, args: Any = None, prog_name: Any = None, complete_var: Any = None, standalone_mode: bool = True, **extra: Any) -> Any:
        """The one error boundary: every failure leaves as one ``error:`` line on stderr and an exit
        code (1: a failed parity check, 2: anything else, 128+N: signal N); a traceback only with
        --debug or FNA_DEPLOY_DEBUG=1."""
        argv = list(args) if args is not None else sys.argv[1:]
        _DEBUG[0] = "--debug" in argv[: next((i for i, a in enumerate(argv) if a in COMMANDS), len(argv))]
        _start_notice(argv)
        try:
            with signals_interrupt():
                result = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
            code = result if isinstance(result, int) else 0
        except click.exceptions.Exit as exc:
            code = exc.exit_code
        except click.Abort as exc:  # click turns KeyboardInterrupt (so our signals too) into Abort
            cause = exc.__cause__ or exc.__context__
            code = self._fail(as_cli_error(cause) if isinstance(cause, KeyboardInterrupt) else CliError("aborted", exit_code=130))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_USAGE)
        except BaseException as exc:  # noqa: BLE001 - this is the boundary
            error = as_cli_error(exc)
            if error is None:
                error = CliError(
                    f"{_command_label(argv)} stopped on an unexpected {type(exc).__name__}: {_sentence(exc)}; check its "
                    f"inputs, or rerun with --debug ({DEBUG_ENV}=1) for the traceback and report it"
                )
            if debug_enabled() and not isinstance(exc, click.ClickException):
                import traceback

                traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
            code = self._fail(error)
        output_started()
        if standalone_mode:
            sys.exit(code)
        return code

    @staticmethod
    def _fail(error: CliError) -> int:
        error.show()
        return error.exit_code


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "-V", "--version", prog_name="fna-deploy")
@click.option("--debug", is_flag=True, expose_value=False, is_eager=True, callback=_debug_option,
              help=f"Print the Python traceback behind an error (also {DEBUG_ENV}=1).")
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
      k8s      REPO           Kubernetes manifests that run a Triton repository on a cluster

    MODEL is timm:NAME, hf:DIR, a .pt2 archive or a .pt module. Every command has --help.
    """


def main(argv: "list[str] | None" = None) -> int:
    """The console entry point: runs the group through its error boundary, returns the exit code."""
    return cli.main(args=argv, prog_name="fna-deploy", standalone_mode=False)


if __name__ == "__main__":  # pragma: no cover
    # run the package's module, not this __main__ copy: its state (the start notice) is the one
    # the commands import
    from fna_deploy.cli import main as package_main

    sys.exit(package_main())
