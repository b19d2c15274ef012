"""Parity numbers between two runs of a model: one ground-floor module used by export's check,
verify and bench (no imports from the rest of the project)."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np


def degenerate_output(outputs: Sequence[np.ndarray]) -> Optional[str]:
    """Why ``outputs`` carry no signal for a comparison (every value equal, e.g. all zero), or None.
    Any implementation "matches" such an output, so a parity verdict on it means nothing."""
    values = np.concatenate([np.asarray(o, dtype=np.float64).ravel() for o in outputs]) if len(outputs) else np.zeros(0)
    if values.size == 0:
        return "the output is empty"
    if not np.isfinite(values).all():
        return None  # not degenerate but broken: the comparison itself reports it
    if values.max() == values.min():
        return "every output value is 0" if values.max() == 0 else f"every output value equals {values.max():g}"
    return None


def pair_metrics(reference: list[np.ndarray], other: list[np.ndarray]) -> dict[str, Any]:
    """max/mean abs, relative L2, cosine (and top-1 agreement for logits [B, classes]) of two lists
    of outputs, flattened together in float64: the one place parity numbers are computed."""
    ref = np.concatenate([np.asarray(r, dtype=np.float64).ravel() for r in reference])
    oth = np.concatenate([np.asarray(o, dtype=np.float64).ravel() for o in other])
    diff = np.abs(ref - oth)
    if not diff.size:
        return {"max_abs": 0.0, "mean_abs": 0.0, "rel_l2": 0.0, "cosine": float(np.array_equal(ref, oth)), "top1_agreement": None}
    norm = np.linalg.norm(ref)
    denom = norm * np.linalg.norm(oth)
    top1 = None
    if all(np.ndim(r) == 2 and r.shape[1] > 1 for r in reference):  # logits [B, classes]
        agree = [np.argmax(r, 1) == np.argmax(o, 1) for r, o in zip(reference, other)]
        top1 = float(np.concatenate(agree).mean())
    return {
        "max_abs": float(diff.max()),
        "mean_abs": float(diff.mean()),
        "rel_l2": float(np.linalg.norm(ref - oth) / norm) if norm > 0 else float(diff.max()),
        "cosine": float(ref @ oth / denom) if denom > 0 else float(np.array_equal(ref, oth)),
        "top1_agreement": top1,
    }
