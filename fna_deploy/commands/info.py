"""``fna-deploy info``: versions, devices and what is built, for bug reports and scripts."""

from __future__ import annotations

import importlib
import json
import platform
from typing import Any

import click

from .._version import __version__
from ..cli import user_errors

PACKAGES = ("torch", "onnx", "onnxruntime", "onnxscript", "onnx_graphsurgeon", "polygraphy", "timm", "transformers", "tensorrt", "tensorrt_rtx", "tritonclient")


def _version(name: str) -> "str | None":
    try:
        module = importlib.import_module(name)
    except Exception:  # absent, or present but broken: either way not usable
        return None
    return str(getattr(module, "__version__", "unknown"))


def collect() -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    info: dict[str, Any] = {
        "fna_deploy": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {name: _version(name) for name in PACKAGES},
        "cuda_available": cuda,
        "cuda_version": torch.version.cuda,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "onnxruntime_providers": [],
    }
    try:
        import onnxruntime

        info["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except Exception:
        pass
    info["plugin_library"] = None
    try:
        native = importlib.import_module("fna_deploy.native")
        finder = getattr(native, "find_library", None)
        path = finder() if finder else None
        info["plugin_library"] = str(path) if path else None
    except Exception:
        pass
    return info


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of a table.")
@user_errors
def info(as_json: bool) -> None:
    """Show versions of fna-deploy and its backends, CUDA availability and built plugins."""
    data = collect()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"fna-deploy {data['fna_deploy']}", show_header=False)
    table.add_column("item", style="bold")
    table.add_column("value")
    table.add_row("python", f"{data['python']} ({data['platform']})")
    for name, version in data["packages"].items():
        table.add_row(name, version or "[dim]not installed[/dim]")
    cuda = f"yes (CUDA {data['cuda_version']}): {', '.join(data['gpus'])}" if data["cuda_available"] else "no"
    table.add_row("CUDA GPU", cuda)
    table.add_row("onnxruntime providers", ", ".join(data["onnxruntime_providers"]) or "-")
    table.add_row("plugin library", data["plugin_library"] or "[dim]not built (fna-deploy plugin build)[/dim]")
    Console().print(table)
