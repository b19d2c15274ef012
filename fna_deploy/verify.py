"""Parity across implementations through polygraphy runners and its Comparator.

Runners: ``torch-fna`` (the patched PyTorch model, the reference), ``torch-dense`` (the model
unpatched: measures the approximation itself), for an ONNX file ``onnxrt`` (ONNX Runtime),
``openvino`` (OpenVINO CPU, f32; ``openvino-bf16`` at bf16) and ``onnx-reference`` (ONNX's
reference evaluator), see fna_deploy.runtimes, and ``trt`` (a TensorRT engine with the fna plugins). polygraphy's Comparator runs them on the same
feeds and judges each pair against the reference with atol/rtol; we add the metrics a person
reads: max/mean abs error, relative L2, cosine similarity, top-1 agreement for logits.
Implementation pairs (torch-fna vs onnxrt / trt) decide the verdict; FNA vs dense is reported only.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from torch import nn

from .parity import degenerate_output, pair_metrics  # noqa: F401  (verify.pair_metrics stays importable)

REFERENCE = "torch-fna"
DENSE = "torch-dense"
ONNXRT = "onnxrt"
TRT = "trt"
OPENVINO = "openvino"
ONNX_REFERENCE = "onnx-reference"
ONNX_BACKENDS = (ONNXRT, OPENVINO, ONNX_REFERENCE)  # what can run the --onnx file
INPUT_NAME = "images"
OUTPUT_NAME = "output"


def _quiet_polygraphy() -> None:
    from polygraphy.logger import G_LOGGER

    # our own table reports every pair; polygraphy would also log the expected FNA-vs-dense
    # mismatch as an error
    G_LOGGER.module_severity = G_LOGGER.CRITICAL


def torch_runner(model: nn.Module, name: str, input_shape: Sequence[int], device: str = "cpu"):
    """A polygraphy runner around a PyTorch module (polygraphy's PytRunner is CUDA-only)."""
    from .runtimes.base import as_polygraphy
    from .runtimes.pytorch import TorchRunner

    return as_polygraphy(TorchRunner(model, name, input_shape, device, INPUT_NAME, OUTPUT_NAME))


def onnxrt_runner(path: "str | Path"):
    """ONNX Runtime on an export; a trt-target export runs with its function bodies attached."""
    from .runtimes.base import as_polygraphy
    from .runtimes.onnxrt import OnnxrtRunner

    return as_polygraphy(OnnxrtRunner(path, name=ONNXRT))


def onnx_runners(path: "str | Path", backends: Sequence[str], openvino_precision: str = "f32") -> list:
    """One runner per name in ``backends`` (ONNX_BACKENDS) for the ONNX file at ``path``."""
    unknown = [b for b in backends if b not in ONNX_BACKENDS]
    if unknown or not backends:
        what = f"unknown ONNX backend {unknown[0]!r}" if unknown else "no ONNX backend named"
        raise ValueError(f"{what}; choose from {', '.join(ONNX_BACKENDS)}")
    runners = []
    for backend in dict.fromkeys(backends):
        if backend == ONNXRT:
            runners.append(onnxrt_runner(path))
        elif backend == OPENVINO:
            from .runtimes import openvino

            runners.append(openvino.polygraphy_runner(path, openvino_precision))
        else:
            from .runtimes import onnx_reference

            runners.append(onnx_reference.polygraphy_runner(path))
    return runners


def trt_runner(engine_path: "str | Path", plugin: Optional[str] = None):
    """The engine (TensorRT or TensorRT-RTX, as its sidecar says) loaded now, so that a runtime
    missing here is a TensorRTUnavailable before the Comparator starts."""
    from .runtimes.base import as_polygraphy
    from .runtimes.tensorrt import EngineRunner

    return as_polygraphy(EngineRunner(engine_path, plugin, name=TRT).load())


@dataclass
class PairResult:
    reference: str
    other: str
    max_abs: float
    mean_abs: float
    rel_l2: float
    cosine: float
    top1_agreement: Optional[float]
    polygraphy_passed: bool
    gating: bool  # an implementation pair, whose failure fails the verification

    @property
    def passed(self) -> bool:
        return self.polygraphy_passed

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


@dataclass
class VerifyReport:
    model: str
    inputs: str
    batch: int
    atol: float
    rtol: float
    runners: list[str]
    pairs: list[PairResult] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)  # runner -> what ran (e.g. OpenVINO precision, inlined in memory)
    degenerate: Optional[str] = None  # why the reference output carries no signal, if it does not
    allow_degenerate: bool = False

    @property
    def passed(self) -> bool:
        return all(p.passed for p in self.pairs if p.gating) and (self.degenerate is None or self.allow_degenerate)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "inputs": self.inputs,
            "batch": self.batch,
            "atol": self.atol,
            "rtol": self.rtol,
            "runners": self.runners,
            "pairs": [p.to_dict() for p in self.pairs],
            "skipped": self.skipped,
            "notes": self.notes,
            "degenerate": self.degenerate,
            "passed": self.passed,
        }

    def write_json(self, path: "str | Path") -> None:
        from .utils import write_text_atomic

        write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")


def verify(
    model: nn.Module,
    feeds: list[np.ndarray],
    *,
    onnx_path: "str | Path | None" = None,
    onnx_backends: Sequence[str] = (ONNXRT,),
    openvino_precision: str = "f32",
    engine_path: "str | Path | None" = None,
    plugin: Optional[str] = None,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    dense: bool = True,
    model_label: str = "model",
    inputs_label: str = "random",
    device: str = "cpu",
    allow_degenerate: bool = False,
) -> VerifyReport:
    """Run every available runner on ``feeds`` (float32 [B, C, H, W] arrays) and compare.

    ``model`` must be patched (the FNA reference). The dense runner uses an unpatched copy.
    ``onnx_backends`` (ONNX_BACKENDS) run ``onnx_path``; OpenVINO at ``openvino_precision``.
    A reference output without signal (all values equal) fails the report unless ``allow_degenerate``.
    """
    import polygraphy.comparator as comparator
    from polygraphy.comparator import Comparator

    from .patching import patch_record, unpatch

    _quiet_polygraphy()
    if patch_record(model) is None:
        raise ValueError("verify needs the FNA-patched model as its reference; patch it first (fna_deploy.patch)")
    shape = feeds[0].shape
    runners = [torch_runner(model, REFERENCE, shape, device)]
    report = VerifyReport(model_label, inputs_label, int(shape[0]), atol, rtol, [])
    if dense:
        runners.append(torch_runner(unpatch(copy.deepcopy(model)), DENSE, shape, device))
    if onnx_path is not None:
        runners.extend(onnx_runners(onnx_path, onnx_backends, openvino_precision))
    if engine_path is not None:
        try:
            runners.append(trt_runner(engine_path, plugin))
        except RuntimeError as exc:  # no TensorRT / no GPU here: say so, judge the rest
            report.skipped[TRT] = str(exc)
    report.runners = [r.name for r in runners]
    results = Comparator.run(runners, data_loader=[{INPUT_NAME: f.astype(np.float32)} for f in feeds])
    outputs = {name: [it[OUTPUT_NAME] for it in iterations] for name, iterations in results}
    for runner in runners:  # what a runtime reports it ran (OpenVINO: its precision, whether the file was inlined)
        details = getattr(runner, "details", None)
        if details:
            report.notes[runner.name] = ", ".join(f"{k} {v}" for k, v in details.items())
    report.degenerate = degenerate_output(outputs[REFERENCE])
    report.allow_degenerate = allow_degenerate
    simple = getattr(comparator, "SimpleCompareFunc", None)  # polygraphy >= 0.50; CompareFunc.simple before
    compare = simple(atol=atol, rtol=rtol) if simple else comparator.CompareFunc.simple(atol=atol, rtol=rtol)
    for other in report.runners[1:]:
        accuracy = Comparator.compare_accuracy(results, compare_func=compare, comparisons=[(0, report.runners.index(other))])
        passed = bool(accuracy)
        metrics = pair_metrics(outputs[REFERENCE], outputs[other])
        report.pairs.append(PairResult(REFERENCE, other, polygraphy_passed=passed, gating=other != DENSE, **metrics))
    return report
