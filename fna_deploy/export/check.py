"""Parity of an exported ONNX model against the PyTorch model it came from (ONNX Runtime, CPU)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np
import torch

FP32_TOL = 1e-4  # max abs error, relative to the output scale when that exceeds 1
FP16_MIN_COSINE = 0.999


@dataclass
class ParityResult:
    batch: int
    output: str
    max_abs: float
    mean_abs: float
    cosine: float
    output_scale: float
    criterion: str
    passed: bool
    degenerate: Optional[str] = None  # the reference carries no signal (all values equal)

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        if self.degenerate and not self.passed:
            return (f"output {self.output!r} at batch {self.batch} carries no signal ({self.degenerate}): any implementation "
                    "would match it; use real weights, or allow it (--allow-degenerate)")
        return (
            f"output {self.output!r} at batch {self.batch}: max abs error {self.max_abs:.3g} "
            f"(output scale {self.output_scale:.3g}), cosine {self.cosine:.6f}; needed {self.criterion}"
        )


def compare(reference: np.ndarray, actual: np.ndarray, *, batch: int, output: str, fp16: bool,
            allow_degenerate: bool = False) -> ParityResult:
    """fp32: max abs error within FP32_TOL (scaled by outputs above 1); fp16: cosine. A reference
    without signal (every value equal) fails unless ``allow_degenerate``: it proves nothing."""
    from ..parity import degenerate_output, pair_metrics

    degenerate = degenerate_output([reference])
    metrics = pair_metrics([reference], [actual])
    cosine, max_abs = metrics["cosine"], metrics["max_abs"]
    scale = float(np.abs(reference).max()) if reference.size else 0.0
    finite = bool(np.isfinite(actual).all())
    if fp16:
        criterion = f"cosine >= {FP16_MIN_COSINE}"
        passed = finite and cosine >= FP16_MIN_COSINE
    else:
        tol = FP32_TOL * max(1.0, scale)
        criterion = f"max abs error <= {tol:.3g}"
        passed = finite and max_abs <= tol
    if degenerate and not allow_degenerate:
        passed = False
    return ParityResult(batch, output, max_abs, metrics["mean_abs"], cosine, scale, criterion, passed, degenerate)


def runnable_onnx(path: "str | os.PathLike[str]") -> "tuple[bytes | str, Optional[str]]":
    """What ONNX Runtime can run for the ONNX file at ``path``, and a note when it is not the file as is.

    A trt-target export carries the fna nodes without function bodies (TensorRT maps them to the
    plugins); ONNX Runtime runs the same graph with the portable bodies attached in memory. Other
    files (and files too large to serialise in one piece) are returned as their path."""
    import onnx

    from . import graph as graph_ops
    from .functions import with_bodies

    path = str(path)
    meta = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
    if meta.get("fna_target") != "trt":  # cheap: the header only, before loading the weights
        return path, None
    runnable, attached = with_bodies(onnx.load(path))
    if not attached or runnable.ByteSize() >= graph_ops.EXTERNAL_DATA_THRESHOLD:
        return path, None
    return runnable.SerializeToString(), "trt target run with the portable function bodies attached in memory"


def check_parity(
    model: torch.nn.Module,
    onnx_model,
    input_shape: tuple[int, ...],
    batches: list[int],
    *,
    fp16: bool = False,
    seed: int = 0,
    allow_degenerate: bool = False,
) -> list[ParityResult]:
    """Run the ONNX model (bytes or path) with ONNX Runtime and ``model`` with PyTorch on the same
    random input at each batch size; compare every output."""
    from ..runtimes.onnxrt import session as ort_session

    session = ort_session(onnx_model)
    input_name = session.get_inputs()[0].name
    output_names = [o.name for o in session.get_outputs()]
    results = []
    generator = torch.Generator().manual_seed(seed)
    for batch in batches:
        x = torch.randn((batch, *input_shape[1:]), generator=generator)
        with torch.no_grad():
            expected = model(x)
        expected_list = list(expected) if isinstance(expected, (tuple, list)) else [expected]
        actual_list = session.run(None, {input_name: x.numpy()})
        for name, exp, act in zip(output_names, expected_list, actual_list):
            results.append(compare(exp.float().numpy(), act, batch=batch, output=name, fp16=fp16, allow_degenerate=allow_degenerate))
    return results
