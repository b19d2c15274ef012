"""OpenVINO (CPU) as a runtime for ONNX exports: load, run, and a polygraphy runner for verify.

OpenVINO's ONNX frontend does not expand model-local functions, so a portable export (fna nodes
with function bodies) is inlined in memory first (fna_deploy.export.functions.inline_functions);
an inlined export (``export --inline-functions``) loads as is. Inference precision is f32 by
default, for parity: OpenVINO's own default on CPUs with bf16 units is bf16 (errors ~1e-2).
``precision="bf16"`` asks for it; what the compiled model reports is what is named.
"""

from __future__ import annotations

from ..errors import FnaDeployError

import io
import tempfile
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .base import Runner, as_polygraphy

NAME = "openvino"
PRECISIONS = ("f32", "bf16")


class OpenVINOUnavailable(FnaDeployError, RuntimeError):
    """openvino is not installed (one sentence, with the fix)."""


def require_openvino() -> Any:
    try:
        import openvino
    except ImportError:
        raise OpenVINOUnavailable("openvino is not installed; pip install 'fna-deploy[openvino]' (or pip install openvino)") from None
    return openvino


def version() -> Optional[str]:
    try:
        return str(require_openvino().__version__).split("-")[0]
    except OpenVINOUnavailable:
        return None


def runner_name(precision: str) -> str:
    """The runner's name in reports: ``openvino`` at f32, ``openvino-bf16`` otherwise."""
    return NAME if precision == "f32" else f"{NAME}-{precision}"


def read_onnx(path: "str | Path") -> tuple[Any, bool]:
    """(an openvino.Model of the ONNX file, whether its local functions were inlined in memory;
    a trt-target export gets the portable bodies first)."""
    import onnx

    from ..export.functions import inline_functions, with_bodies
    from ..export.graph import EXTERNAL_DATA_THRESHOLD

    ov = require_openvino()
    core = ov.Core()
    header = onnx.load(str(path), load_external_data=False)
    if not header.functions and not with_bodies(header)[1]:
        return core.read_model(str(path)), False  # already inlined (or dense): OpenVINO reads the file itself
    inlined = inline_functions(with_bodies(onnx.load(str(path)))[0])
    if inlined.ByteSize() < EXTERNAL_DATA_THRESHOLD:
        return core.read_model(io.BytesIO(inlined.SerializeToString())), True
    with tempfile.TemporaryDirectory(prefix="fna-openvino-") as tmp:  # too big for one protobuf: external data
        staged = Path(tmp) / "inlined.onnx"
        onnx.save_model(inlined, staged, save_as_external_data=True, all_tensors_to_one_file=True, location="inlined.onnx.data")
        return core.read_model(str(staged)), True


def compile_onnx(path: "str | Path", precision: str = "f32", threads: Optional[int] = None) -> tuple[Any, dict[str, Any]]:
    """(a compiled CPU model, what ran: precision the plugin reports, threads, inlined in memory)."""
    if precision not in PRECISIONS:
        raise ValueError(f"openvino precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    ov = require_openvino()
    model, inlined = read_onnx(path)
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": precision}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    compiled = ov.Core().compile_model(model, "CPU", config)
    ran = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # "f32" / "bf16" / "f16"
    return compiled, {"precision": ran, "threads": compiled.get_property("INFERENCE_NUM_THREADS"), "inlined_in_memory": inlined,
                      "openvino": version()}


def run(compiled: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Outputs of one inference, in the model's output order."""
    result = compiled(feeds)
    return [np.asarray(result[out]) for out in compiled.outputs]


class OpenVINORunner(Runner):
    """An ONNX file compiled by OpenVINO for the CPU at ``precision``."""

    def __init__(self, path: "str | Path", precision: str = "f32", threads: Optional[int] = None) -> None:
        super().__init__()
        self.path, self.precision, self.threads, self.name = path, precision, threads, runner_name(precision)

    @classmethod
    def unavailable(cls, device: str = "cpu") -> Optional[str]:
        if device == "cuda":
            return "OpenVINO runs on its CPU plugin here, so its times are not GPU times; time it with --device cpu"
        try:
            require_openvino()
        except OpenVINOUnavailable as exc:
            return str(exc)
        return None

    def _load(self) -> None:
        self.compiled, self.details = compile_onnx(self.path, self.precision, self.threads)

    def _infer(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return run(self.compiled, feeds)

    def input_metadata(self) -> list[tuple[str, Any, list[int]]]:
        self.load()
        return [(port.get_any_name(), np.float32, [d.get_length() if d.is_static else -1 for d in port.get_partial_shape()])
                for port in self.compiled.inputs]

    def output_names(self) -> list[str]:
        self.load()
        return [port.get_any_name() for port in self.compiled.outputs]

    def close(self) -> None:
        self.__dict__.pop("compiled", None)
        super().close()


def polygraphy_runner(path: "str | Path", precision: str = "f32", threads: Optional[int] = None):
    """A polygraphy runner (for verify's Comparator) running the ONNX file in OpenVINO on the CPU."""
    require_openvino()  # refuse before the Comparator starts
    return as_polygraphy(OpenVINORunner(path, precision, threads))
