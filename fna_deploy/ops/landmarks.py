"""Landmark selection: guaranteed tokens, excluded tokens, farthest-point sampling.

The algorithm is written as a rank assignment so that it needs no data-dependent shapes, no
host synchronisation and no loop over the batch (only the inherently sequential FPS steps loop,
a static ``m - num_prefix`` times). Every token gets a rank; the landmarks are the ``m`` tokens
of lowest rank, in rank order:

* guaranteed tokens (prefix, then massive) take ranks ``0 .. G-1`` in index order;
* eligible tokens picked by FPS (or grid) take ``G + step`` (grid: ``G + position``);
* excluded ("artifact") tokens take ``G + E + position``: they only fill in when the eligible
  tokens run out;
* eligible tokens never picked take ``2N + index`` and are never chosen.

The same formulation is used by the ONNX function body and the C++/CUDA implementations, so
all of them produce identical indices.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from ..contract import LANDMARK_METHODS, LandmarkAttrs

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
METHODS = LANDMARK_METHODS


def lower_median(x: Tensor, dim: int = -1) -> Tensor:
    """The lower median (sorted element at ``(n - 1) // 2``), as ``torch.median`` defines it.

    Spelled out because every other implementation (ONNX TopK, C++, CUDA) must match it.
    """
    n = x.shape[dim]
    return x.sort(dim=dim).values.narrow(dim, (n - 1) // 2, 1).squeeze(dim)


def token_masks(
    scores: Optional[Tensor],
    batch: int,
    num_tokens: int,
    num_prefix: int,
    massive_ratio: float,
    artifact_ratio: float,
    device: torch.device,
) -> tuple[Tensor, Tensor, Tensor]:
    """Return (guaranteed, artifact, eligible) boolean masks, each [B, N]."""
    prefix = (torch.arange(num_tokens, device=device) < num_prefix).expand(batch, num_tokens)
    use_scores = scores is not None and (massive_ratio > 0 or artifact_ratio > 0) and num_prefix < num_tokens
    if not use_scores:
        none = torch.zeros_like(prefix)
        return prefix, none, ~prefix
    s = scores.float()
    med = lower_median(s[:, num_prefix:], dim=1).unsqueeze(1)
    if massive_ratio > 0:
        guaranteed = prefix | (s >= massive_ratio * med)
    else:
        guaranteed = prefix
    if artifact_ratio > 0:
        artifact = (s >= artifact_ratio * med) & ~guaranteed
    else:
        artifact = torch.zeros_like(prefix)
    eligible = ~guaranteed & ~artifact
    return guaranteed, artifact, eligible


def landmarks_reference(features: Tensor, scores: Optional[Tensor], *attrs: "LandmarkAttrs | int | float | str") -> Tensor:
    """The reference implementation behind ``fna::landmarks`` (inputs already validated).

    ``attrs``: one :class:`~fna_deploy.contract.LandmarkAttrs`, or the op's attribute arguments
    in schema order (num_landmarks, num_prefix, massive_ratio, artifact_ratio, method)."""
    a = LandmarkAttrs.of(*attrs)
    num_landmarks, num_prefix, massive_ratio, artifact_ratio, method = a.op_args()
    batch, num_tokens, dim = features.shape
    m = num_landmarks
    device = features.device
    f = features.float()
    guaranteed, artifact, eligible = token_masks(
        scores, batch, num_tokens, num_prefix, massive_ratio, artifact_ratio, device
    )
    arange = torch.arange(num_tokens, device=device, dtype=torch.int64).expand(batch, num_tokens)
    n_guaranteed = guaranteed.sum(1, keepdim=True)  # [B,1]
    n_eligible = eligible.sum(1, keepdim=True)
    pos_guaranteed = guaranteed.cumsum(1) - 1
    pos_eligible = eligible.cumsum(1) - 1
    pos_artifact = artifact.cumsum(1) - 1

    rank = 2 * num_tokens + arange
    rank = torch.where(guaranteed, pos_guaranteed, rank)
    rank = torch.where(artifact, n_guaranteed + n_eligible + pos_artifact, rank)

    if method == "grid":
        # Eligible token at position p is picked when some j in [0, k) has floor(j*E/k) == p;
        # the smallest candidate is j = ceil(p*k/E).
        k = (m - n_guaranteed).clamp(min=0)
        e = n_eligible.clamp(min=1)
        j = (pos_eligible * k + e - 1) // e
        picked = eligible & (j < k) & ((j * n_eligible) // k.clamp(min=1) == pos_eligible)
        rank = torch.where(picked, n_guaranteed + pos_eligible, rank)
    else:
        steps = m - num_prefix  # G >= num_prefix, so no image needs more FPS picks than this
        min_dist = torch.full((batch, num_tokens), math.inf, device=device)
        min_dist = torch.where(eligible, min_dist, -math.inf)
        for step in range(steps):
            pick = min_dist.argmax(dim=1, keepdim=True)  # [B,1]; first maximum = lowest index
            valid = n_eligible > step
            current = rank.gather(1, pick)
            rank = rank.scatter(1, pick, torch.where(valid, n_guaranteed + step, current))
            point = f.gather(1, pick.unsqueeze(-1).expand(batch, 1, dim))  # [B,1,D]
            dist = (f - point).square().sum(-1)
            min_dist = torch.minimum(min_dist, dist)
            min_dist = min_dist.scatter(1, pick, -math.inf)
    order = torch.sort(rank, dim=1, stable=True).indices[:, :m]
    return order.to(torch.int32)


def validate_landmark_args(features: Tensor, scores: Optional[Tensor], attrs: LandmarkAttrs) -> None:
    num_landmarks, num_prefix, method = attrs.num_landmarks, attrs.num_prefix, attrs.method
    massive_ratio, artifact_ratio = attrs.massive_ratio, attrs.artifact_ratio
    if not isinstance(features, Tensor):
        raise ValueError(f"select_landmarks: features must be a tensor, got {type(features).__name__}")
    if features.dim() != 3:
        raise ValueError(
            f"select_landmarks: features must have shape [B, N, D], got rank {features.dim()} "
            f"shape {tuple(features.shape)}"
        )
    if features.dtype not in FLOAT_DTYPES:
        raise ValueError(f"select_landmarks: features must be float32, float16 or bfloat16, got {features.dtype}")
    num_tokens = features.shape[1]
    if isinstance(num_landmarks, bool) or not isinstance(num_landmarks, int):
        raise ValueError(f"select_landmarks: num_landmarks must be an int, got {num_landmarks!r}")
    if num_landmarks <= 0:
        raise ValueError(f"select_landmarks: num_landmarks must be >= 1, got {num_landmarks}")
    if num_landmarks > num_tokens:
        raise ValueError(
            f"select_landmarks: num_landmarks={num_landmarks} is more than the {num_tokens} tokens; "
            f"use at most {num_tokens} landmarks"
        )
    if isinstance(num_prefix, bool) or not isinstance(num_prefix, int) or num_prefix < 0:
        raise ValueError(f"select_landmarks: num_prefix must be an int >= 0, got {num_prefix!r}")
    if num_prefix > num_landmarks:
        raise ValueError(
            f"select_landmarks: num_prefix={num_prefix} prefix tokens do not fit in "
            f"num_landmarks={num_landmarks}"
        )
    if method not in METHODS:
        raise ValueError(f"select_landmarks: method must be one of {', '.join(METHODS)}, got {method!r}")
    for name, ratio in (("massive_ratio", massive_ratio), ("artifact_ratio", artifact_ratio)):
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not math.isfinite(ratio) or ratio < 0:
            raise ValueError(f"select_landmarks: {name} must be a finite number >= 0, got {ratio!r}")
    if scores is None:
        if massive_ratio > 0 or artifact_ratio > 0:
            raise ValueError(
                "select_landmarks: massive_ratio/artifact_ratio need per-token scores [B, N]; "
                "pass scores= or set both ratios to 0"
            )
        return
    if not isinstance(scores, Tensor):
        raise ValueError(f"select_landmarks: scores must be a tensor, got {type(scores).__name__}")
    if scores.dim() != 2 or scores.shape[0] != features.shape[0] or scores.shape[1] != num_tokens:
        raise ValueError(
            f"select_landmarks: scores must have shape [B, N] = [{features.shape[0]}, {num_tokens}], "
            f"got {tuple(scores.shape)}"
        )
    if scores.dtype not in FLOAT_DTYPES:
        raise ValueError(f"select_landmarks: scores must be a float tensor, got {scores.dtype}")
    if scores.device != features.device:
        raise ValueError(f"select_landmarks: scores are on {scores.device} but features on {features.device}")
