"""nystrom_attention against an independent float64 formula, and m = N against dense attention."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fna_deploy.ops import dense_attention, newton_schulz_pinv, nystrom_attention, select_landmarks


def _softmax(x):
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def formula(q, k, v, idx, scale=None, iters=6):
    """The contract in numpy float64, one (image, head) at a time."""
    q, k, v = (t.double().numpy() for t in (q, k, v))
    b, h, n, d = q.shape
    s = scale if scale else d**-0.5
    out = np.zeros((b, h, n, v.shape[-1]))
    for bi in range(b):
        sel = idx[bi].long().numpy()
        for hi in range(h):
            qp, kp = q[bi, hi, sel], k[bi, hi, sel]
            a = _softmax(s * qp @ kp.T)
            z = a.T / a.sum(0).max()
            eye = np.eye(len(sel))
            for _ in range(iters):
                az = a @ z
                z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
            bv = _softmax(s * qp @ k[bi, hi].T) @ v[bi, hi]
            out[bi, hi] = _softmax(s * q[bi, hi] @ kp.T) @ (z @ bv)
    return torch.from_numpy(out)


def _qkv(b=2, h=3, n=40, d=16, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, h, n, d, generator=g).to(dtype) for _ in range(3)]


@pytest.mark.parametrize("iters", [0, 1, 6])
def test_matches_formula(iters):
    q, k, v = _qkv()
    idx = select_landmarks(q.mean(1), 12, num_prefix=1)
    out = nystrom_attention(q, k, v, idx, pinv_iters=iters)
    ref = formula(q, k, v, idx, iters=iters)
    assert out.dtype == torch.float32 and out.shape == q.shape
    err = (out.double() - ref).abs().max() / ref.abs().max()
    assert err < 1e-4


def test_custom_scale():
    q, k, v = _qkv(n=24)
    idx = select_landmarks(q.mean(1), 8)
    out = nystrom_attention(q, k, v, idx, scale=0.05)
    ref = formula(q, k, v, idx, scale=0.05)
    assert torch.allclose(out.double(), ref, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(out, nystrom_attention(q, k, v, idx), atol=1e-3)


def test_m_equals_n_reproduces_dense_attention():
    # keys close to the queries make softmax(q k^T) well conditioned, so Newton-Schulz converges
    g = torch.Generator().manual_seed(3)
    q = torch.randn(2, 4, 32, 32, generator=g)
    k = q + 0.1 * torch.randn(q.shape, generator=g)
    v = torch.randn(q.shape, generator=g)
    idx = select_landmarks(q.mean(1), 32, num_prefix=1)
    out = nystrom_attention(q, k, v, idx, pinv_iters=40)
    dense = dense_attention(q, k, v)
    assert (out - dense).abs().max() < 1e-4


def test_pinv_matches_moore_penrose():
    a = torch.softmax(4 * torch.randn(3, 10, 10, dtype=torch.float64), -1)
    z = newton_schulz_pinv(a, 60)
    assert z.dtype == torch.float32
    assert torch.allclose(z.double(), torch.linalg.pinv(a), atol=1e-3, rtol=1e-3)


def test_error_falls_with_more_landmarks():
    q, k, v = _qkv(b=1, h=2, n=64, d=16, seed=5)
    dense = dense_attention(q, k, v)
    errs = []
    for m in (8, 32, 64):
        idx = select_landmarks(q.mean(1), m)
        out = nystrom_attention(q, k, v, idx, pinv_iters=20)
        errs.append(((out - dense).norm() / dense.norm()).item())
    assert errs[0] > errs[1] > errs[2]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_io(dtype):
    q, k, v = _qkv(n=48)
    idx = select_landmarks(q.mean(1), 16)
    ref = nystrom_attention(q, k, v, idx)
    out = nystrom_attention(q.to(dtype), k.to(dtype), v.to(dtype), idx)
    assert out.dtype == dtype
    cos = torch.nn.functional.cosine_similarity(out.float().flatten(), ref.flatten(), dim=0)
    assert cos > 0.999


def test_batch_independence():
    q, k, v = _qkv(b=3)
    idx = select_landmarks(q.mean(1), 10)
    full = nystrom_attention(q, k, v, idx)
    for b in range(3):
        one = nystrom_attention(q[b : b + 1], k[b : b + 1], v[b : b + 1], idx[b : b + 1])
        assert torch.allclose(one[0], full[b], atol=1e-6)


def test_int64_indices_accepted():
    q, k, v = _qkv()
    idx = select_landmarks(q.mean(1), 10)
    assert torch.equal(nystrom_attention(q, k, v, idx), nystrom_attention(q, k, v, idx.long()))


@settings(max_examples=30, deadline=None)
@given(
    b=st.integers(1, 2),
    h=st.integers(1, 3),
    n=st.integers(2, 30),
    d=st.sampled_from([1, 3, 8, 16]),
    dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16]),
    data=st.data(),
)
def test_shapes_and_dtypes_fuzzed(b, h, n, d, dtype, data):
    m = data.draw(st.integers(1, n))
    q, k, v = _qkv(b, h, n, d, seed=data.draw(st.integers(0, 1000)))
    idx = select_landmarks(q.mean(1), m)
    out = nystrom_attention(q.to(dtype), k.to(dtype), v.to(dtype), idx)
    assert out.shape == (b, h, n, d) and out.dtype == dtype
    assert torch.isfinite(out.float()).all()
    if dtype == torch.float32:
        ref = formula(q, k, v, idx)
        assert torch.allclose(out.double(), ref, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda q, k, v, i: (q[0], k, v, i), "q must have shape"),
        (lambda q, k, v, i: (q, k[:, :, :5], v, i), "k has shape"),
        (lambda q, k, v, i: (q, k, v[:, :, :5], i), "v has shape"),
        (lambda q, k, v, i: (q, k.double(), v, i), "float32, float16 or bfloat16"),
        (lambda q, k, v, i: (q, k.half(), v, i), "share one dtype"),
        (lambda q, k, v, i: (q, k, v, i.float()), "int32 or int64"),
        (lambda q, k, v, i: (q, k, v, i[0]), "idx must have shape"),
        (lambda q, k, v, i: (q, k, v, torch.zeros(2, 41, dtype=torch.int32)), "more than the 40 tokens"),
        (lambda q, k, v, i: (q, k, v, torch.zeros(2, 0, dtype=torch.int32)), "m = 0"),
    ],
)
def test_bad_arguments(mutate, message):
    q, k, v = _qkv()
    idx = torch.zeros(2, 4, dtype=torch.int32)
    with pytest.raises(ValueError, match=message):
        nystrom_attention(*mutate(q, k, v, idx))


@pytest.mark.parametrize("kwargs, message", [({"pinv_iters": -1}, "pinv_iters"), ({"scale": 0.0}, "scale"), ({"scale": float("nan")}, "scale")])
def test_bad_keywords(kwargs, message):
    q, k, v = _qkv()
    with pytest.raises(ValueError, match=message):
        nystrom_attention(q, k, v, torch.zeros(2, 4, dtype=torch.int32), **kwargs)


def test_torch_export_keeps_one_node():
    class M(torch.nn.Module):
        def forward(self, q, k, v, idx):
            return nystrom_attention(q, k, v, idx, pinv_iters=3)

    q, k, v = _qkv()
    idx = select_landmarks(q.mean(1), 10)
    ep = torch.export.export(M(), (q, k, v, idx))
    targets = [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]
    assert targets == ["fna.nystrom_attention.default"]
    assert torch.equal(ep.module()(q, k, v, idx), M()(q, k, v, idx))
