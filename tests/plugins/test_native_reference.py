"""The C++ CPU reference (through libfna's C API) against the PyTorch reference in fna_deploy.ops."""

from __future__ import annotations

import pytest
import torch

from fna_deploy.ops import nystrom_attention, select_landmarks


def _scores(b: int, n: int, g: torch.Generator) -> torch.Tensor:
    s = torch.rand(b, n, generator=g) + 1.0  # median ~1.5
    s[:, n // 3] = 100.0  # massive
    s[:, n // 2] = 5.0  # artifact at ratio 3, not massive at ratio 10
    s[:, -1] = 4.6
    return s


LANDMARK_CASES = [
    # (B, N, D, m, kwargs)
    (1, 1, 4, 1, {}),
    (2, 50, 8, 7, {}),
    (3, 97, 16, 97, {}),  # m = N
    (2, 128, 32, 16, {"num_prefix": 1}),
    (2, 65, 24, 65, {"num_prefix": 5}),  # m = N with prefix
    (2, 300, 16, 40, {"num_prefix": 1, "massive_ratio": 10.0}),
    (2, 300, 16, 40, {"num_prefix": 1, "artifact_ratio": 3.0}),
    (3, 211, 12, 33, {"num_prefix": 2, "massive_ratio": 10.0, "artifact_ratio": 3.0}),
    (2, 41, 8, 41, {"num_prefix": 2, "massive_ratio": 10.0, "artifact_ratio": 3.0}),  # artifacts fill in last
    (2, 100, 8, 10, {"method": "grid"}),
    (2, 257, 8, 64, {"method": "grid", "num_prefix": 1, "massive_ratio": 10.0, "artifact_ratio": 3.0}),
    (1, 64, 8, 64, {"method": "grid", "num_prefix": 3}),  # grid with m = N
    (2, 20, 4, 20, {"num_prefix": 0, "massive_ratio": 0.5}),  # everything guaranteed (ratio below 1)
]


@pytest.mark.parametrize("b,n,d,m,kwargs", LANDMARK_CASES)
def test_landmarks_match_pytorch(lib, b, n, d, m, kwargs):
    g = torch.Generator().manual_seed(b * 1000 + n * 10 + m)
    features = torch.randn(b, n, d, generator=g)
    if "massive_ratio" in kwargs or "artifact_ratio" in kwargs:
        kwargs = {**kwargs, "scores": _scores(b, n, g)}
    want = select_landmarks(features, m, **kwargs)
    got = lib.select_landmarks(features, m, **kwargs)
    assert got.dtype == torch.int32 and got.shape == (b, m)
    assert torch.equal(got, want), (got, want)
    if m == n:  # every token exactly once
        assert torch.equal(got.sort(dim=1).values, torch.arange(n, dtype=torch.int32).expand(b, n))


def test_landmarks_fp16_features_match(lib):
    g = torch.Generator().manual_seed(7)
    features = torch.randn(2, 150, 16, generator=g).half()
    assert torch.equal(lib.select_landmarks(features, 30, num_prefix=1), select_landmarks(features, 30, num_prefix=1))


def test_landmarks_duplicate_tokens_tie_to_lowest_index(lib):
    base = torch.randn(1, 10, 4)
    features = torch.cat([base, base], dim=1)  # tokens i and i + 10 identical
    want = select_landmarks(features, 20)
    assert torch.equal(lib.select_landmarks(features, 20), want)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


NYSTROM_CASES = [
    # (B, H, N, d, dv, m, scale, iters)
    (1, 1, 16, 8, 8, 4, None, 6),
    (2, 3, 150, 32, 32, 24, None, 6),
    (1, 2, 200, 64, 64, 64, 0.1, 6),
    (2, 2, 77, 40, 40, 13, None, 3),  # generic head dim, odd sizes
    (1, 2, 90, 16, 24, 9, None, 6),  # dv != d
    (2, 1, 48, 16, 16, 48, None, 6),  # m = N
    (1, 1, 33, 8, 8, 5, None, 0),  # no Newton-Schulz step: Z = Z0
]


@pytest.mark.parametrize("b,h,n,d,dv,m,scale,iters", NYSTROM_CASES)
def test_nystrom_matches_pytorch(lib, b, h, n, d, dv, m, scale, iters):
    g = torch.Generator().manual_seed(n + m)
    q, k = (torch.randn(b, h, n, d, generator=g) for _ in range(2))
    v = torch.randn(b, h, n, dv, generator=g)
    idx = select_landmarks(q.mean(1), m)
    want = nystrom_attention(q, k, v, idx, scale=scale, pinv_iters=iters)
    got = lib.nystrom_attention(q, k, v, idx, scale=scale, pinv_iters=iters)
    assert got.shape == want.shape and got.dtype == torch.float32
    assert _rel(got, want) <= 1e-4


def test_nystrom_with_all_tokens_is_dense_attention(lib):
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 2, 24, 16, generator=g) * 0.5 for _ in range(3))
    idx = torch.stack([torch.randperm(24, generator=g) for _ in range(2)]).int()
    got = lib.nystrom_attention(q, k, v, idx, pinv_iters=30)
    dense = torch.softmax(q.double() @ k.double().transpose(-1, -2) / 4.0, dim=-1) @ v.double()
    assert _rel(got, dense) <= 1e-4


def test_nystrom_int64_idx_accepted(lib):
    q = torch.randn(1, 1, 20, 8)
    idx = torch.tensor([[0, 5, 10, 15]])
    assert _rel(lib.nystrom_attention(q, q, q, idx), nystrom_attention(q, q, q, idx)) <= 1e-4
