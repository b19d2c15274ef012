"""Nystrom attention on landmark tokens: the math of the operator contract.

    qp, kp = q[:, :, idx], k[:, :, idx]
    A  = softmax(s * qp kp^T)              [B,H,m,m]   (fp32)
    Bv = softmax(s * qp k^T) v             [B,H,m,d]
    Z  = pinv(A) by Newton-Schulz          (fp32)
    out = softmax(s * q kp^T) (Z Bv)       [B,H,N,d]

Both landmark products are ordinary softmax attentions, so they run through
``scaled_dot_product_attention`` (flash / memory-efficient kernels where the device has them);
only the m x m system is formed explicitly, always in fp32.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .landmarks import FLOAT_DTYPES


def newton_schulz_pinv(a: Tensor, iters: int) -> Tensor:
    """Newton-Schulz pseudo-inverse of a batch of square matrices, as the contract spells it.

    Z0 = A^T / max_j sum_i A_ij; then ``iters`` times: AZ = A Z; Z = 1/4 Z (13I - AZ(15I - AZ(7I - AZ))).
    The normaliser is per matrix, so every image (and head) is independent of the rest of the batch.
    """
    a = a.float()
    m = a.shape[-1]
    eye = torch.eye(m, dtype=a.dtype, device=a.device)
    col_sum_max = a.sum(dim=-2).amax(dim=-1, keepdim=True).unsqueeze(-1)
    z = a.transpose(-1, -2) / col_sum_max
    for _ in range(iters):
        az = a @ z
        z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
    return z


def gather_tokens(x: Tensor, idx: Tensor) -> Tensor:
    """x [B,H,N,d], idx [B,m] -> x[:, :, idx] of shape [B,H,m,d] (indices shared by heads)."""
    b, h, _, d = x.shape
    index = idx.long()[:, None, :, None].expand(b, h, idx.shape[1], d)
    return x.gather(2, index)


def nystrom_reference(q: Tensor, k: Tensor, v: Tensor, idx: Tensor, scale: float, pinv_iters: int) -> Tensor:
    """The reference implementation behind ``fna::nystrom_attention`` (inputs already validated).

    ``scale`` <= 0 means head_dim ** -0.5, as in the ONNX attribute.
    """
    s = scale if scale > 0 else q.shape[-1] ** -0.5
    qp = gather_tokens(q, idx)
    kp = gather_tokens(k, idx)
    a = torch.softmax(s * (qp.float() @ kp.float().transpose(-1, -2)), dim=-1)
    z = newton_schulz_pinv(a, pinv_iters)
    bv = F.scaled_dot_product_attention(qp, k, v, scale=s)
    w = (z @ bv.float()).to(q.dtype)
    return F.scaled_dot_product_attention(q, kp, w, scale=s)


def dense_attention(q: Tensor, k: Tensor, v: Tensor, *, scale: Optional[float] = None) -> Tensor:
    """Exact softmax attention, the baseline FNA approximates."""
    return F.scaled_dot_product_attention(q, k, v, scale=scale)


def validate_nystrom_args(q: Tensor, k: Tensor, v: Tensor, idx: Tensor, scale: Optional[float], pinv_iters: int) -> None:
    for name, t in (("q", q), ("k", k), ("v", v), ("idx", idx)):
        if not isinstance(t, Tensor):
            raise ValueError(f"nystrom_attention: {name} must be a tensor, got {type(t).__name__}")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 4:
            raise ValueError(
                f"nystrom_attention: {name} must have shape [B, H, N, d], got rank {t.dim()} shape {tuple(t.shape)}"
            )
        if t.dtype not in FLOAT_DTYPES:
            raise ValueError(f"nystrom_attention: {name} must be float32, float16 or bfloat16, got {t.dtype}")
    if k.shape != q.shape:
        raise ValueError(f"nystrom_attention: k has shape {tuple(k.shape)} but q has {tuple(q.shape)}; they must match")
    if v.shape[:3] != q.shape[:3]:
        raise ValueError(
            f"nystrom_attention: v has shape {tuple(v.shape)}; its [B, H, N] must match q's {tuple(q.shape[:3])}"
        )
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"nystrom_attention: q, k, v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if idx.dim() != 2 or idx.shape[0] != q.shape[0]:
        raise ValueError(
            f"nystrom_attention: idx must have shape [B, m] with B={q.shape[0]}, got {tuple(idx.shape)}"
        )
    if idx.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"nystrom_attention: idx must be int32 or int64, got {idx.dtype}")
    m, n = idx.shape[1], q.shape[2]
    if m <= 0:
        raise ValueError("nystrom_attention: idx holds no landmarks (m = 0); use m >= 1")
    if m > n:
        raise ValueError(f"nystrom_attention: {m} landmarks is more than the {n} tokens; use m <= {n}")
    if isinstance(pinv_iters, bool) or not isinstance(pinv_iters, int) or pinv_iters < 0:
        raise ValueError(f"nystrom_attention: pinv_iters must be an int >= 0, got {pinv_iters!r}")
    if scale is not None and (
        isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0
    ):
        raise ValueError(f"nystrom_attention: scale must be a positive number or None, got {scale!r}")
