"""The tensors an artifact serves: the engine's JSON sidecar (validated) and a portable ONNX's inputs,
outputs and metadata, as Triton data types."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from ..tensor_spec import _DTYPES, TensorSpec  # noqa: F401  (triton.TensorSpec stays importable)
from ..trt import EngineSidecar


# ONNX TensorProto element type -> numpy dtype name
_ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 6: "int32", 7: "int64", 9: "bool", 10: "float16", 11: "float64", 16: "bfloat16"}


_SIDECAR_REQUIRED = ("inputs", "outputs", "profile")


@dataclass
class EngineIO:
    """What a Triton config needs from an engine's sidecar, validated."""

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    min_batch: int
    opt_batch: int
    max_batch: int
    dynamic_batch: bool
    fp16: bool
    plugin: Optional[str]
    fna_config: Optional[dict]
    random_seed: Optional[int] = None  # the export's random-weights seed (sidecar extra), None: real weights


def sidecar_path(engine: "str | os.PathLike[str]") -> Path:
    """Where the sidecar of ``engine`` lives: ``model.plan`` -> ``model.plan.json``."""
    return EngineSidecar.path_for(engine)


def engine_io(data: Any) -> EngineIO:
    """Validate a sidecar (a dict from its JSON, or an EngineSidecar) into an EngineIO.

    Fields used: ``inputs`` / ``outputs`` ([{name, dtype, shape}], shape batch first, -1 dynamic),
    ``profile`` ({input name: {"min", "opt", "max"}: full shapes}), ``fp16``, ``plugin`` (path or
    null), ``fna_config``. Anything missing or inconsistent is one ValueError sentence.
    """
    if isinstance(data, EngineSidecar):
        data = asdict(data)
    if not isinstance(data, dict):
        raise ValueError("engine sidecar: expected a JSON object")
    missing = [k for k in _SIDECAR_REQUIRED if k not in data]
    if missing:
        raise ValueError(f"engine sidecar: missing field(s) {', '.join(missing)}")

    def tensors(key: str) -> list[TensorSpec]:
        items = data[key]
        if not isinstance(items, list) or not items:
            raise ValueError(f"engine sidecar: '{key}' must be a non-empty list of tensors")
        out = []
        for item in items:
            if not isinstance(item, dict) or set(item) != {"name", "dtype", "shape"}:
                raise ValueError(f"engine sidecar: each of '{key}' needs exactly name, dtype and shape, got {item!r}")
            try:
                out.append(TensorSpec(item["name"], item["dtype"], item["shape"]))
            except ValueError as exc:
                raise ValueError(f"engine sidecar: {exc}") from None
        return out

    inputs, outputs = tensors("inputs"), tensors("outputs")
    profile = data["profile"]
    if not isinstance(profile, dict):
        raise ValueError("engine sidecar: 'profile' must map input names to min/opt/max shapes")
    dynamic = [t.shape[0] == -1 for t in inputs]
    if any(dynamic) and not all(dynamic):
        raise ValueError("engine sidecar: some inputs have a dynamic batch and some do not")
    batches = []
    for t in inputs:
        entry = profile.get(t.name)
        if entry is None:
            if any(d == -1 for d in t.shape):
                raise ValueError(f"engine sidecar: input {t.name!r} has dynamic dims but no profile")
            batches.append((t.shape[0],) * 3)
            continue
        try:
            lo, opt, hi = (list(entry[k]) for k in ("min", "opt", "max"))
        except (KeyError, TypeError):
            raise ValueError(f"engine sidecar: profile of {t.name!r} needs min, opt and max shapes") from None
        for shape in (lo, opt, hi):
            if len(shape) != len(t.shape) or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape):
                raise ValueError(f"engine sidecar: profile shape {shape} of {t.name!r} does not fit its shape {t.shape}")
        if not all(a <= b <= c for a, b, c in zip(lo, opt, hi)):
            raise ValueError(f"engine sidecar: profile of {t.name!r} needs min <= opt <= max, got {lo}/{opt}/{hi}")
        if any(s != -1 and not a == c == s for s, a, c in zip(t.shape, lo, hi)):
            raise ValueError(f"engine sidecar: profile of {t.name!r} disagrees with its static dims {t.shape}")
        batches.append((lo[0], opt[0], hi[0]))
    if len({b[0] for b in batches}) != 1 or len({b[2] for b in batches}) != 1:
        raise ValueError(f"engine sidecar: the inputs' profiles disagree on the batch range: {batches}")
    plugin = data.get("plugin")
    if plugin in ("", "None"):  # str(None) from an engine built without a plugin
        plugin = None
    if plugin is not None and not isinstance(plugin, str):
        raise ValueError(f"engine sidecar: 'plugin' must be a path or null, got {plugin!r}")
    fna_config = data.get("fna_config")
    if fna_config is not None and not isinstance(fna_config, dict):
        raise ValueError("engine sidecar: 'fna_config' must be an object or null")
    lo, opt, hi = batches[0]
    seed = (data.get("extra") or {}).get("random_seed") if isinstance(data.get("extra"), dict) else None
    return EngineIO(inputs, outputs, lo, opt, hi, all(dynamic), bool(data.get("fp16", False)), plugin, fna_config,
                    seed if isinstance(seed, int) and not isinstance(seed, bool) else None)


def load_sidecar(engine: "str | os.PathLike[str]") -> EngineIO:
    """Read and validate the sidecar of ``engine`` (``ENGINE.plan.json``)."""
    path = sidecar_path(engine)
    if not path.is_file():
        raise FileNotFoundError(2, "engine sidecar not found (fna-deploy build writes it next to the engine)", str(path))
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"engine sidecar {path.name} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    return engine_io(data)


@dataclass
class OnnxInfo:
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    metadata: dict[str, str]
    external_data: list[str]  # external data files beside the model


def onnx_info(path: "str | os.PathLike[str]") -> OnnxInfo:
    """Inputs, outputs, metadata and external data files of an ONNX model (weights not loaded)."""
    from ..export.validate import validate_onnx

    checked = validate_onnx(path)  # the one validation pass: opsets, dims, fna attributes, external data inside the folder
    model = checked.model
    initializers = {i.name for i in model.graph.initializer}

    def specs(values) -> list[TensorSpec]:
        out = []
        for v in values:
            if v.name in initializers:
                continue
            tt = v.type.tensor_type
            dtype = _ONNX_DTYPES.get(tt.elem_type)
            if dtype is None:
                raise ValueError(f"ONNX tensor {v.name!r} has an element type ({tt.elem_type}) Triton configs here do not support")
            dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in tt.shape.dim]
            if not dims:
                raise ValueError(f"ONNX tensor {v.name!r} is a scalar; a batched image model is expected")
            out.append(TensorSpec(v.name, dtype, dims))
        return out

    return OnnxInfo(specs(model.graph.input), specs(model.graph.output), checked.metadata, checked.external_data)
