"""FLOP model of a ViT encoder, dense and with FNA, for speedup bounds.

Per block with N tokens and width C (multiply-adds counted as 2 FLOPs):
    projections + MLP (ratio r):  2*N*C*(3C) + 2*N*C*C + 2*2*N*C*(rC)  = (8 + 4r) N C^2
    dense attention core:         2*N*N*C (q k^T) + 2*N*N*C (p v)      = 4 N^2 C
    FNA attention core:           4 products of N x m x C (Bv, out)     = 8 N m C
                                  + A and Z Bv (4 m^2 C) + Newton-Schulz per head (iters * 8 m^3 * H)
The bound is what the end-to-end speedup would be if only the replaced attention cores got
cheaper: dense FLOPs / FNA FLOPs over all blocks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


def linear_flops(tokens: int, width: int, mlp_ratio: float = 4.0) -> float:
    return (8 + 4 * mlp_ratio) * tokens * width * width


def dense_core_flops(tokens: int, width: int) -> float:
    return 4.0 * tokens * tokens * width


def fna_core_flops(tokens: int, width: int, landmarks: int, heads: int, pinv_iters: int = 6) -> float:
    m = landmarks
    return 8.0 * tokens * m * width + 4.0 * m * m * width + pinv_iters * 8.0 * m**3 * heads


def landmark_flops(tokens: int, landmarks: int, num_prefix: int, feature_dim: int) -> float:
    """Farthest-point sampling: per step, a squared distance to every token (3 N D)."""
    return 3.0 * max(landmarks - num_prefix, 0) * tokens * feature_dim


@dataclass
class FlopEstimate:
    tokens: int
    width: int
    blocks: int
    fna_blocks: int
    landmarks: int
    dense_flops: float
    fna_flops: float
    attention_share: float  # of a dense block's FLOPs

    @property
    def bound(self) -> float:
        return self.dense_flops / self.fna_flops

    def to_dict(self) -> dict:
        return {**asdict(self), "bound": self.bound}


def estimate(
    tokens: int,
    width: int,
    heads: int,
    blocks: int,
    fna_blocks: int,
    landmarks: int,
    *,
    mlp_ratio: float = 4.0,
    pinv_iters: int = 6,
) -> FlopEstimate:
    """Encoder FLOPs dense vs with FNA on ``fna_blocks`` of the ``blocks``."""
    if not 0 <= fna_blocks <= blocks:
        raise ValueError(f"fna_blocks must be between 0 and {blocks}, got {fna_blocks}")
    lin = linear_flops(tokens, width, mlp_ratio)
    dense_core = dense_core_flops(tokens, width)
    fna_core = fna_core_flops(tokens, width, landmarks, heads, pinv_iters)
    dense = blocks * (lin + dense_core)
    fna = blocks * lin + (blocks - fna_blocks) * dense_core + fna_blocks * fna_core
    return FlopEstimate(tokens, width, blocks, fna_blocks, landmarks, dense, fna, dense_core / (lin + dense_core))
