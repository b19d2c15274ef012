"""``fna-deploy serve``: a local Triton server (127.0.0.1 only) on a model repository."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import click

from ..cli import CliError, user_errors
from .common import FiniteFloatRange
from .options import quiet_option, verbose_option

PORT = click.IntRange(1, 65535)


@click.command()
@click.argument("repository", type=click.Path(file_okay=False))
@click.option("--http-port", type=PORT, default=8000, show_default=True)
@click.option("--grpc-port", type=PORT, default=8001, show_default=True)
@click.option("--metrics-port", type=PORT, default=8002, show_default=True)
@click.option("--timeout", type=FiniteFloatRange(min=1, max=86400), default=300, show_default=True, help="Seconds to wait for all models to load.")
@click.option("--model", "models", multiple=True, metavar="NAME",
              help="Serve only this model of REPOSITORY (repeatable; tritonserver's explicit model control, --load-model). "
                   "Default: every model.")
@click.option("--log", "log_path", type=click.Path(dir_okay=False), help="Write the server's log to this file (default: a temporary file, shown on failure).")
@verbose_option("Verbose server log.")
@quiet_option("Print only the ready line and the URLs.")
@user_errors
def serve(repository: str, http_port: int, grpc_port: int, metrics_port: int, timeout: float, models: tuple[str, ...],
          log_path: Optional[str], verbose: bool, quiet: bool) -> None:
    """Run tritonserver on REPOSITORY, bound to 127.0.0.1, until Ctrl-C or SIGTERM.

    Uses tritonserver from PATH if present, else the one bundled in nvidia-pytriton (pip install
    'fna-deploy[triton]'; it has the python backend only, so it serves --backend python
    repositories; --model NAME serves only the models you name). Plugin libraries of tensorrt models in the repository are passed with
    --backend-config=tensorrt,plugins=...

    \b
    Example:
      fna-deploy triton vit_fna.onnx -o repo --backend python
      fna-deploy serve repo
      fna-deploy infer 127.0.0.1:8000 vit_fna --random 1 --compare timm:vit_base_patch16_224
    """
    from rich.console import Console

    from ..export.graph import check_writable
    from ..triton import ServerError, TritonServer, check_backends, check_repository
    from ..triton.server import explicit_models_args

    names = check_repository(repository)
    unknown = [m for m in models if m not in names]
    if unknown:
        raise CliError(f"--model {unknown[0]!r} is not in {repository!r}, which holds: {', '.join(names)}")
    if models:
        names = list(dict.fromkeys(models))
    if log_path is not None:
        check_writable(Path(log_path))
    console = Console()
    server = TritonServer(Path(repository), http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port,
                          log_path=log_path, verbose=verbose, extra_args=explicit_models_args(names if models else ()))
    check_backends(repository, server.binary, names)  # before starting: a missing backend is known now
    stop_requested = False
    try:  # SIGTERM and SIGHUP arrive as KeyboardInterrupt (the CLI's boundary), like Ctrl-C
        if not quiet:
            console.print(f"starting {server.binary.describe()} on {', '.join(names)} ...", highlight=False)
        try:
            server.start(timeout=timeout)
        except ServerError as exc:
            first = str(exc).split("\n")[0].split(";")[0]
            cause = f": {exc.cause}" if exc.cause else ""
            raise CliError(f"{first}{cause} (log: {server.log_path})") from None
        console.print(f"[green]ready[/green]: {len(names)} model(s): {', '.join(names)}")
        console.print(f"  HTTP     http://{server.http_url}", highlight=False)
        console.print(f"  gRPC     {server.grpc_url}", highlight=False)
        console.print(f"  metrics  {server.metrics_url}", highlight=False)
        console.print(f"  log      {server.log_path}", highlight=False)
        if not quiet:
            console.print(f"try: fna-deploy infer {server.http_url} {names[0]} --random 1", highlight=False)
            console.print("Ctrl-C stops the server.")
        while server.running:
            time.sleep(0.5)
        code = server.process.returncode if server.process else None
        server.stop(keep_log=True)
        raise CliError(f"tritonserver exited on its own with code {code} (log: {server.log_path})")
    except KeyboardInterrupt:
        stop_requested = True
    finally:
        code = server.stop()
    if stop_requested:
        console.print(f"stopped (tritonserver exit code {code})")
