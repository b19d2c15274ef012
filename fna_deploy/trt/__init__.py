"""TensorRT engines with the fna plugins: thin glue over polygraphy's TensorRT loaders.

TensorRT is imported only where used. Everything that can be decided without it (the fp16
strategy per TensorRT version, profiles, the sidecar) is plain Python, tested on any machine.
This package's __init__ only hands names on; the rooms are builder.py (plans), sidecar.py (the
JSON beside a plan), plugins.py (TensorRT and the fna plugin library), runtime.py (which
runtime, can this engine run here), shapes.py (profile spellings), contract_check.py, and the
TensorRT-RTX build child (rtx_child.py, _rtx_build.py).
"""

from __future__ import annotations

from ..tensor_spec import TensorSpec
from .builder import (_build_rtx, _build_with_polygraphy, _profile, build_engine, fp16_strategy, major_version, parse_batch,  # noqa: F401
                      parse_shapes, strip_fna_functions)
from .plugins import (PLUGIN_CREATORS, default_plugin, has_fna_nodes, load_engine_runner, load_plugins, require_tensorrt,  # noqa: F401
                      rtx_plugin, tensorrt_version)
from .runtime import (LABELS, MODULES, TENSORRT, TENSORRT_RTX, TensorRTUnavailable, engine_runs_here,  # noqa: F401
                      parse_compute_capabilities, resolve_runtime)
from .sidecar import EngineSidecar

__all__ = [
    "EngineSidecar",
    "engine_runs_here",
    "parse_compute_capabilities",
    "resolve_runtime",
    "TensorRTUnavailable",
    "TensorSpec",
    "build_engine",
    "fp16_strategy",
    "load_engine_runner",
    "load_plugins",
    "parse_batch",
    "parse_shapes",
    "require_tensorrt",
    "tensorrt_version",
]
