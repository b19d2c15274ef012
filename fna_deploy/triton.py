"""Triton Inference Server: model repositories, a local server, a client.

Three backends for one exported model:

- ``tensorrt``: a TensorRT engine (``.plan``) built by ``fna-deploy build``; its tensors and
  optimisation profile come from the engine's JSON sidecar (``fna_deploy.trt.EngineSidecar``,
  validated by :func:`engine_io`).
- ``onnxruntime``: the portable ONNX (fna ops carry ONNX function bodies), optionally with the
  TensorRT execution accelerator and the fna plugin library.
- ``python``: the portable ONNX run by ONNX Runtime inside a generated Python-backend
  ``model.py``; works on CPU-only machines and with the tritonserver bundled in nvidia-pytriton.

Every ``config.pbtxt`` is rendered from and parsed back with Triton's own ``ModelConfig``
protobuf (shipped by tritonclient) and validated before anything is written; a repository is
staged in a temporary folder and renamed into place, and an existing model is only replaced
with ``force``.

Server helpers find ``tritonserver`` (PATH, else the nvidia-pytriton wheel), start it on
127.0.0.1 only, wait for readiness and stop it (SIGTERM, then SIGKILL of its process group).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

BACKENDS = ("tensorrt", "onnxruntime", "python")
LOOPBACK = "127.0.0.1"
DEFAULT_MAX_BATCH = 8
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
TRITONCLIENT_HINT = "pip install 'fna-deploy[triton]' (nvidia-pytriton and tritonclient)"

# numpy dtype name <-> Triton data type
_DTYPES = {
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "bfloat16": "TYPE_BF16",
    "float64": "TYPE_FP64",
    "int8": "TYPE_INT8",
    "uint8": "TYPE_UINT8",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "bool": "TYPE_BOOL",
}
# ONNX TensorProto element type -> numpy dtype name
_ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 6: "int32", 7: "int64", 9: "bool", 10: "float16", 11: "float64", 16: "bfloat16"}


# ----------------------------------------------------------------------------------------------
# Tensors and the engine sidecar


@dataclass
class TensorSpec:
    """One model input or output: name, numpy dtype name, full shape (batch first, -1 = dynamic)."""

    name: str
    dtype: str
    shape: list[int]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"tensor name must be a non-empty string, got {self.name!r}")
        if self.dtype not in _DTYPES:
            raise ValueError(f"tensor {self.name!r}: unsupported dtype {self.dtype!r} (one of {', '.join(_DTYPES)})")
        if not isinstance(self.shape, (list, tuple)) or not self.shape or any(
            isinstance(d, bool) or not isinstance(d, int) or d < -1 or d == 0 for d in self.shape
        ):
            raise ValueError(f"tensor {self.name!r}: shape must be a non-empty list of positive ints or -1, got {self.shape!r}")
        self.shape = [int(d) for d in self.shape]

    @property
    def triton_dtype(self) -> str:
        return _DTYPES[self.dtype]


# The sidecar schema is the one ``fna-deploy build`` writes: fna_deploy.trt.EngineSidecar (one
# definition for both sides). Re-exported here; ``engine_io`` is the validated view Triton needs.
from .trt import EngineSidecar  # noqa: E402  (plain Python: TensorRT is imported only when building)

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
    return EngineIO(inputs, outputs, lo, opt, hi, all(dynamic), bool(data.get("fp16", False)), plugin, fna_config)


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
    import onnx

    from .export.graph import read_metadata

    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf decode errors have many types
        raise ValueError(f"{str(path)!r} is not a readable ONNX model ({type(exc).__name__})") from None
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

    external = sorted(
        {e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"}
    )
    return OnnxInfo(specs(model.graph.input), specs(model.graph.output), read_metadata(model), external)


# ----------------------------------------------------------------------------------------------
# config.pbtxt


def _model_config_pb2():
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        raise ImportError(f"writing Triton configs needs tritonclient's model-config protobuf: {TRITONCLIENT_HINT}") from None
    return model_config_pb2


def parse_config(text: str):
    """Parse config.pbtxt text with Triton's ``ModelConfig`` protobuf; ValueError on any error."""
    from google.protobuf import text_format

    pb2 = _model_config_pb2()
    try:
        return text_format.Parse(text, pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise ValueError(f"config.pbtxt does not parse as a Triton ModelConfig: {exc}") from None


def render_config(config) -> str:
    from google.protobuf import text_format

    return text_format.MessageToString(config)


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ValueError(
            f"model name {name!r} is not valid: use 1-128 letters, digits, '_', '-' or '.', starting with a letter or digit"
        )
    return name


def validate_version(version: Any) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"model version must be an int >= 1, got {version!r}")
    return version


def default_name(artifact: "str | os.PathLike[str]") -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(artifact).stem).strip("._-") or "model"
    return stem[:128]


@dataclass
class RepositoryOptions:
    """What ``write_repository`` puts into the config (validated in ``build_config``)."""

    name: str
    backend: str
    version: int = 1
    max_batch_size: Optional[int] = None  # None: engine profile max (tensorrt) or DEFAULT_MAX_BATCH
    instances: int = 1
    dynamic_batching: Optional[bool] = None  # None: on when the model batches
    preferred_batch_sizes: Sequence[int] = ()
    queue_delay_us: int = 0
    plugin: Optional[str] = None  # plugin library to copy into the repository
    gpu: Optional[bool] = None  # instance kind; None: GPU for tensorrt/onnxruntime, CPU for python
    fp16_accelerator: bool = True  # onnxruntime + plugin: TensorRT EP precision FP16


def _check_max_batch(options: RepositoryOptions, tensors: list[TensorSpec], profile: Optional[tuple[int, int, int]]) -> int:
    batched = all(t.shape[0] == -1 for t in tensors)
    requested = options.max_batch_size
    if requested is not None and (isinstance(requested, bool) or not isinstance(requested, int) or requested < 0):
        raise ValueError(f"max_batch_size must be an int >= 0, got {requested!r}")
    if not batched:
        if requested:
            raise ValueError(
                f"max_batch_size {requested}: the model has a static batch dimension ({tensors[0].shape[0]}); "
                "export with a dynamic batch or use --max-batch-size 0"
            )
        return 0
    if profile is not None:
        lo, _opt, hi = profile
        if lo > 1:
            raise ValueError(f"the engine's profile starts at batch {lo}; Triton sends batches from 1, rebuild with min batch 1")
        if requested is None:
            return hi
        if requested > hi:
            raise ValueError(f"max_batch_size {requested} exceeds the engine's profile max batch {hi}; rebuild the engine or lower it")
        if requested == 0:
            raise ValueError("max_batch_size 0 needs a static-batch engine; this engine has a dynamic batch (profile 1-{hi})".replace("{hi}", str(hi)))
        return requested
    if requested == 0:
        raise ValueError("max_batch_size 0 means no batching, but the model has a dynamic batch dimension; give a size >= 1")
    return DEFAULT_MAX_BATCH if requested is None else requested


def build_config(
    options: RepositoryOptions,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    *,
    profile: Optional[tuple[int, int, int]] = None,
    plugin_path: Optional[str] = None,
    parameters: Optional[dict[str, str]] = None,
):
    """A validated ``ModelConfig`` protobuf for ``options`` and the model's tensors."""
    pb2 = _model_config_pb2()
    validate_name(options.name)
    validate_version(options.version)
    if options.backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {options.backend!r}")
    if isinstance(options.instances, bool) or not isinstance(options.instances, int) or options.instances < 1:
        raise ValueError(f"instances must be an int >= 1, got {options.instances!r}")
    names = [t.name for t in (*inputs, *outputs)]
    if len(set(names)) != len(names):
        raise ValueError(f"tensor names must be unique across inputs and outputs, got {names}")
    max_batch = _check_max_batch(options, inputs, profile)
    dynamic = options.dynamic_batching
    if dynamic is None:
        dynamic = max_batch > 0
    elif dynamic and max_batch == 0:
        raise ValueError("dynamic batching needs max_batch_size >= 1 (the model has a static batch)")
    preferred = [int(p) for p in options.preferred_batch_sizes]
    if preferred and not dynamic:
        raise ValueError("preferred batch sizes need dynamic batching")
    for p in preferred:
        if p < 1 or p > max_batch:
            raise ValueError(f"preferred batch size {p} is outside 1..max_batch_size ({max_batch})")
    if isinstance(options.queue_delay_us, bool) or not isinstance(options.queue_delay_us, int) or options.queue_delay_us < 0:
        raise ValueError(f"queue delay must be an int >= 0 microseconds, got {options.queue_delay_us!r}")
    if options.queue_delay_us and not dynamic:
        raise ValueError("a queue delay needs dynamic batching")
    if options.plugin and options.backend == "python":
        raise ValueError("the python backend runs the portable ONNX with ONNX Runtime and takes no plugin library")
    gpu = options.gpu if options.gpu is not None else options.backend != "python"
    if options.backend == "tensorrt" and not gpu:
        raise ValueError("TensorRT engines run on the GPU only; drop the CPU instance kind")

    config = pb2.ModelConfig()
    config.name = options.name
    if options.backend == "tensorrt":
        config.platform = "tensorrt_plan"
    elif options.backend == "onnxruntime":
        config.platform = "onnxruntime_onnx"
    else:
        config.backend = "python"
    config.max_batch_size = max_batch
    config.version_policy.specific.versions.append(options.version)
    for specs, target in ((inputs, config.input), (outputs, config.output)):
        for spec in specs:
            tensor = target.add()
            tensor.name = spec.name
            tensor.data_type = pb2.DataType.Value(spec.triton_dtype)
            tensor.dims.extend(spec.shape[1:] if max_batch > 0 else spec.shape)
    if dynamic:
        config.dynamic_batching.preferred_batch_size.extend(preferred)
        config.dynamic_batching.max_queue_delay_microseconds = options.queue_delay_us
    group = config.instance_group.add()
    group.count = options.instances
    group.kind = pb2.ModelInstanceGroup.Kind.Value("KIND_GPU" if gpu else "KIND_CPU")
    if options.backend == "onnxruntime" and plugin_path:
        accel = config.optimization.execution_accelerators.gpu_execution_accelerator.add()
        accel.name = "tensorrt"
        if options.fp16_accelerator:
            accel.parameters["precision_mode"] = "FP16"
        accel.parameters["trt_extra_plugin_lib_paths"] = plugin_path
    if options.backend == "tensorrt":
        config.default_model_filename = "model.plan"
    elif options.backend == "onnxruntime":
        config.default_model_filename = "model.onnx"
    for key, value in (parameters or {}).items():
        config.parameters[key].string_value = value
    check_config(config, inputs=inputs, outputs=outputs, profile=profile)
    return config


def check_config(config, *, inputs: Optional[list[TensorSpec]] = None, outputs: Optional[list[TensorSpec]] = None,
                 profile: Optional[tuple[int, int, int]] = None):
    """Render ``config``, parse the text back with Triton's protobuf and check what Triton checks
    (and what the model needs): returns the parsed message; ValueError names the first problem."""
    text = render_config(config)
    parsed = parse_config(text)
    if parsed != config:
        raise ValueError("config.pbtxt does not round-trip through Triton's ModelConfig protobuf")
    validate_name(parsed.name)
    if bool(parsed.platform) == bool(parsed.backend):
        raise ValueError("a model config needs exactly one of platform and backend")
    if parsed.platform and parsed.platform not in ("tensorrt_plan", "onnxruntime_onnx"):
        raise ValueError(f"unexpected platform {parsed.platform!r}")
    if parsed.max_batch_size < 0:
        raise ValueError("max_batch_size must be >= 0")
    if profile is not None and parsed.max_batch_size > profile[2]:
        raise ValueError(f"max_batch_size {parsed.max_batch_size} exceeds the engine's profile max batch {profile[2]}")
    if not parsed.input or not parsed.output:
        raise ValueError("a model config needs inputs and outputs")
    for tensor in (*parsed.input, *parsed.output):
        if not tensor.name:
            raise ValueError("every input and output needs a name")
        if not tensor.dims or any(d == 0 or d < -1 for d in tensor.dims):
            raise ValueError(f"tensor {tensor.name!r}: dims must be positive or -1, got {list(tensor.dims)}")
    for specs, declared in ((inputs, parsed.input), (outputs, parsed.output)):
        if specs is not None and [t.name for t in specs] != [t.name for t in declared]:
            raise ValueError(f"config tensors {[t.name for t in declared]} do not match the model's {[t.name for t in specs]}")
    versions = list(parsed.version_policy.specific.versions)
    if any(v < 1 for v in versions):
        raise ValueError("model versions must be >= 1")
    if parsed.HasField("dynamic_batching") and parsed.max_batch_size == 0:
        raise ValueError("dynamic batching needs max_batch_size >= 1")
    for p in parsed.dynamic_batching.preferred_batch_size:
        if not 1 <= p <= parsed.max_batch_size:
            raise ValueError(f"preferred batch size {p} is outside 1..max_batch_size ({parsed.max_batch_size})")
    return parsed


# ----------------------------------------------------------------------------------------------
# The python-backend model.py


PYTHON_MODEL = '''\
"""Triton Python backend: runs model.onnx (fna-deploy portable export) with ONNX Runtime.

Written by fna-deploy; the fna ops carry ONNX function bodies, so stock ONNX Runtime runs them.
Requests of one batch are concatenated, run once and split back.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


# The python backend stubs of Triton 2.5x (nvidia-pytriton 0.7) were built against numpy 1.x: with
# numpy 2 pb_utils.Tensor(name, array) sends an empty buffer and as_numpy() misreads inputs, so tensors go through DLPack there
# (and with numpy 1.x DLPack crashes the stub, so the plain constructor stays for it).
if int(np.__version__.split(".")[0]) >= 2:
    def _tensor(name, array):
        return pb_utils.Tensor.from_dlpack(name, array)

    def _array(tensor):
        return np.from_dlpack(tensor)
else:
    def _tensor(name, array):
        return pb_utils.Tensor(name, array)

    def _array(tensor):
        return tensor.as_numpy()


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        here = os.path.join(args["model_repository"], args["model_version"])
        self.inputs = [(t["name"], pb_utils.triton_string_to_numpy(t["data_type"])) for t in config["input"]]
        self.outputs = [t["name"] for t in config["output"]]
        self.batched = config.get("max_batch_size", 0) > 0
        options = ort.SessionOptions()
        options.log_severity_level = 3
        threads = config.get("parameters", {}).get("intra_op_threads", {}).get("string_value")
        if threads:
            options.intra_op_num_threads = int(threads)
        providers = ["CPUExecutionProvider"]
        if args.get("model_instance_kind") == "GPU" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": int(args.get("model_instance_device_id", 0))}))
        self.session = ort.InferenceSession(os.path.join(here, "model.onnx"), options, providers=providers)

    def execute(self, requests):
        feeds = {name: [] for name, _ in self.inputs}
        sizes = []
        for request in requests:
            for name, dtype in self.inputs:
                array = _array(pb_utils.get_input_tensor_by_name(request, name)).astype(dtype, copy=False)
                feeds[name].append(array)
            sizes.append(feeds[self.inputs[0][0]][-1].shape[0] if self.batched else 1)
        try:
            if self.batched:
                joined = {name: np.concatenate(arrays, axis=0) for name, arrays in feeds.items()}
                results = self.session.run(self.outputs, joined)
                bounds = np.cumsum([0] + sizes)
                per_request = [[r[bounds[i]:bounds[i + 1]] for r in results] for i in range(len(requests))]
            else:
                per_request = [self.session.run(self.outputs, {n: a[i] for n, a in feeds.items()}) for i in range(len(requests))]
        except Exception as exc:  # one failed run answers every request of the batch with the error
            error = pb_utils.TritonError(f"ONNX Runtime failed: {exc}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]
        return [
            pb_utils.InferenceResponse([_tensor(name, np.ascontiguousarray(value)) for name, value in zip(self.outputs, values)])
            for values in per_request
        ]

    def finalize(self):
        self.session = None
'''


# ----------------------------------------------------------------------------------------------
# Repository writing


@dataclass
class RepositoryReport:
    repository: str
    name: str
    backend: str
    version: int
    model_dir: str
    config_path: str
    files: list[str]
    max_batch_size: int
    inputs: list[dict]
    outputs: list[dict]
    plugin: Optional[str] = None
    server_command: str = ""
    perf_analyzer_command: str = ""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _artifact_tensors(artifact: Path, backend: str) -> tuple[list[TensorSpec], list[TensorSpec], Optional[tuple[int, int, int]], dict[str, str], list[str], Optional[EngineIO]]:
    if backend == "tensorrt":
        if artifact.suffix not in (".plan", ".engine"):
            raise ValueError(f"the tensorrt backend serves an engine (.plan from fna-deploy build), got {artifact.name!r}")
        engine = load_sidecar(artifact)
        profile = (engine.min_batch, engine.opt_batch, engine.max_batch) if engine.dynamic_batch else None
        params = {"fna_fp16": str(engine.fp16).lower()}
        if engine.fna_config is not None:
            params["fna_config"] = json.dumps(engine.fna_config, sort_keys=True)
        return engine.inputs, engine.outputs, profile, params, [], engine
    if artifact.suffix != ".onnx":
        raise ValueError(f"the {backend} backend serves a portable .onnx export, got {artifact.name!r}")
    info = onnx_info(artifact)
    target = info.metadata.get("fna_target")
    if target == "trt":
        raise ValueError(
            f"{artifact.name!r} is a trt-target export (fna nodes without ONNX bodies); "
            "serve the portable export with onnxruntime/python, or build an engine for the tensorrt backend"
        )
    # the export's metadata as config parameters, all prefixed fna_ so no backend mistakes them for its own
    params = {k if k.startswith("fna_") else f"fna_{k}": info.metadata[k]
              for k in ("fna_config", "fna_target", "model_spec", "input_shape", "fp16") if info.metadata.get(k)}
    return info.inputs, info.outputs, None, params, info.external_data, None


def server_command(repository: "str | os.PathLike[str]", plugins: Sequence[str] = ()) -> str:
    """The tritonserver command for ``repository`` (loopback only), with TensorRT plugins."""
    parts = [
        "tritonserver",
        f"--model-repository={Path(repository).resolve()}",
        f"--http-address={LOOPBACK}",
        f"--grpc-address={LOOPBACK}",
        f"--metrics-address={LOOPBACK}",
    ]
    if plugins:
        parts.append(f"--backend-config=tensorrt,plugins={';'.join(plugins)}")
    return " ".join(_quote(p) for p in parts)


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


def perf_analyzer_command(name: str, *, url: str = f"{LOOPBACK}:8000", max_concurrency: int = 16, batch: int = 1,
                          input_shape: Optional[Sequence[int]] = None, input_name: str = "images") -> str:
    """perf_analyzer concurrency sweep (1 to ``max_concurrency`` in strides of 2), p95 latency, CSV report."""
    parts = [
        "perf_analyzer", "-m", name, "-u", url, "-i", "http", "-b", str(batch),
        "--concurrency-range", f"1:{max_concurrency}:2", "--stability-percentage", "10",
        "--measurement-interval", "5000", "--percentile", "95", "-f", f"{name}_perf.csv",
    ]
    if input_shape is not None and any(d == -1 for d in input_shape):
        raise ValueError("perf_analyzer needs a concrete input shape; give one without -1")
    if input_shape is not None:
        parts += ["--shape", f"{input_name}:{','.join(map(str, input_shape))}"]
    return " ".join(_quote(p) for p in parts)


def write_repository(
    artifact: "str | os.PathLike[str]",
    repository: "str | os.PathLike[str]",
    options: RepositoryOptions,
    *,
    force: bool = False,
) -> RepositoryReport:
    """Write ``repository/NAME`` for ``artifact`` (a .plan for tensorrt, a portable .onnx otherwise).

    The model folder is staged in a temporary folder inside ``repository`` and renamed into
    place: a failure leaves the repository as it was. An existing ``NAME`` folder is replaced
    only with ``force``; other models in the repository are never touched.

    Layout::

        REPO/NAME/config.pbtxt
        REPO/NAME/VERSION/model.plan             tensorrt
        REPO/NAME/VERSION/model.onnx[.data]      onnxruntime, python
        REPO/NAME/VERSION/model.py               python
        REPO/NAME/plugins/LIB.so                 with a plugin library
    """
    artifact = Path(artifact)
    repository = Path(repository)
    if not artifact.is_file():
        raise FileNotFoundError(2, "artifact not found", str(artifact))
    validate_name(options.name)
    validate_version(options.version)
    if options.backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {options.backend!r}")
    if repository.exists() and not repository.is_dir():
        raise NotADirectoryError(20, "repository path is not a directory", str(repository))
    if not repository.parent.exists() and not repository.exists():
        raise FileNotFoundError(2, "the repository's parent folder does not exist", str(repository.parent))
    target = repository / options.name
    if target.exists() and not force:
        raise FileExistsError(17, "model already in the repository (use --force to replace it)", str(target))

    inputs, outputs, profile, params, external, sidecar = _artifact_tensors(artifact, options.backend)
    plugin = options.plugin or (sidecar.plugin if sidecar is not None and sidecar.plugin else None)
    notes: list[str] = []
    if plugin is not None:
        if options.backend == "python":
            raise ValueError("the python backend runs the portable ONNX with ONNX Runtime and takes no plugin library")
        if not Path(plugin).is_file():
            if options.plugin is None:  # from the sidecar: the engine may have moved machines
                raise FileNotFoundError(2, "the engine's plugin library (named in its sidecar) is missing; pass --plugin", str(plugin))
            raise FileNotFoundError(2, "plugin library not found", str(plugin))
    if options.backend == "tensorrt":
        from .trt import engine_runs_here

        reason = engine_runs_here(artifact)
        if reason:
            notes.append(f"this engine cannot run on this machine: {reason}")
        if json.loads(sidecar_path(artifact).read_text()).get("runtime") == "tensorrt-rtx":
            notes.append("built with TensorRT-RTX: Triton's tensorrt backend deserializes plans with TensorRT, so serve an "
                         "engine built with --runtime tensorrt (unverified here: no GPU server)")
    if options.backend == "tensorrt" and sidecar is not None and sidecar.plugin is None and options.plugin is None:
        notes.append("the engine sidecar names no plugin library: serving works only if the engine holds no fna plugin layers")
    final_plugin = str((target / "plugins" / Path(plugin).name).resolve()) if plugin else None
    config = build_config(options, inputs, outputs, profile=profile, plugin_path=final_plugin, parameters=params)
    text = (
        f"# Triton model config written by fna-deploy for {artifact.name} ({options.backend} backend);\n"
        "# checked by parsing it back with Triton's ModelConfig protobuf.\n" + render_config(config)
    )
    check_config(parse_config(text), inputs=inputs, outputs=outputs, profile=profile)

    created_repository = not repository.exists()
    repository.mkdir(parents=False, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{options.name}.staging.", dir=repository))
    written = False
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes 0700; the server may run as another user
        version_dir = staging / str(options.version)
        version_dir.mkdir()
        if options.backend == "tensorrt":
            shutil.copy2(artifact, version_dir / "model.plan")
        else:
            shutil.copy2(artifact, version_dir / "model.onnx")
            for name in external:
                source = artifact.parent / name
                if not source.is_file():
                    raise FileNotFoundError(2, "external weights of the ONNX model are missing", str(source))
                if Path(name).name != name:
                    raise ValueError(f"external data {name!r} lives in a subfolder; re-export with the weights beside the model")
                shutil.copy2(source, version_dir / name)
            if options.backend == "python":
                (version_dir / "model.py").write_text(PYTHON_MODEL)
        if plugin:
            (staging / "plugins").mkdir()
            shutil.copy2(plugin, staging / "plugins" / Path(plugin).name)
        (staging / "config.pbtxt").write_text(text)
        # swap into place: the old folder (force) is moved aside first and removed after the rename
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{options.name}.old.", dir=repository))
            os.replace(target, old / options.name)
        try:
            os.replace(staging, target)
        except BaseException:
            if old is not None:
                os.replace(old / options.name, target)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        written = True
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
        if not written and created_repository:
            shutil.rmtree(repository, ignore_errors=True)  # a repository this call created stays unborn

    files = sorted(str(p) for p in target.rglob("*") if p.is_file())
    plugins = [final_plugin] if (final_plugin and options.backend == "tensorrt") else []
    input_shape = [max(1, d) for d in inputs[0].shape[1:]] if any(d == -1 for d in inputs[0].shape[1:]) else None
    report = RepositoryReport(
        repository=str(repository),
        name=options.name,
        backend=options.backend,
        version=options.version,
        model_dir=str(target),
        config_path=str(target / "config.pbtxt"),
        files=files,
        max_batch_size=config.max_batch_size,
        inputs=[asdict(t) for t in inputs],
        outputs=[asdict(t) for t in outputs],
        plugin=final_plugin,
        server_command=server_command(repository, plugins),
        perf_analyzer_command=perf_analyzer_command(options.name, max_concurrency=16, input_name=inputs[0].name,
                                                    input_shape=input_shape),
        notes=notes,
    )
    if final_plugin and options.backend == "onnxruntime":
        report.notes.append("trt_extra_plugin_lib_paths is an absolute path: rewrite the repository if you move it")
    if plugins:
        report.notes.append(f"alternative to --backend-config: LD_PRELOAD={_quote(final_plugin)} tritonserver ...")
    return report


def repository_plugins(repository: "str | os.PathLike[str]") -> list[str]:
    """Plugin libraries of tensorrt_plan models in ``repository`` (for --backend-config=tensorrt,plugins=)."""
    found = []
    for config_path in sorted(Path(repository).glob("*/config.pbtxt")):
        try:
            config = parse_config(config_path.read_text())
        except (ValueError, OSError):
            continue
        if config.platform == "tensorrt_plan" or config.backend == "tensorrt":
            found += [str(p.resolve()) for p in sorted((config_path.parent / "plugins").glob("*.so*")) if p.is_file()]
    return found


def check_repository(repository: "str | os.PathLike[str]") -> list[str]:
    """The model names of ``repository`` after checking each config parses; ValueError otherwise."""
    repository = Path(repository)
    if not repository.is_dir():
        raise FileNotFoundError(2, "model repository not found", str(repository))
    names = []
    for model_dir in sorted(p for p in repository.iterdir() if p.is_dir() and not p.name.startswith(".")):
        config_path = model_dir / "config.pbtxt"
        if not config_path.is_file():
            raise ValueError(f"{str(model_dir)!r} has no config.pbtxt; is {str(repository)!r} a model repository?")
        config = parse_config(config_path.read_text())
        if config.name and config.name != model_dir.name:
            raise ValueError(f"model folder {model_dir.name!r} holds a config named {config.name!r}; Triton needs them equal")
        names.append(model_dir.name)
    if not names:
        raise ValueError(f"{str(repository)!r} holds no models (write one with fna-deploy triton)")
    return names


# ----------------------------------------------------------------------------------------------
# The server


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return True
    return False


@dataclass
class ServerBinary:
    """A tritonserver executable and what it needs to run."""

    path: Path
    bundled: bool  # from the nvidia-pytriton wheel
    env: dict[str, str]
    backend_source: Optional[Path] = None  # bundled python backend (needs a per-server backends dir)
    stub: Optional[Path] = None  # python backend stub for this interpreter
    cache_dir: Optional[Path] = None

    def describe(self) -> str:
        return f"{self.path} ({'bundled in nvidia-pytriton' if self.bundled else 'from PATH'})"


def locate_tritonserver() -> ServerBinary:
    """``tritonserver`` from PATH, else the one bundled in nvidia-pytriton; FileNotFoundError says how to get one."""
    on_path = shutil.which("tritonserver")
    if on_path:
        return ServerBinary(Path(on_path), False, {})
    try:
        import importlib.util

        spec = importlib.util.find_spec("pytriton")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            2, f"no tritonserver on PATH and nvidia-pytriton is not installed ({TRITONCLIENT_HINT}, or use the Triton container)", "tritonserver"
        )
    root = Path(list(spec.submodule_search_locations)[0])
    dist = root / "tritonserver"
    binary = dist / "bin" / "tritonserver"
    if not binary.is_file():
        raise FileNotFoundError(2, "nvidia-pytriton is installed but holds no tritonserver binary", str(binary))
    libs = root.parent / "nvidia_pytriton.libs"
    if not libs.is_dir():
        libs = dist / "external_libs"  # editable installs
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    stub = dist / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise FileNotFoundError(2, f"nvidia-pytriton has no Python backend stub for Python {version}", str(stub))
    pylib = sysconfig.get_config_var("LIBDIR") or str(Path(sys.executable).resolve().parent.parent / "lib")
    ld = ":".join(p for p in (pylib, str(libs), os.environ.get("LD_LIBRARY_PATH", "")) if p)
    env = {"LD_LIBRARY_PATH": ld, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    return ServerBinary(binary, True, env, dist / "backends", stub, dist / "caches")


def probe_tritonserver(binary: Optional[ServerBinary] = None) -> Optional[str]:
    """None when the tritonserver binary can run here (``--help`` answers), else why not."""
    try:
        binary = binary or locate_tritonserver()
    except FileNotFoundError as exc:
        return f"{exc.strerror}: {exc.filename}"
    try:
        done = subprocess.run([str(binary.path), "--help"], capture_output=True, text=True, timeout=60,
                              env={**os.environ, **binary.env})
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{binary.path} cannot run: {exc}"
    text = (done.stdout or "") + (done.stderr or "")
    if "--model-repository" in text:
        return None
    last = text.strip().splitlines()[-1] if text.strip() else f"exit code {done.returncode}, no output"
    return f"{binary.path} cannot run: {last}"


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: SIGTERM the server when the process that started it dies (no orphaned servers)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class ServerError(RuntimeError):
    """tritonserver did not start, or stopped; the message ends with the log's last lines."""


class TritonServer:
    """A tritonserver process on 127.0.0.1 serving ``repository``; a context manager.

    Ports default to free ones. ``start`` waits until ``/v2/health/ready`` answers 200 (all
    models loaded) and raises ServerError with the log's tail if the process exits first.
    ``stop`` sends SIGTERM and, after ``stop_timeout`` seconds, SIGKILL to the process group.
    """

    def __init__(
        self,
        repository: "str | os.PathLike[str]",
        *,
        http_port: Optional[int] = None,
        grpc_port: Optional[int] = None,
        metrics_port: Optional[int] = None,
        binary: Optional[ServerBinary] = None,
        plugins: Optional[Sequence[str]] = None,
        log_path: "str | os.PathLike[str] | None" = None,
        verbose: bool = False,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.repository = Path(repository).resolve()
        ports = [p for p in (http_port, grpc_port, metrics_port) if p is not None]
        if len(set(ports)) != len(ports):
            raise ValueError(f"the HTTP, gRPC and metrics ports must differ, got {ports}")
        for port in ports:
            if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
                raise ValueError(f"port must be 1-65535, got {port!r}")
        self.http_port = http_port or free_port()
        self.grpc_port = grpc_port or self._other_free_port({self.http_port})
        self.metrics_port = metrics_port or self._other_free_port({self.http_port, self.grpc_port})
        self.binary = binary or locate_tritonserver()
        self.plugins = list(repository_plugins(self.repository) if plugins is None else plugins)
        self.verbose = verbose
        self.extra_args = list(extra_args)
        self._workdir: Optional[Path] = None
        self._own_log = log_path is None
        self.log_path = Path(log_path) if log_path else None
        self.process: Optional[subprocess.Popen] = None
        self._log_file = None

    @staticmethod
    def _other_free_port(taken: set[int]) -> int:
        for _ in range(50):
            port = free_port()
            if port not in taken:
                return port
        raise ServerError("could not find a free port on 127.0.0.1")

    @property
    def http_url(self) -> str:
        return f"{LOOPBACK}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{LOOPBACK}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{LOOPBACK}:{self.metrics_port}/metrics"

    def command(self) -> list[str]:
        args = [
            str(self.binary.path),
            f"--model-repository={self.repository}",
            f"--http-address={LOOPBACK}",
            f"--http-port={self.http_port}",
            f"--grpc-address={LOOPBACK}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={LOOPBACK}",
            f"--metrics-port={self.metrics_port}",
            "--exit-timeout-secs=10",
            "--strict-readiness=true",
            # python backend shared memory regions must not collide with another server's
            f"--backend-config=python,shm-region-prefix-name=fna_{os.getpid()}_{self.http_port}_",
        ]
        if self.binary.bundled and self._workdir is not None:
            args += [f"--backend-directory={self._workdir / 'backends'}"]
            if self.binary.cache_dir is not None:
                args.append(f"--cache-directory={self.binary.cache_dir}")
        if self.plugins:
            args.append(f"--backend-config=tensorrt,plugins={';'.join(self.plugins)}")
        if self.verbose:
            args.append("--log-verbose=1")
        return args + self.extra_args

    def _prepare_backends(self) -> None:
        """The bundled server needs a backends folder whose python backend holds this Python's stub."""
        self._workdir = Path(tempfile.mkdtemp(prefix="fna-triton-"))
        if not self.binary.bundled:
            return
        python_dir = self._workdir / "backends" / "python"
        python_dir.mkdir(parents=True)
        assert self.binary.backend_source is not None and self.binary.stub is not None
        for item in (self.binary.backend_source / "python").iterdir():
            if item.is_file():
                os.symlink(item, python_dir / item.name)
        os.symlink(self.binary.stub, python_dir / "triton_python_backend_stub")

    def start(self, timeout: float = 120.0) -> "TritonServer":
        if self.process is not None:
            raise ServerError("this server was already started")
        for port in (self.http_port, self.grpc_port, self.metrics_port):
            if port_in_use(port):
                raise ValueError(f"port {port} on {LOOPBACK} is already in use; choose another")
        self._prepare_backends()
        assert self._workdir is not None
        if self.log_path is None:
            self.log_path = self._workdir / "tritonserver.log"
        self._log_file = open(self.log_path, "ab")
        env = {**os.environ, **self.binary.env}
        try:
            self.process = subprocess.Popen(
                self.command(), stdout=self._log_file, stderr=subprocess.STDOUT, env=env,
                cwd=self._workdir, start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        except OSError as exc:
            self._cleanup_files()
            raise ServerError(f"could not run {self.binary.path}: {exc.strerror}") from None
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def log_tail(self, lines: int = 15) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None:
                raise ServerError("the server is not running")
            code = self.process.poll()
            if code is not None:
                raise ServerError(f"tritonserver exited with code {code} before it was ready; log tail:\n{self.log_tail()}")
            if self.is_ready():
                return
            time.sleep(0.25)
        raise ServerError(f"tritonserver was not ready after {timeout:.0f} s; log tail:\n{self.log_tail()}")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 20.0) -> Optional[int]:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL the server's process group; returns its exit code."""
        code = None
        if self.process is not None:
            if self.process.poll() is None:
                try:
                    self.process.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    self.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    try:
                        os.killpg(self.process.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    self.process.wait(10)
            code = self.process.returncode
            # python backend stubs live in the server's group: none may outlive it
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self._cleanup_files()
        return code

    def _cleanup_files(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._workdir is not None:
            keep_log = self.log_path is not None and self._workdir in self.log_path.parents
            if keep_log and self.process is not None and self.process.returncode not in (0, None):
                return  # keep the log of a failed server for inspection
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __enter__(self) -> "TritonServer":
        return self.start() if self.process is None else self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# ----------------------------------------------------------------------------------------------
# The client


def _tritonclient_http():
    try:
        import tritonclient.http as httpclient
    except ImportError:
        raise ImportError(f"fna-deploy infer needs tritonclient: {TRITONCLIENT_HINT}") from None
    return httpclient


def normalise_url(url: str) -> str:
    """tritonclient wants host:port; accept http://host:port[/] too."""
    url = url.strip()
    for prefix in ("http://", "https://"):
        if url.startswith(prefix):
            if prefix == "https://":
                raise ValueError("https URLs are not supported here; the local server speaks plain HTTP")
            url = url[len(prefix):]
    url = url.rstrip("/")
    if not re.match(r"^[A-Za-z0-9.\-\[\]:]+:\d+$", url):
        raise ValueError(f"server URL {url!r} should be host:port (e.g. 127.0.0.1:8000)")
    return url


@dataclass
class InferResult:
    outputs: dict[str, Any]
    seconds: float
    model_config: dict[str, Any]


class TritonHttpClient:
    """A thin tritonclient HTTP wrapper: model metadata/config and numpy inference."""

    def __init__(self, url: str, *, timeout: float = 60.0) -> None:
        httpclient = _tritonclient_http()
        self.url = normalise_url(url)
        self._http = httpclient
        self.client = httpclient.InferenceServerClient(self.url, connection_timeout=timeout, network_timeout=timeout)

    def _call(self, what: str, func, *args, **kwargs):
        from tritonclient.utils import InferenceServerException

        try:
            return func(*args, **kwargs)
        except InferenceServerException as exc:
            raise ValueError(f"{what}: {exc.message() or exc}") from None
        except (ConnectionError, OSError) as exc:
            raise ValueError(f"cannot reach a Triton server at {self.url} ({type(exc).__name__})") from None
        except Exception as exc:  # geventhttpclient raises its own connection errors
            if "connect" in type(exc).__name__.lower() or "connect" in str(exc).lower():
                raise ValueError(f"cannot reach a Triton server at {self.url} ({type(exc).__name__})") from None
            raise

    def server_ready(self) -> bool:
        return bool(self._call("server readiness", self.client.is_server_ready))

    def model_config(self, name: str) -> dict[str, Any]:
        if not self._call("model readiness", self.client.is_model_ready, name):
            raise ValueError(f"model {name!r} is not ready on {self.url} (is the name right? see the server's log)")
        return self._call(f"model {name!r}", self.client.get_model_config, name)

    def infer(self, name: str, inputs: dict[str, Any], outputs: Optional[Sequence[str]] = None) -> InferResult:
        import numpy as np

        config = self.model_config(name)
        requested_inputs = []
        for spec in config.get("input", []):
            if spec["name"] not in inputs:
                raise ValueError(f"model {name!r} needs input {spec['name']!r}; got {', '.join(inputs) or 'none'}")
            dtype = spec["data_type"].replace("TYPE_", "")
            array = np.ascontiguousarray(inputs[spec["name"]])
            from tritonclient.utils import triton_to_np_dtype

            array = array.astype(triton_to_np_dtype(dtype), copy=False)
            tensor = self._http.InferInput(spec["name"], list(array.shape), dtype)
            tensor.set_data_from_numpy(array, binary_data=True)
            requested_inputs.append(tensor)
        names = list(outputs) if outputs else [o["name"] for o in config.get("output", [])]
        requested = [self._http.InferRequestedOutput(n, binary_data=True) for n in names]
        started = time.perf_counter()
        result = self._call(f"inference on {name!r}", self.client.infer, name, requested_inputs, outputs=requested)
        seconds = time.perf_counter() - started
        return InferResult({n: result.as_numpy(n) for n in names}, seconds, config)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> "TritonHttpClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


__all__ = [
    "BACKENDS",
    "EngineSidecar",
    "EngineIO",
    "engine_io",
    "TensorSpec",
    "RepositoryOptions",
    "RepositoryReport",
    "build_config",
    "check_config",
    "parse_config",
    "render_config",
    "write_repository",
    "check_repository",
    "repository_plugins",
    "sidecar_path",
    "load_sidecar",
    "onnx_info",
    "locate_tritonserver",
    "probe_tritonserver",
    "TritonServer",
    "ServerError",
    "TritonHttpClient",
    "free_port",
    "perf_analyzer_command",
    "server_command",
]
