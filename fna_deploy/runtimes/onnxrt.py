"""ONNX Runtime as a runtime: the project's one session factory and its runner.

Providers are chosen from what is installed and the device asked for: on ``cuda`` the TensorRT
and CUDA execution providers where onnxruntime-gpu offers them (CPU last, as the fallback), on
``cpu`` the CPU provider only. A trt-target export runs with the portable function bodies
attached in memory (fna_deploy.export.check.runnable_onnx).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from .base import Runner

NAME = "onnxrt"
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
_NUMPY = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
          "tensor(int64)": np.int64, "tensor(int32)": np.int32}


def providers(device: str = "cpu", available: Optional[list[str]] = None) -> list[str]:
    """The execution providers for ``device`` (cpu|cuda) among ``available`` (default: what the
    installed onnxruntime offers), best first; the CPU provider is always last."""
    if available is None:
        import onnxruntime as ort

        available = ort.get_available_providers()
    chosen = [p for p in GPU_PROVIDERS if p in available] if device == "cuda" else []
    return chosen + ["CPUExecutionProvider"]


def session(source: "str | bytes | Path", threads: Optional[int] = None, device: str = "cpu"):
    """An onnxruntime.InferenceSession over a path or serialized model, quiet, with ``threads``
    intra-op threads and the providers of :func:`providers`."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = int(threads)
    source = source if isinstance(source, (bytes, str)) else str(source)
    return ort.InferenceSession(source, options, providers=providers(device))


class OnnxrtRunner(Runner):
    """An ONNX file (or serialized model) in ONNX Runtime."""

    name = NAME

    def __init__(self, source: "str | bytes | Path", threads: Optional[int] = None, device: str = "cpu", name: str = NAME) -> None:
        super().__init__()
        self.source, self.threads, self.device, self.name = source, threads, device, name

    @classmethod
    def unavailable(cls, device: str = "cpu") -> Optional[str]:
        try:
            import onnxruntime as ort
        except ImportError:
            return "onnxruntime is not installed"
        if device == "cuda" and not any(p in ort.get_available_providers() for p in GPU_PROVIDERS):
            return ("ONNX Runtime runs on its CPU execution provider here (no CUDA or TensorRT provider: "
                    "pip install onnxruntime-gpu), so its times are not GPU times; time it with --device cpu")
        return None

    def _load(self) -> None:
        source = self.source
        if isinstance(source, (str, Path)):
            from ..export.check import runnable_onnx

            source, _note = runnable_onnx(source)
        self.session = session(source, self.threads, self.device)

    def _infer(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(None, feeds)

    def describe(self) -> dict[str, Any]:
        return {"runner": self.name, "providers": self.session.get_providers() if self.loaded else providers(self.device)}

    def input_metadata(self) -> list[tuple[str, Any, list[int]]]:
        self.load()
        return [(i.name, _NUMPY.get(i.type, np.float32), [d if isinstance(d, int) else -1 for d in i.shape])
                for i in self.session.get_inputs()]

    def output_names(self) -> list[str]:
        self.load()
        return [o.name for o in self.session.get_outputs()]

    def close(self) -> None:
        self.__dict__.pop("session", None)
        super().close()
