"""config.pbtxt: rendered from and parsed back with Triton's own ``ModelConfig`` protobuf (shipped by
tritonclient), and validated before anything is written."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from .common import BACKENDS, DEFAULT_MAX_BATCH, TRITONCLIENT_HINT
from .tensors import TensorSpec


NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")  # always fullmatch: "$" would accept a trailing newline


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


def read_config(path: "str | os.PathLike[str]"):
    """Parse the config.pbtxt file at ``path``; the ValueError names the model folder and the file."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"model {path.parent.name!r}: {str(path)!r} is not text; rewrite it with fna-deploy triton") from None
    try:
        return parse_config(text)
    except ValueError as exc:
        raise ValueError(f"model {path.parent.name!r}: {str(path)!r} {str(exc).replace('config.pbtxt ', '', 1)}; "
                         "fix it or rewrite the model with fna-deploy triton --force") from None


def render_config(config) -> str:
    from google.protobuf import text_format

    return text_format.MessageToString(config)


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise ValueError(
            f"model name {name!r} is not valid: use 1-128 letters, digits, '_', '-' or '.', starting with a letter or digit"
        )
    return name


def validate_version(version: Any) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= 2**63 - 1:
        raise ValueError(f"model version must be an int from 1 to 2^63-1 (Triton's int64), got {version!r}")
    return version


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
