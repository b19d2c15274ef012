"""What an analysis found: per-layer reports, candidates, the recommendation (with its exact export
flags), as JSON."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from torch import Tensor

from ..config import FNAConfig
from ..utils import write_text_atomic


@dataclass
class LayerReport:
    """What one transformer block looks like (token indices refer to the residual stream entering it)."""

    index: int
    norm_median: float  # median patch-token norm (median over images of the per-image median)
    norm_max: float  # largest token norm over all images
    norm_ratio: float  # largest max/median ratio over the images
    massive_tokens: list[int]  # tokens massive in a majority of the images
    massive_stable: bool  # every image has the same massive tokens
    artifact_tokens: list[int]  # patch tokens that are artifacts in a majority of the images
    artifact_stable: bool
    sink_mass: float  # share of the block's attention received by each image's massive tokens (mean)
    artifact_mass: float  # same for artifact tokens
    prefix_mass: float  # same for the prefix tokens (CLS, registers)
    token_share: float  # what the massive tokens would receive under uniform attention (count / N)
    fna_error: dict[int, float]  # m -> mean relative error, landmarks without guarantees
    fna_error_variants: dict[str, dict[int, float]] = field(default_factory=dict)
    norms: Optional[Tensor] = field(default=None, repr=False)  # [images, N], for the plots

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "norm_median": _num(self.norm_median),
            "norm_max": _num(self.norm_max),
            "norm_ratio": _num(self.norm_ratio),
            "massive_tokens": list(self.massive_tokens),
            "massive_stable": self.massive_stable,
            "artifact_tokens": list(self.artifact_tokens),
            "artifact_stable": self.artifact_stable,
            "sink_mass": _num(self.sink_mass),
            "artifact_mass": _num(self.artifact_mass),
            "prefix_mass": _num(self.prefix_mass),
            "token_share": _num(self.token_share),
            "fna_error": {str(m): _num(e) for m, e in self.fna_error.items()},
            "fna_error_variants": {
                name: {str(m): _num(e) for m, e in errors.items()} for name, errors in self.fna_error_variants.items()
            },
        }


@dataclass
class Candidate:
    """The largest layer set that meets the budget for one m and landmark variant."""

    num_landmarks: int
    variant: str
    layers: list[int]
    end_to_end_error: float  # worst image, 1 - cosine; 0 for an empty set
    flops_saving: float  # fraction of the blocks' dense FLOPs saved
    evaluations: int  # patched forward passes spent on the search

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_landmarks": self.num_landmarks,
            "variant": self.variant,
            "layers": list(self.layers),
            "end_to_end_error": _num(self.end_to_end_error),
            "flops_saving": _num(self.flops_saving),
            "evaluations": self.evaluations,
        }


@dataclass
class Recommendation:
    layers: list[int]
    num_landmarks: Optional[int]
    massive_ratio: float
    artifact_ratio: float
    export_flags: str  # "" when no FNA layer meets the budget
    budget: float
    end_to_end_error: Optional[float]  # measured with the recommended config (worst image, 1 - cos)
    end_to_end_cosine: Optional[float]  # the smallest cosine similarity over the images
    flops_dense: float  # FLOPs of the transformer blocks, dense, per image
    flops_fna: float  # the same with the recommended config
    flops_saving: float  # 1 - flops_fna / flops_dense
    reason: str
    method: str = "fps"
    pinv_iters: int = 6
    # "fna": use the config; "dense": stay dense (the fields still describe the best FNA config
    # found, if any; ``reason`` says why it is not worth it)
    advice: str = "dense"
    expected_speedup: Optional[tuple[float, float]] = None  # (low, high) x dense for the config; None without one

    @property
    def uses_fna(self) -> bool:
        """Whether the advice is to use FNA (a config within the budget that is worth it)."""
        return bool(self.layers) and self.advice == "fna"

    def config(self, base: Optional[FNAConfig] = None) -> Optional[FNAConfig]:
        """The recommended FNAConfig (None when dense is recommended)."""
        if not self.layers or self.num_landmarks is None:
            return None
        base = base or FNAConfig(method=self.method, pinv_iters=self.pinv_iters)
        return base.replace(
            num_landmarks=self.num_landmarks,
            layers=list(self.layers),
            massive_ratio=self.massive_ratio,
            artifact_ratio=self.artifact_ratio,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": list(self.layers),
            "layers_spec": format_layers(self.layers) if self.layers else "",
            "num_landmarks": self.num_landmarks,
            "massive_ratio": self.massive_ratio,
            "artifact_ratio": self.artifact_ratio,
            "export_flags": self.export_flags,
            "budget": self.budget,
            "end_to_end_error": _num(self.end_to_end_error),
            "end_to_end_cosine": _num(self.end_to_end_cosine),
            "flops_dense": _num(self.flops_dense),
            "flops_fna": _num(self.flops_fna),
            "flops_saving": _num(self.flops_saving),
            "reason": self.reason,
            "method": self.method,
            "pinv_iters": self.pinv_iters,
            "advice": self.advice,
            "expected_speedup": [_num(v) for v in self.expected_speedup] if self.expected_speedup else None,
        }


@dataclass
class AnalysisReport:
    model: dict[str, Any]
    num_images: int
    image_size: tuple[int, int]
    num_tokens: int
    num_prefix: int
    grid: Optional[tuple[int, int]]  # patch grid (rows, cols) when the patch tokens form one
    settings: dict[str, Any]
    layers: list[LayerReport]
    candidates: list[Candidate]
    recommendation: Recommendation
    skipped_landmarks: dict[int, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": dict(self.model),
            "num_images": self.num_images,
            "image_size": list(self.image_size),
            "num_tokens": self.num_tokens,
            "num_prefix": self.num_prefix,
            "grid": list(self.grid) if self.grid else None,
            "settings": dict(self.settings),
            "layers": [layer.to_dict() for layer in self.layers],
            "candidates": [c.to_dict() for c in self.candidates],
            "recommendation": self.recommendation.to_dict(),
            "skipped_landmarks": {str(m): why for m, why in self.skipped_landmarks.items()},
        }


def _num(value: Optional[float]) -> Optional[float]:
    """A JSON-safe float (None for missing or non-finite values)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def format_layers(layers: Sequence[int]) -> str:
    """[2, 3, 4, 7, 9, 10] -> "2-4,7,9-10" (the --layers syntax)."""
    items = sorted(set(int(i) for i in layers))
    if not items:
        raise ValueError("format_layers: no layers")
    parts = []
    start = prev = items[0]
    for i in items[1:] + [None]:  # type: ignore[list-item]
        if i is not None and i == prev + 1:
            prev = i
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    return ",".join(parts)


def export_flags(
    num_landmarks: int,
    layers: Sequence[int],
    *,
    massive_ratio: float = 0.0,
    artifact_ratio: float = 0.0,
    method: str = "fps",
    features: str = "q",
    pinv_iters: int = 6,
    resolution: Optional[int] = None,
) -> str:
    """The ``fna-deploy export`` flags for a config (flags left out mean export's defaults)."""
    flags = []
    if resolution is not None:
        flags.append(f"--resolution {resolution}")
    flags += [f"--landmarks {num_landmarks}", f"--layers {format_layers(layers)}"]
    if method != "fps":
        flags.append(f"--method {method}")
    if features != "q":
        flags.append(f"--features {features}")
    # always explicit: 0 (off) differs from export's default of 10, and 10 reads better spelled out
    flags.append(f"--massive-ratio {_ratio(massive_ratio)}")
    if artifact_ratio:
        flags.append(f"--artifact-ratio {_ratio(artifact_ratio)}")
    if pinv_iters != 6:
        flags.append(f"--pinv-iters {pinv_iters}")
    return " ".join(flags)


def _ratio(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def write_report(report: AnalysisReport, path: "str | os.PathLike[str]") -> Path:
    """Write ``report.to_dict()`` as JSON, atomically (a temporary file renamed into place)."""
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(21, "Is a directory", str(target))
    text = json.dumps(report.to_dict(), indent=2, allow_nan=False)
    target.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(target, text + "\n")
