"""The FNA math as torch.library custom ops: ``fna::landmarks`` and ``fna::nystrom_attention``.

``select_landmarks`` and ``nystrom_attention`` validate their arguments (ValueError naming the
values) and call the custom ops, which torch.export keeps as single nodes thanks to their fake
kernels. The CPU/CUDA implementations registered here are the PyTorch reference; the native
library (fna_deploy.native) can register faster CUDA kernels for the same ops.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..contract import LandmarkAttrs
from .landmarks import landmarks_reference, lower_median, token_masks, validate_landmark_args
from .nystrom import dense_attention, gather_tokens, newton_schulz_pinv, nystrom_reference, validate_nystrom_args


@torch.library.custom_op("fna::landmarks", mutates_args=())
def landmarks_op(
    features: Tensor,
    scores: Optional[Tensor],
    num_landmarks: int,
    num_prefix: int,
    massive_ratio: float,
    artifact_ratio: float,
    method: str,
) -> Tensor:
    # the schema above is torch's (it needs the arguments typed one by one); from here on they
    # travel as one LandmarkAttrs (fna_deploy.contract), in the same order as the contract's fields
    attrs = LandmarkAttrs(num_landmarks, num_prefix, massive_ratio, artifact_ratio, method)
    # contiguous, as the fake kernel promises (torch.compile checks strides against it)
    return landmarks_reference(features, scores, attrs).contiguous()


@landmarks_op.register_fake
def _landmarks_fake(features, scores, *attrs):
    return features.new_empty((features.shape[0], LandmarkAttrs.of(*attrs).num_landmarks), dtype=torch.int32)


@torch.library.custom_op("fna::nystrom_attention", mutates_args=())
def nystrom_op(q: Tensor, k: Tensor, v: Tensor, idx: Tensor, scale: float, pinv_iters: int) -> Tensor:
    # contiguous, as the fake kernel promises: the reference's last product may come out of SDPA
    # in another layout, and compiled graphs (inductor) assert the fake kernel's strides
    return nystrom_reference(q, k, v, idx, scale, pinv_iters).contiguous()


@nystrom_op.register_fake
def _nystrom_fake(q, k, v, idx, scale, pinv_iters):
    return q.new_empty((*q.shape[:3], v.shape[-1]))


def select_landmarks(
    features: Tensor,
    num_landmarks: int,
    *,
    num_prefix: int = 0,
    scores: Optional[Tensor] = None,
    massive_ratio: float = 0.0,
    artifact_ratio: float = 0.0,
    method: str = "fps",
) -> Tensor:
    """Pick ``num_landmarks`` token indices per image: int32 [B, m].

    Prefix tokens (and, with ``scores`` and ``massive_ratio``, massive tokens) come first in
    index order; then farthest-point sampling (or an even grid) over the eligible tokens, which
    excludes "artifact" tokens when ``artifact_ratio`` > 0; excluded tokens fill in last.
    """
    attrs = LandmarkAttrs(num_landmarks, num_prefix, massive_ratio, artifact_ratio, method)
    validate_landmark_args(features, scores, attrs)
    return torch.ops.fna.landmarks(features, scores, *attrs.op_args())


def nystrom_attention(
    q: Tensor, k: Tensor, v: Tensor, idx: Tensor, *, scale: Optional[float] = None, pinv_iters: int = 6
) -> Tensor:
    """Nystrom approximation of softmax attention on landmark tokens ``idx`` (q, k, v: [B,H,N,d])."""
    validate_nystrom_args(q, k, v, idx, scale, pinv_iters)
    return torch.ops.fna.nystrom_attention(q, k, v, idx, float(scale or 0.0), pinv_iters)


__all__ = [
    "LandmarkAttrs",
    "select_landmarks",
    "nystrom_attention",
    "dense_attention",
    "newton_schulz_pinv",
    "gather_tokens",
    "lower_median",
    "token_masks",
    "landmarks_reference",
    "nystrom_reference",
]
