"""Which TensorRT runtime builds and runs an engine: NVIDIA TensorRT (``tensorrt``) or TensorRT for
RTX (``tensorrt_rtx``, pip ``tensorrt-rtx``), and for which GPUs (compute capabilities).

Both expose the same nvinfer1 Python API (Builder, OnnxParser, IPluginCreatorV3One); they differ
in where their engines run. TensorRT builds for the GPU it runs on and needs one. TensorRT-RTX
builds without a GPU, for the compute capabilities named in the builder config, and its engines
run on Ampere, Ada and Blackwell (8.0, 8.6, 8.9, 12.x) but not on Hopper (9.0: H100/H200).
Nothing here imports a runtime until asked.
"""

from __future__ import annotations

from ..errors import FnaDeployError

import importlib
import json
import os
from pathlib import Path
from typing import Any, Optional

TENSORRT = "tensorrt"
TENSORRT_RTX = "tensorrt-rtx"
RUNTIMES = (TENSORRT, TENSORRT_RTX)
MODULES = {TENSORRT: "tensorrt", TENSORRT_RTX: "tensorrt_rtx"}
LABELS = {TENSORRT: "TensorRT", TENSORRT_RTX: "TensorRT-RTX"}
INSTALL = {
    TENSORRT: "install it with 'pip install tensorrt' (NVIDIA's wheels, Linux with a CUDA GPU) or use NVIDIA's TensorRT container",
    TENSORRT_RTX: "install it with 'pip install tensorrt-rtx'",
}
# Compute capabilities TensorRT-RTX engines run on (its own refusal message on a 9.0 GPU lists
# "8.0 8.6 8.9 12.0 12.1 >12.0"); 9.0 (Hopper) is not among them.
RTX_RUNS_ON = (80, 86, 89, 120, 121)
RTX_NO_HOPPER = (
    "TensorRT-RTX does not build or run engines for compute capability 9.0 (Hopper: H100, H200); "
    "use --runtime tensorrt there, or name 80, 86, 89, 120 or 121"
)


class TensorRTUnavailable(FnaDeployError, RuntimeError):
    """A TensorRT runtime (or a GPU) is missing; the message says what and how to get it."""


def runtime_version(runtime: str) -> Optional[str]:
    """The installed version of ``runtime``, or None when it cannot be imported."""
    try:
        module = importlib.import_module(MODULES[runtime])
    except Exception:
        return None
    return str(getattr(module, "__version__", "0"))


def import_runtime(runtime: str) -> Any:
    """The runtime's Python module, or TensorRTUnavailable with one sentence."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of auto, {', '.join(RUNTIMES)}, got {runtime!r}")
    if runtime_version(runtime) is None:
        raise TensorRTUnavailable(f"{LABELS[runtime]} is not installed; {INSTALL[runtime]}, then run this again")
    return importlib.import_module(MODULES[runtime])


def local_compute_capability() -> Optional[int]:
    """The first visible CUDA GPU's compute capability as 80, 86, 90, 120..., or None without a GPU."""
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        major, minor = torch.cuda.get_device_capability(0)
    except Exception:
        return None
    return major * 10 + minor


def local_gpu_name() -> Optional[str]:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:
        return None


def resolve_runtime(name: str = "auto") -> str:
    """``auto``: TensorRT when it and a GPU are here, else TensorRT-RTX when installed (it builds
    on the CPU), else TensorRTUnavailable naming both ways out."""
    if name != "auto":
        if name not in RUNTIMES:
            raise ValueError(f"--runtime must be auto, {', '.join(RUNTIMES)}, got {name!r}")
        return name
    if runtime_version(TENSORRT) is not None and local_compute_capability() is not None:
        return TENSORRT
    if runtime_version(TENSORRT_RTX) is not None:
        return TENSORRT_RTX
    if runtime_version(TENSORRT) is not None:
        return TENSORRT  # its own error then says a GPU is missing
    raise TensorRTUnavailable(
        f"neither TensorRT nor TensorRT-RTX is installed; {INSTALL[TENSORRT_RTX]} (builds on any machine) "
        f"or {INSTALL[TENSORRT]}"
    )


def format_cc(cc: int) -> str:
    return f"{cc // 10}.{cc % 10}"


def parse_compute_capabilities(spec: Optional[str]) -> Optional[list[int]]:
    """``"80,86,89,120"`` (or ``8.0,8.6``) -> [80, 86, 89, 120]; None/empty -> None (the default)."""
    if spec is None or not spec.strip():
        return None
    out = []
    for part in spec.split(","):
        part = part.strip()
        try:
            value = round(float(part) * 10) if "." in part else int(part)
        except ValueError:
            raise ValueError(f"--compute-capabilities {spec!r}: expected numbers like 80,86,89,120") from None
        if not 10 <= value <= 999:
            raise ValueError(f"--compute-capabilities {spec!r}: {part} is not a compute capability (e.g. 86 for 8.6)")
        if value not in out:
            out.append(value)
    return out


def rtx_targets(trt: Any, requested: Optional[list[int]]) -> Optional[list[Any]]:
    """The ``trt.ComputeCapability`` members for ``requested`` (TensorRT-RTX), or None for the
    library's default set. 9.0 and unknown values are refused with one sentence."""
    if requested is None:
        local = local_compute_capability()
        if local is None:
            return None
        requested = [local]
    members = {int(name[2:]): member for name, member in trt.ComputeCapability.__members__.items() if name.startswith("SM")}
    out = []
    for cc in requested:
        if cc == 90:
            raise ValueError(RTX_NO_HOPPER)
        if cc not in members:
            known = ", ".join(str(k) for k in sorted(members))
            raise ValueError(f"TensorRT-RTX {trt.__version__} cannot build for compute capability {format_cc(cc)}; it knows {known}")
        out.append(members[cc])
    return out


def engine_runs_here(sidecar: Any) -> Optional[str]:
    """Can the engine run on this machine? ``sidecar`` is an EngineSidecar, its JSON as a dict, or
    the engine's path (its ``.plan.json`` is read). None when it can, else one sentence saying why
    not (runtime missing or another version, no GPU, a GPU the engine was not built for)."""
    if isinstance(sidecar, (str, os.PathLike)):
        path = Path(str(sidecar) + ".json")
        if not path.is_file():
            return f"the engine has no sidecar {path.name}, so what it needs is unknown; rebuild it with 'fna-deploy build'"
        try:
            sidecar = json.loads(path.read_text())
        except json.JSONDecodeError:
            return f"the engine's sidecar {path.name} is not valid JSON; rebuild it with 'fna-deploy build'"
    data = sidecar if isinstance(sidecar, dict) else vars(sidecar)
    runtime = data.get("runtime") or TENSORRT
    label = LABELS.get(runtime, runtime)
    built = str(data.get("runtime_version") or data.get("tensorrt_version"))  # the latter: sidecars before the rename
    if runtime not in RUNTIMES:
        return f"the engine names an unknown runtime {runtime!r} in its sidecar; rebuild it with 'fna-deploy build'"
    have = runtime_version(runtime)
    if have is None:
        return f"the engine was built with {label} {built}, which is not installed here; {INSTALL[runtime]}"
    if have != built:
        return f"the engine was built with {label} {built} but this machine has {label} {have}; rebuild it here with 'fna-deploy build'"
    local = local_compute_capability()
    if local is None:
        return f"the engine ({label} {built}) needs a CUDA GPU to run and none is visible here"
    targets = data.get("compute_capabilities")
    if runtime == TENSORRT_RTX:
        if local == 90:
            return f"TensorRT-RTX engines cannot run on this GPU ({local_gpu_name()}, compute capability 9.0): rebuild with --runtime tensorrt"
        runs_on = targets or list(RTX_RUNS_ON)
        if local not in runs_on and not (local > 121 and not targets):
            wanted = ", ".join(format_cc(c) for c in runs_on)
            return (f"the engine was built for compute capabilities {wanted}, not for this GPU's {format_cc(local)}; "
                    f"rebuild it with --compute-capabilities {local}")
    elif targets and local not in targets:
        return (f"the engine was built on a GPU with compute capability {format_cc(targets[0])} and this GPU has "
                f"{format_cc(local)}; TensorRT engines run only on the GPU model they were built for, so rebuild it here")
    return None
