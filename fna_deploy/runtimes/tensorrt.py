"""TensorRT and TensorRT-RTX engines as runtimes: availability, engines for bench, one runner.

``trt`` runs a TensorRT plan through polygraphy's TrtRunner (the fna plugins loaded first);
``tensorrt-rtx`` runs a TensorRT-RTX plan with its own runtime (deserialize, one execution
context, I/O in torch CUDA tensors, execute_async_v3 on the current stream). Both refuse before
any work with one sentence where the engine cannot run here (fna_deploy.trt.runtime.engine_runs_here).
Inference is timed by the caller around :meth:`EngineRunner.infer`, host copies included, as
the ONNX Runtime and OpenVINO rows are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..trt.runtime import INSTALL, LABELS, RTX_RUNS_ON, TENSORRT, TENSORRT_RTX, TensorRTUnavailable, format_cc
from .base import Runner

# bench/verify backend name -> runtime
BACKEND_RUNTIMES = {"trt": TENSORRT, "tensorrt-rtx": TENSORRT_RTX}


def unavailable(runtime: str) -> Optional[str]:
    """None when engines of ``runtime`` (tensorrt|tensorrt-rtx) can be built and run here, else one sentence why not."""
    from ..trt.runtime import local_compute_capability, runtime_version

    if runtime == TENSORRT:
        from ..trt import require_tensorrt

        try:
            require_tensorrt()
        except TensorRTUnavailable as exc:
            return str(exc)
        return None
    if runtime_version(TENSORRT_RTX) is None:
        return f"TensorRT-RTX is not installed; {INSTALL[TENSORRT_RTX]}"
    runs_on = ", ".join(format_cc(c) for c in RTX_RUNS_ON)
    cc = local_compute_capability()
    if cc is None:
        return (f"TensorRT-RTX engines run on Ampere, Ada or Blackwell GPUs (compute capability {runs_on}) and no CUDA GPU "
                "is visible here, so there is nothing to time them on")
    if cc not in RTX_RUNS_ON:
        return f"TensorRT-RTX engines run on compute capability {runs_on}; this GPU is {format_cc(cc)}"
    return None


def build_for_bench(onnx_path: "str | Path", plan_path: "str | Path", runtime: str, *, batch: int, fp16: bool,
                    plugin: Optional[str] = None) -> Path:
    """Build ``onnx_path`` into ``plan_path`` (+ sidecar) for ``runtime`` at a fixed ``batch``."""
    from ..trt import build_engine

    build_engine(onnx_path, plan_path, fp16=fp16, plugin=plugin, batch=(batch, batch, batch), runtime=runtime)
    return Path(plan_path)


def engine_landmarks(plan_path: "str | Path") -> Optional[int]:
    """The landmark count recorded in an engine's sidecar (None for a dense engine or no sidecar)."""
    from ..trt import EngineSidecar

    sidecar = EngineSidecar.path_for(plan_path)
    if not sidecar.is_file():
        return None
    config = EngineSidecar.from_json(sidecar.read_text()).fna_config
    return None if not config else int(config["num_landmarks"])


def engine_runtime(plan_path: "str | Path") -> str:
    from ..trt import EngineSidecar

    sidecar = EngineSidecar.path_for(plan_path)
    return EngineSidecar.from_json(sidecar.read_text()).runtime if sidecar.is_file() else TENSORRT


class EngineRunner(Runner):
    """A built plan on the runtime its sidecar names (TensorRT without one)."""

    def __init__(self, plan_path: "str | Path", plugin: Optional[str] = None, name: str = "trt") -> None:
        super().__init__()
        self.plan_path, self.plugin, self.name = Path(plan_path), plugin, name
        self.runtime = engine_runtime(plan_path)

    def _load(self) -> None:
        from ..trt.runtime import engine_runs_here, runtime_version

        if Path(str(self.plan_path) + ".json").is_file():
            reason = engine_runs_here(self.plan_path)
            if reason:
                raise TensorRTUnavailable(reason)
        self.details = {"runtime": LABELS[self.runtime], "version": runtime_version(self.runtime)}
        self.execute = _polygraphy_trt(self.plan_path, self.plugin, self.name) if self.runtime == TENSORRT \
            else _rtx_execution(self.plan_path, self.plugin)

    def _infer(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.execute(feeds)

    def _sidecar(self):
        from ..trt import EngineSidecar

        path = EngineSidecar.path_for(self.plan_path)
        return EngineSidecar.from_json(path.read_text()) if path.is_file() else None

    def input_metadata(self) -> list[tuple[str, Any, list[int]]]:
        sidecar = self._sidecar()
        if sidecar is None:  # an engine from elsewhere: fna-deploy's input name and layout
            return [("images", np.float32, [-1, -1, -1, -1])]
        return [(t.name, np.dtype(t.dtype).type, list(t.shape)) for t in sidecar.inputs]

    def output_names(self) -> list[str]:
        sidecar = self._sidecar()
        return ["output"] if sidecar is None else [t.name for t in sidecar.outputs]

    def close(self) -> None:
        closer = getattr(getattr(self, "execute", None), "close", None)
        if closer:
            closer()
        self.__dict__.pop("execute", None)
        super().close()


def _polygraphy_trt(plan_path: Path, plugin: Optional[str], name: str):
    """TensorRT through polygraphy's TrtRunner: a function feeds -> outputs (host arrays)."""
    from ..trt import load_engine_runner

    runner = load_engine_runner(plan_path, plugin, name=name)
    runner.activate()

    def execute(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [np.array(out) for out in runner.infer(feeds).values()]

    execute.close = runner.deactivate  # type: ignore[attr-defined]
    return execute


def _rtx_execution(plan_path: Path, plugin: Optional[str]):
    """TensorRT-RTX's own runtime on the current CUDA stream: a function feeds -> outputs."""
    import torch

    from ..trt import load_plugins
    from ..trt.runtime import import_runtime

    trt = import_runtime(TENSORRT_RTX)
    if engine_landmarks(plan_path) is not None:
        load_plugins(plugin, TENSORRT_RTX, trt)
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan_path.read_bytes())
    if engine is None:
        raise TensorRTUnavailable(f"TensorRT-RTX could not deserialize {plan_path}; rebuild it with 'fna-deploy build'")
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    outputs = [n for n in names if n not in inputs]
    dtypes = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16, trt.DataType.INT32: torch.int32,
              trt.DataType.INT64: torch.int64}
    if hasattr(trt.DataType, "BF16"):
        dtypes[trt.DataType.BF16] = torch.bfloat16

    def execute(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        keep = []
        for name in inputs:
            tensor = torch.from_numpy(np.ascontiguousarray(feeds[name])).to("cuda", dtypes[engine.get_tensor_dtype(name)])
            context.set_input_shape(name, tuple(tensor.shape))
            context.set_tensor_address(name, tensor.data_ptr())
            keep.append(tensor)
        results = []
        for name in outputs:
            out = torch.empty(tuple(context.get_tensor_shape(name)), dtype=dtypes[engine.get_tensor_dtype(name)], device="cuda")
            context.set_tensor_address(name, out.data_ptr())
            results.append(out)
        stream = torch.cuda.current_stream()
        if not context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError(f"TensorRT-RTX failed to execute {plan_path.name}")
        stream.synchronize()
        return [out.float().cpu().numpy() for out in results]

    return execute
