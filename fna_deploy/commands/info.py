"""``fna-deploy info``: versions, devices and what is built, for bug reports and scripts."""

from __future__ import annotations

import importlib
import json
import platform
from typing import Any

from typing import Callable, Optional

import click

from .._version import __version__
from ..cli import user_errors
from .options import quiet_option

PACKAGES = ("torch", "onnx", "onnxruntime", "onnxscript", "onnx_graphsurgeon", "polygraphy", "timm", "transformers", "tensorrt",
            "tensorrt_rtx", "tritonclient", "openvino")


# import name -> distribution names that carry it (the version comes from the distribution when the
# module has no __version__, as tritonclient)
DISTRIBUTIONS = {"tritonclient": ("tritonclient",), "onnx_graphsurgeon": ("onnx_graphsurgeon", "onnx-graphsurgeon")}


def _dist_version(*names: str) -> "str | None":
    from importlib import metadata

    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def _version(name: str) -> "str | None":
    try:
        module = importlib.import_module(name)
    except Exception:  # absent, or present but broken: either way not usable
        return None
    version = getattr(module, "__version__", None)
    if version is None:
        version = _dist_version(*DISTRIBUTIONS.get(name, (name,)))
    return str(version) if version is not None else "unknown"


def _tool(name: str, version_args: tuple[str, ...] = ("--version",)) -> dict[str, Any]:
    """A command-line tool on PATH: its path and the version line it prints (None when absent)."""
    import shutil
    import subprocess

    path = shutil.which(name)
    if path is None:
        return {"path": None, "version": None}
    try:
        done = subprocess.run([path, *version_args], capture_output=True, text=True, timeout=30)
        lines = [line.strip() for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    except (OSError, subprocess.TimeoutExpired):
        lines = []
    import re

    found = next((m.group(0) for line in reversed(lines) for m in [re.search(r"\d+\.\d+(\.\d+)?", line)] if m), None)
    return {"path": path, "version": found}


def _tritonserver() -> dict[str, Any]:
    """Where tritonserver is, whether it runs here, and which backends it has."""
    from ..triton.server import locate_tritonserver, probe_tritonserver, server_backends

    try:
        binary = locate_tritonserver()
    except FileNotFoundError as exc:
        return {"path": None, "bundled": False, "runs": False, "reason": f"{exc.strerror}", "backends": []}
    reason = probe_tritonserver(binary)
    return {
        "path": str(binary.path),
        "bundled": binary.bundled,
        "source": f"nvidia-pytriton {_dist_version('nvidia-pytriton') or ''}".strip() if binary.bundled else "PATH",
        "runs": reason is None,
        "reason": reason,
        "backends": server_backends(binary),
    }


def runtimes(step: Optional[Callable[[str], None]] = None) -> dict[str, Any]:
    """Every runtime fna-deploy can use, with versions (None where absent); ``step(message)`` is
    told before each probe (a line of progress each, since some take seconds)."""
    step = step or (lambda _message: None)
    step("probing tensorrt, tensorrt_rtx, onnxruntime, tritonclient")
    out: dict[str, Any] = {
        "tensorrt": _version("tensorrt"),
        "tensorrt_rtx": _version("tensorrt_rtx") or _dist_version("tensorrt_rtx", "tensorrt-rtx"),
        "onnxruntime": _version("onnxruntime"),
        "onnxruntime_providers": [],
        "openvino": _version("openvino"),
        "tritonclient": _version("tritonclient"),
        "nvidia_pytriton": _dist_version("nvidia-pytriton", "nvidia_pytriton"),
        "tritonserver": None,
    }
    step("probing cmake and nvcc")
    out["cmake"], out["nvcc"] = _tool("cmake"), _tool("nvcc")
    try:
        import onnxruntime

        out["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except Exception:
        pass
    step("probing tritonserver (starts it once)")
    try:
        out["tritonserver"] = _tritonserver()
    except Exception as exc:  # never let one probe break `info`
        out["tritonserver"] = {"path": None, "runs": False, "reason": f"{type(exc).__name__}: {exc}", "backends": []}
    return out


def collect(step: Optional[Callable[[str], None]] = None) -> dict[str, Any]:
    """Everything ``info`` shows; ``step(message)`` is told before each probe."""
    step = step or (lambda _message: None)
    step("importing torch (CUDA)")
    import torch

    cuda = torch.cuda.is_available()
    found = runtimes(step)
    packages = {}
    for name in PACKAGES:  # importing each one can take seconds (transformers, polygraphy): a line each
        step(f"probing {name}")
        packages[name] = _version(name)
    info: dict[str, Any] = {
        "fna_deploy": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": packages,
        "cuda_available": cuda,
        "cuda_version": torch.version.cuda,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "onnxruntime_providers": found["onnxruntime_providers"],
        "runtimes": found,
    }
    info["plugin_library"] = None
    try:
        native = importlib.import_module("fna_deploy.native")
        finder = getattr(native, "find_library", None)
        path = finder() if finder else None
        info["plugin_library"] = str(path) if path else None
    except Exception:
        pass
    found["plugin_library"] = info["plugin_library"]
    from ..runtimes import FORMS

    info["onnx_forms"] = dict(FORMS)  # which export form each runtime runs
    return info


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of a table.")
@quiet_option("No progress lines while the probes run; print only the table (or JSON).")
@user_errors
def info(as_json: bool, quiet: bool) -> None:
    """Show versions of fna-deploy and every runtime it can use (TensorRT, TensorRT-RTX, ONNX Runtime
    and its providers, OpenVINO, and which export form each runtime needs, tritonserver and its backends, tritonclient, nvidia-pytriton, cmake, nvcc),
    CUDA availability and the built plugin library. A progress line on stderr names each probe
    (importing torch, starting tritonserver once, ...) unless -q or --json."""
    from rich.console import Console

    from .progress import progress

    with progress(Console(stderr=True), quiet=quiet or as_json) as reporter:
        data = collect(reporter.step)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"fna-deploy {data['fna_deploy']}", show_header=False)
    table.add_column("item", style="bold")
    table.add_column("value", overflow="fold")
    table.add_row("python", f"{data['python']} ({data['platform']})")
    for name, version in data["packages"].items():
        table.add_row(name, version or "[dim]not installed[/dim]")
    cuda = f"yes (CUDA {data['cuda_version']}): {', '.join(data['gpus'])}" if data["cuda_available"] else "no"
    table.add_row("CUDA GPU", cuda)
    table.add_row("onnxruntime providers", ", ".join(data["onnxruntime_providers"]) or "-")
    rt = data["runtimes"]
    table.add_row("nvidia-pytriton", rt["nvidia_pytriton"] or "[dim]not installed[/dim]")
    server = rt["tritonserver"] or {}
    if server.get("path"):
        state = "runs" if server.get("runs") else f"[yellow]cannot run[/yellow]: {server.get('reason')}"
        backends = ", ".join(server.get("backends") or []) or "none found"
        table.add_row("tritonserver", f"{server['path']} ({server.get('source')}); {state}; backends: {backends}")
    else:
        table.add_row("tritonserver", f"[dim]not found[/dim] ({server.get('reason')})")
    for tool in ("cmake", "nvcc"):
        found = rt[tool]
        table.add_row(tool, f"{found['version'] or 'unknown version'} ({found['path']})" if found["path"] else "[dim]not on PATH[/dim]")
    table.add_row("plugin library", data["plugin_library"] or "[dim]not built (fna-deploy plugin build)[/dim]")
    for runtime, form in data["onnx_forms"].items():
        table.add_row(f"export form: {runtime}", form)
    Console().print(table)
