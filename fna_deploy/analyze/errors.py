"""End-to-end error: 1 - cosine similarity between a patched model's outputs and the dense ones."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import FNAConfig
from ..patching import patch, unpatch
from .probe import _forward_all


def _cosine_errors(out: Tensor, ref: Tensor) -> Tensor:
    """1 - cosine similarity per image (clamped at 0); inf where an output is not finite."""
    out, ref = out.flatten(1).double(), ref.flatten(1).double()
    err = (1.0 - F.cosine_similarity(out, ref, dim=1, eps=1e-30)).clamp_min(0.0)
    return torch.where(torch.isfinite(err), err, torch.full_like(err, math.inf))


def _informative(reference: Tensor) -> bool:
    """Whether every image's output has a direction to compare (not all zeros, all finite)."""
    flat = reference.flatten(1).double()
    return bool(torch.isfinite(flat).all() and (flat.norm(dim=1) > 0).all())


def _end_to_end(
    model: nn.Module,
    inputs: Tensor,
    reference: Tensor,
    config: FNAConfig,
    batch_size: int,
    device: torch.device,
    last_block: nn.Module,
    on_features: bool,
) -> tuple[float, float]:
    """Patch ``model`` with ``config``, run it, unpatch: (worst 1 - cosine, mean 1 - cosine)."""
    patch(model, config)
    try:
        outputs, features = _forward_all(model, inputs, batch_size, device, last_block)
    finally:
        unpatch(model)
    err = _cosine_errors(features if on_features else outputs, reference)
    return float(err.max()), float(err.mean())
