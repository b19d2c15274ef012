"""Building a plan from an fna export: fp16 strategy, profiles, TensorRT through polygraphy,
TensorRT-RTX in a child process, and the sidecar written beside the plan."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Optional

from ..tensor_spec import TensorSpec
from .plugins import PLUGIN_CREATORS, default_plugin, has_fna_nodes, load_plugins, rtx_plugin
from .runtime import (
    MODULES,
    TENSORRT,
    TENSORRT_RTX,
    TensorRTUnavailable,
    format_cc,
    import_runtime,
    local_compute_capability,
    local_gpu_name,
    resolve_runtime,
    rtx_targets,
)
from .sidecar import EngineSidecar

def major_version(version: str) -> int:
    try:
        return int(version.split(".")[0])
    except ValueError:
        raise ValueError(f"cannot read a TensorRT version from {version!r}") from None

def fp16_strategy(version: str, fp16: bool, runtime: str = TENSORRT) -> str:
    """How to get an fp16 engine from this TensorRT: ``"fp32"`` (not asked), ``"builder-flag"``
    (TensorRT <= 10: BuilderFlag.FP16 on a weakly typed network) or ``"convert-onnx"``
    (TensorRT >= 11 and TensorRT-RTX: strongly typed only, so the ONNX itself is converted to fp16 first)."""
    if not fp16:
        return "fp32"
    major = major_version(version)
    return "builder-flag" if runtime == TENSORRT and major <= 10 else "convert-onnx"

def parse_batch(spec: str) -> tuple[int, int, int]:
    """``MIN:OPT:MAX`` (or one number for all three) -> (min, opt, max)."""
    parts = spec.split(":")
    if len(parts) == 1:
        parts = parts * 3
    try:
        lo, opt, hi = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"--batch {spec!r}: expected MIN:OPT:MAX with integers, e.g. 1:4:8") from None
    if len(spec.split(":")) not in (1, 3) or not 1 <= lo <= opt <= hi:
        raise ValueError(f"--batch {spec!r}: need 1 <= MIN <= OPT <= MAX, e.g. 1:4:8")
    return lo, opt, hi

def parse_shapes(specs: list[str]) -> dict[str, tuple[list[int], list[int], list[int]]]:
    """``name:MINxOPTxMAX`` entries where each of MIN/OPT/MAX is a shape like 1,3,224,224."""
    out = {}
    for spec in specs:
        name, sep, rest = spec.rpartition(":")
        shapes = rest.split("x") if sep else []
        if not name or len(shapes) != 3:
            raise ValueError(f"--shapes {spec!r}: expected name:MINxOPTxMAX with shapes like 1,3,224,224")
        try:
            dims = [[int(d) for d in s.split(",")] for s in shapes]
        except ValueError:
            raise ValueError(f"--shapes {spec!r}: shape dimensions must be integers") from None
        if len({len(d) for d in dims}) != 1 or any(not lo <= opt <= hi for lo, opt, hi in zip(*dims)):
            raise ValueError(f"--shapes {spec!r}: MIN <= OPT <= MAX must hold in every dimension")
        out[name] = (dims[0], dims[1], dims[2])
    return out

def strip_fna_functions(model: Any) -> Any:
    """A copy of ``model`` without the fna function bodies, or None when it has none.

    TensorRT's ONNX parser inlines a node whose op type names a model-local function before it
    looks for a plugin, so a portable export would lose the plugins; the bodies are dropped here.
    """
    from ..export.schemas import DOMAIN

    if not any(f.domain == DOMAIN for f in model.functions):
        return None
    keep = [f for f in model.functions if f.domain != DOMAIN]
    del model.functions[:]
    model.functions.extend(keep)
    return model

def _profile(model: Any, batch: tuple[int, int, int], shapes: Optional[dict]) -> dict[str, dict[str, list[int]]]:
    """input -> {"min", "opt", "max"} for every graph input (the batch range, or --shapes)."""
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    out = {}
    for inp in inputs:
        if shapes and inp.name in shapes:
            lo, opt, hi = shapes[inp.name]
        else:
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in inp.type.tensor_type.shape.dim]
            if any(d < 0 for d in dims[1:]):
                raise ValueError(f"input {inp.name!r} has dynamic dimensions besides the batch; give --shapes")
            lo, opt, hi = ([b, *dims[1:]] for b in batch)
        out[inp.name] = {"min": list(lo), "opt": list(opt), "max": list(hi)}
    return out

def _build_with_polygraphy(trt: Any, source: Path, strategy: str, profile_dims: dict, workspace_gib: float,
                           timing_cache: Optional[str]) -> tuple[bytes, list[TensorSpec], list[TensorSpec]]:
    """TensorRT (needs its GPU): polygraphy's loaders build; the I/O comes from the engine."""
    import numpy as np
    from polygraphy.backend.trt import CreateConfig, EngineFromNetwork, NetworkFromOnnxPath, Profile

    profile = Profile()
    for name, p in profile_dims.items():
        profile.add(name, p["min"], p["opt"], p["max"])
    strongly_typed = strategy == "convert-onnx" or major_version(trt.__version__) >= 11
    network = NetworkFromOnnxPath(str(source), strongly_typed=strongly_typed) if strongly_typed else NetworkFromOnnxPath(str(source))
    config = CreateConfig(
        fp16=strategy == "builder-flag",
        profiles=[profile],
        memory_pool_limits={trt.MemoryPoolType.WORKSPACE: int(workspace_gib * (1 << 30))},
        load_timing_cache=timing_cache if timing_cache and Path(timing_cache).exists() else None,
    )
    engine = EngineFromNetwork(network, config, save_timing_cache=timing_cache)()
    tensors = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]

    def spec(name: str) -> TensorSpec:
        return TensorSpec(name, np.dtype(trt.nptype(engine.get_tensor_dtype(name))).name, list(engine.get_tensor_shape(name)))

    return (bytes(engine.serialize()),
            [spec(t) for t in tensors if engine.get_tensor_mode(t) == trt.TensorIOMode.INPUT],
            [spec(t) for t in tensors if engine.get_tensor_mode(t) == trt.TensorIOMode.OUTPUT])

def _build_rtx(trt: Any, source: Path, plugin: Optional[str], profile_dims: dict, workspace_gib: float,
               targets: Optional[list], verbose: bool, tmp: Path) -> tuple[bytes, list[TensorSpec], list[TensorSpec], dict]:
    """TensorRT-RTX (no GPU needed): its builder runs in a child process (``rtx_child``: the
    parser's unversioned-library dlopen, a builder that dies); the I/O comes from the network.
    Returns the plan, inputs, outputs and the plugin layers per op the parser made."""
    import sys

    from .rtx_child import run_script

    spec = {"module": MODULES[TENSORRT_RTX], "onnx": str(source), "plan": str(tmp / "engine.plan"), "plugin": plugin,
            "creators": [list(c) for c in PLUGIN_CREATORS], "profile": profile_dims,
            "workspace": int(workspace_gib * (1 << 30)), "verbose": verbose,
            "targets": [int(t.name[2:]) for t in targets] if targets else None}

    def relay(line: str) -> None:  # the builder's log with --verbose; fna-trace lines of a traced plugin always
        if verbose or line.startswith("fna-trace:"):
            print(line, file=sys.stderr)

    result = run_script(Path(__file__).with_name("_rtx_build.py"), spec, MODULES[TENSORRT_RTX], tmp,
                        "TensorRT-RTX builder", on_stderr=relay, hint="rerun with --verbose to see its log")
    if "error" in result:
        raise (TensorRTUnavailable if result.get("kind") == "unavailable" else ValueError)(result["error"])
    return (Path(spec["plan"]).read_bytes(), [TensorSpec(**t) for t in result["inputs"]],
            [TensorSpec(**t) for t in result["outputs"]], result.get("plugin_layers", {}))

def build_engine(
    onnx_path: "str | Path",
    plan_path: "str | Path",
    *,
    fp16: bool = False,
    plugin: Optional[str] = None,
    batch: tuple[int, int, int] = (1, 1, 1),
    shapes: Optional[dict] = None,
    workspace_gib: float = 4.0,
    timing_cache: Optional[str] = None,
    verbose: bool = False,
    runtime: str = "auto",
    compute_capabilities: Optional[list[int]] = None,
) -> EngineSidecar:
    """Parse ``onnx_path`` with the fna plugins loaded, build, and write the plan + sidecar atomically.

    runtime: ``tensorrt`` (needs a GPU; builds for it), ``tensorrt-rtx`` (builds on any machine,
    for ``compute_capabilities`` such as [80, 86, 89, 120]; default: the local GPU's, else the
    library's default set; 9.0 is refused) or ``auto`` (TensorRT with a GPU, else TensorRT-RTX).
    """
    import onnx

    from ..export.fp16 import convert_to_fp16, is_fp16
    from ..export.graph import EXTERNAL_DATA_THRESHOLD, check_writable, read_metadata

    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(2, "no such ONNX file", str(onnx_path))
    check_writable(plan_path)
    runtime = resolve_runtime(runtime)
    model = onnx.load(str(onnx_path), load_external_data=False)
    if runtime == TENSORRT:
        if compute_capabilities:
            raise ValueError("--compute-capabilities applies to --runtime tensorrt-rtx; TensorRT builds for the GPU it runs on")
        trt = load_plugins(plugin)
        local = local_compute_capability()
        targets, recorded = None, [local] if local is not None else None
    else:
        if timing_cache:
            raise ValueError("--timing-cache is supported with --runtime tensorrt only; drop it for TensorRT-RTX")
        trt = import_runtime(runtime)
        targets = rtx_targets(trt, compute_capabilities)
        recorded = [int(t.name[2:]) for t in targets] if targets else None
        if has_fna_nodes(model):
            plugin = rtx_plugin(plugin)  # loaded by the builder's child process
        elif plugin:
            raise ValueError(f"{onnx_path.name} has no fna nodes, so --plugin is not needed")
    if runtime == TENSORRT:
        from polygraphy.logger import G_LOGGER

        G_LOGGER.module_severity = G_LOGGER.VERBOSE if verbose else G_LOGGER.WARNING
    strategy = fp16_strategy(trt.__version__, fp16, runtime)
    profile_dims = _profile(model, batch, shapes)
    with tempfile.TemporaryDirectory() as tmp:
        source = onnx_path
        prepared = strip_fna_functions(onnx.load(str(onnx_path)))
        changed = prepared is not None
        prepared = prepared or onnx.load(str(onnx_path))
        if strategy == "convert-onnx" and not is_fp16(prepared):
            prepared, changed = convert_to_fp16(prepared), True
        if changed:
            source = Path(tmp) / "model.onnx"
            onnx.save_model(prepared, source, save_as_external_data=prepared.ByteSize() > EXTERNAL_DATA_THRESHOLD)
        extra: dict[str, Any] = {}
        if runtime == TENSORRT:
            serialized, inputs, outputs = _build_with_polygraphy(trt, source, strategy, profile_dims, workspace_gib, timing_cache)
        else:
            serialized, inputs, outputs, layers = _build_rtx(trt, source, plugin, profile_dims, workspace_gib, targets,
                                                             verbose, Path(tmp))
            extra["plugin_layers"] = layers
    from ..utils import write_bytes_atomic, write_text_atomic

    meta = read_metadata(model)
    gpu = local_gpu_name()
    if runtime == TENSORRT_RTX:
        where = f"compute capability {', '.join(format_cc(c) for c in recorded)}" if recorded else "the library's default compute capabilities"
        gpu = f"{gpu or 'no GPU'}; built for {where}"
    if meta.get("random_seed", "").isdigit():  # the export's random-weights seed: verify/infer rebuild the same model
        extra["random_seed"] = int(meta["random_seed"])
    sidecar = EngineSidecar(
        runtime_version=str(trt.__version__),
        gpu=gpu or "unknown",
        fp16=fp16,
        fp16_strategy=strategy,
        inputs=inputs,
        outputs=outputs,
        profile=profile_dims,
        onnx=str(onnx_path),
        plugin=(plugin or default_plugin()) if runtime == TENSORRT else (plugin if has_fna_nodes(model) else None),
        fna_config=json.loads(meta["fna_config"]) if meta.get("fna_config") else None,
        runtime=runtime,
        compute_capabilities=recorded,
        extra=extra,
    )
    write_bytes_atomic(plan_path, serialized)
    write_text_atomic(EngineSidecar.path_for(plan_path), sidecar.to_json())
    return sidecar
