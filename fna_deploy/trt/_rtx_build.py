"""Child process of ``fna-deploy build --runtime tensorrt-rtx`` (``rtx_child.py`` starts it): a plain
script, so it needs only the standard library, numpy and the runtime module (no torch, no
fna_deploy import).

    python _rtx_build.py SPEC.json     # writes SPEC["plan"], prints one JSON object on stdout

SPEC: {"module": "tensorrt_rtx", "onnx": path, "plan": path, "plugin": path | null,
       "creators": [[name, version, namespace], ...], "profile": {input: {"min", "opt", "max"}},
       "workspace": bytes, "targets": [86, ...] | null, "verbose": bool}
Result: {"inputs": [...], "outputs": [...], "plugin_layers": {op: count}} or
        {"error": sentence, "kind": "unavailable" | "value"}.

Why a child: TensorRT-RTX's ONNX parser dlopens the unversioned ``libtensorrt_rtx.so`` at the first
plugin node and ends the process with std::terminate when it is missing; the parent puts a private
folder with that name (a symlink to the very file the wheel loads) on this process's
LD_LIBRARY_PATH, and a builder that dies anyway cannot take the parent down.
"""

from __future__ import annotations

import ctypes
import json
import sys
from pathlib import Path
from typing import Any


class Failure(Exception):
    def __init__(self, sentence: str, kind: str = "value") -> None:
        super().__init__(sentence)
        self.kind = kind


def load_plugin(trt: Any, spec: dict) -> None:
    """dlopen the plugin library (it registers its creators under namespace "fna") and check that
    the registry finds every creator by name, version and namespace, as engine loading does."""
    plugin = spec.get("plugin")
    if not plugin:
        return
    try:
        ctypes.CDLL(plugin, mode=ctypes.RTLD_GLOBAL)
    except OSError as exc:
        raise Failure(f"cannot load the plugin library {plugin} into TensorRT-RTX: {exc}", "unavailable") from None
    registry = trt.get_plugin_registry()
    missing = [f"{ns}::{name} v{ver}" for name, ver, ns in spec["creators"] if registry.get_creator(name, ver, ns) is None]
    if missing:
        raise Failure(f"{plugin} loaded but does not register {', '.join(missing)}; rebuild it with "
                      "'fna-deploy plugin build --runtime tensorrt-rtx'", "unavailable")


def plugin_layers(trt: Any, network: Any) -> dict[str, int]:
    """op name -> number of IPluginV3 layers in the parsed network."""
    counts: dict[str, int] = {}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type != trt.LayerType.PLUGIN_V3:
            continue
        layer.__class__ = trt.IPluginV3Layer
        core = layer.plugin.get_capability_interface(trt.PluginCapabilityType.CORE)
        name = str(getattr(core, "plugin_name", "") or "?")
        counts[name] = counts.get(name, 0) + 1
    return counts


def build(spec: dict) -> dict:
    import importlib

    import numpy as np

    trt = importlib.import_module(spec["module"])
    load_plugin(trt, spec)
    logger = trt.Logger(trt.Logger.VERBOSE if spec.get("verbose") else trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    source = Path(spec["onnx"])
    if not parser.parse_from_file(str(source)):
        errors = [parser.get_error(i) for i in range(parser.num_errors)]
        first = errors[0] if errors else None
        where = f" at {first.node_name() or first.node()} ({first.node_operator()})" if first else ""
        raise Failure(f"TensorRT-RTX's ONNX parser rejects {source.name}{where}: {first.desc() if first else 'no reason given'}; "
                      "'fna-deploy build --check' lists every problem")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(spec["workspace"]))
    targets = spec.get("targets")
    if targets:
        config.num_compute_capabilities = len(targets)
        for i, cc in enumerate(targets):
            config.set_compute_capability(getattr(trt.ComputeCapability, f"SM{cc}"), i)
    profile = builder.create_optimization_profile()
    for name, p in spec["profile"].items():
        profile.set_shape(name, p["min"], p["opt"], p["max"])
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise Failure(f"TensorRT-RTX could not build an engine from {source.name}; rerun with --verbose for the builder's log")
    Path(spec["plan"]).write_bytes(bytes(serialized))

    def tensor(t: Any) -> dict:
        return {"name": t.name, "dtype": np.dtype(trt.nptype(t.dtype)).name, "shape": list(t.shape)}

    return {"inputs": [tensor(network.get_input(i)) for i in range(network.num_inputs)],
            "outputs": [tensor(network.get_output(i)) for i in range(network.num_outputs)],
            "plugin_layers": plugin_layers(trt, network)}


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text())
    try:
        result = build(spec)
    except Failure as exc:
        result = {"error": str(exc), "kind": exc.kind}
    sys.stdout.flush()
    print("\n" + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
