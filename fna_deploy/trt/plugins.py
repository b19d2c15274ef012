"""TensorRT itself and the fna plugin library: is it here, load the plugins, a runner for a plan."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Optional

from .. import contract
from .runtime import LABELS, TENSORRT, TENSORRT_RTX, TensorRTUnavailable, engine_runs_here, import_runtime
from .sidecar import EngineSidecar

PLUGIN_CREATORS = tuple((o.name, contract.PLUGIN_VERSION, contract.PLUGIN_NAMESPACE) for o in contract.OPS)

def tensorrt_version() -> Optional[str]:
    try:
        trt = importlib.import_module("tensorrt")
    except Exception:
        return None
    return str(getattr(trt, "__version__", "0"))

def require_tensorrt() -> Any:
    """The tensorrt module and a CUDA GPU, or TensorRTUnavailable with one sentence."""
    version = tensorrt_version()
    if version is None:
        raise TensorRTUnavailable(
            "TensorRT is not installed; install it with 'pip install tensorrt' (NVIDIA's wheels, Linux with a "
            "CUDA GPU) or use NVIDIA's TensorRT container, then run this again"
        )
    import torch

    if not torch.cuda.is_available():
        raise TensorRTUnavailable("TensorRT needs a CUDA GPU and none is visible here (torch.cuda.is_available() is False)")
    return importlib.import_module("tensorrt")

def default_plugin() -> Optional[str]:
    """The TensorRT plugin library `fna-deploy plugin build` made (libfna_trt_plugin.so), if any."""
    try:
        from ..native import find_trt_plugin
    except ImportError:
        return None
    found = find_trt_plugin()
    return str(found) if found else None

def has_fna_nodes(model: Any) -> bool:
    return any(n.domain == contract.DOMAIN for n in model.graph.node)

def rtx_plugin(plugin: Optional[str]) -> str:
    """The TensorRT-RTX plugin library: ``plugin`` when given, else the one `fna-deploy plugin build` made."""
    if plugin:
        return str(plugin)
    from ..native import find_trt_plugin

    found = find_trt_plugin(runtime=TENSORRT_RTX)
    if found is None:
        raise TensorRTUnavailable(
            "this export has fna nodes and no TensorRT-RTX build of the fna plugin library was found: build it with "
            "'fna-deploy plugin build --runtime tensorrt-rtx --tensorrt-include DIR' (DIR: TensorRT 11.x headers, the "
            "include/ folder of github.com/NVIDIA/TensorRT at v11.1; needs nvcc) or pass --plugin LIB; a dense export "
            "builds without it"
        )
    return str(found)

def load_plugins(plugin: Optional[str], runtime: str = TENSORRT, trt: Any = None) -> Any:
    """Load the fna plugin library into ``runtime`` and check the creators are registered."""
    if trt is None:
        trt = require_tensorrt() if runtime == TENSORRT else import_runtime(runtime)
    if runtime == TENSORRT_RTX:
        plugin = rtx_plugin(plugin)
    plugin = plugin or default_plugin()
    if not plugin:
        raise TensorRTUnavailable("no fna plugin library: build it with 'fna-deploy plugin build' or pass --plugin LIB")
    if not Path(plugin).is_file():
        raise ValueError(f"plugin library {plugin!r} does not exist")
    import ctypes

    try:
        ctypes.CDLL(str(plugin), mode=ctypes.RTLD_GLOBAL)  # its static registrar registers the creators in "fna"
    except OSError as exc:  # e.g. a TensorRT build of the plugin loaded into TensorRT-RTX (no libnvinfer here)
        raise TensorRTUnavailable(f"cannot load the plugin library {plugin} into {LABELS[runtime]}: {exc}") from None
    registry = trt.get_plugin_registry()
    # looked up by name, version and namespace, as engine deserialization does
    missing = [f"{ns}::{name} v{ver}" for name, ver, ns in PLUGIN_CREATORS if registry.get_creator(name, ver, ns) is None]
    if missing:
        raise TensorRTUnavailable(f"{plugin} loaded but does not register {', '.join(missing)}; rebuild it with 'fna-deploy plugin build'")
    return trt

def load_engine_runner(engine_path: "str | Path", plugin: Optional[str], name: str = "trt") -> Any:
    """A polygraphy TrtRunner for a built engine, with the fna plugins loaded first; an engine
    this machine cannot run (sidecar: another runtime or version, no GPU, a GPU it was not built
    for) gives TensorRTUnavailable with the reason."""
    sidecar_path = EngineSidecar.path_for(engine_path)
    if sidecar_path.is_file():
        reason = engine_runs_here(EngineSidecar.from_json(sidecar_path.read_text()))
        if reason:
            raise TensorRTUnavailable(reason)
    load_plugins(plugin)
    from polygraphy.backend.common import BytesFromPath
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner

    return TrtRunner(EngineFromBytes(BytesFromPath(str(engine_path))), name=name)
