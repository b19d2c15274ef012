"""select_landmarks against a plain per-image Python implementation of the contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fna_deploy.ops import select_landmarks


def spec_landmarks(features, m, num_prefix=0, scores=None, massive_ratio=0.0, artifact_ratio=0.0, method="fps"):
    """The contract read literally, one image at a time, with Python lists (float64 distances)."""
    out = []
    feats = features.double().numpy()
    for b in range(feats.shape[0]):
        f = feats[b]
        n = f.shape[0]
        guaranteed = list(range(num_prefix))
        artifacts: list[int] = []
        if scores is not None and (massive_ratio > 0 or artifact_ratio > 0) and num_prefix < n:
            s = scores[b].float().numpy()
            rest = sorted(s[num_prefix:].tolist())
            med = rest[(len(rest) - 1) // 2]
            if massive_ratio > 0:
                guaranteed += [i for i in range(num_prefix, n) if s[i] >= np.float32(massive_ratio) * np.float32(med)]
            if artifact_ratio > 0:
                artifacts = [
                    i for i in range(n) if i not in guaranteed and s[i] >= np.float32(artifact_ratio) * np.float32(med)
                ]
        eligible = [i for i in range(n) if i not in guaranteed and i not in artifacts]
        chosen = guaranteed[:m]
        need = m - len(chosen)
        if method == "grid":
            k, e = need, len(eligible)
            if k > 0:
                if e <= k:
                    chosen += eligible
                else:
                    chosen += [eligible[(j * e) // k] for j in range(k)]
        else:
            remaining = list(eligible)
            min_d = {i: np.inf for i in remaining}
            while need > 0 and remaining:
                best = max(remaining, key=lambda i: (min_d[i], -i))
                chosen.append(best)
                remaining.remove(best)
                need -= 1
                for i in remaining:
                    min_d[i] = min(min_d[i], float(((f[i] - f[best]) ** 2).sum()))
        chosen += artifacts[: m - len(chosen)]
        out.append(chosen)
    return torch.tensor(out, dtype=torch.int32)


def test_fps_greedy_order_on_a_line():
    # points 0..9 on a line, squared distances. Start at 0; farthest is 9 (81); then 4 and 5
    # tie at 16 -> lowest index 4; then 2, 6 and 7 tie at 4 -> 2.
    x = torch.arange(10, dtype=torch.float32).reshape(1, 10, 1)
    assert select_landmarks(x, 4).tolist() == [[0, 9, 4, 2]]
    assert spec_landmarks(x, 4).tolist() == [[0, 9, 4, 2]]


def test_fps_exact_small_example():
    pts = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [5.0, 5.0], [0.0, 3.0], [4.0, 0.0], [5.0, 4.0]]])
    # start at 0; farthest from (0,0): (5,5) d=50 -> 2; then min dists: 1: 1, 3: min(9,29)=9, 4: min(16,34)=16, 5: min(41,1)=1 -> 4
    # then: 1: min(1,...)=1, 3: min(9, 29, 25)=9, 5: min(41,1,17)=1 -> 3
    assert select_landmarks(pts, 4).tolist() == [[0, 2, 4, 3]]


def test_prefix_tokens_first_and_in_order():
    x = torch.randn(3, 50, 8)
    idx = select_landmarks(x, 10, num_prefix=5)
    assert idx.dtype == torch.int32 and idx.shape == (3, 10)
    assert (idx[:, :5] == torch.arange(5, dtype=torch.int32)).all()
    for row in idx.tolist():
        assert len(set(row)) == 10
        assert all(i >= 5 for i in row[5:])


def test_massive_tokens_guaranteed_and_artifacts_excluded():
    torch.manual_seed(1)
    b, n = 2, 40
    x = torch.randn(b, n, 6)
    scores = torch.rand(b, n) + 1.0
    scores[0, 7] = 100.0  # massive in image 0
    scores[1, 30] = 100.0  # massive in image 1
    scores[0, 20] = 8.0  # artifact in image 0 (>= 5 x median, < 20 x median)
    scores[1, 3] = 8.0
    idx = select_landmarks(x, 8, num_prefix=1, scores=scores, massive_ratio=20.0, artifact_ratio=5.0)
    assert idx[0, :2].tolist() == [0, 7]
    assert idx[1, :2].tolist() == [0, 30]
    assert 20 not in idx[0].tolist() and 3 not in idx[1].tolist()
    assert idx.tolist() == spec_landmarks(x, 8, 1, scores, 20.0, 5.0).tolist()


def test_guaranteed_tokens_truncated_to_m():
    x = torch.randn(1, 20, 4)
    scores = torch.ones(1, 20)
    scores[0, [3, 5, 9, 11, 13]] = 50.0
    idx = select_landmarks(x, 4, num_prefix=1, scores=scores, massive_ratio=10.0)
    assert idx.tolist() == [[0, 3, 5, 9]]


def test_excluded_tokens_fill_when_eligible_run_out():
    x = torch.randn(1, 20, 4)
    scores = torch.ones(1, 20)
    scores[0, 2:11] = 10.0  # 9 artifacts (median stays 1); eligible = {1, 11..19}
    idx = select_landmarks(x, 15, num_prefix=1, scores=scores, artifact_ratio=5.0)
    row = idx[0].tolist()
    assert row[0] == 0 and sorted(row[1:11]) == [1] + list(range(11, 20))
    assert row[11:] == [2, 3, 4, 5]  # artifacts fill in, in index order
    assert row == spec_landmarks(x, 15, 1, scores, 0.0, 5.0)[0].tolist()


def test_m_equals_n_is_a_permutation():
    x = torch.randn(2, 17, 5)
    idx = select_landmarks(x, 17, num_prefix=2)
    for row in idx.tolist():
        assert sorted(row) == list(range(17))


def test_grid_is_evenly_spaced():
    x = torch.randn(1, 21, 3)
    idx = select_landmarks(x, 5, num_prefix=1, method="grid")
    assert idx.tolist() == [[0, 1, 6, 11, 16]]
    assert idx.tolist() == spec_landmarks(x, 5, 1, method="grid").tolist()


def test_batch_independence():
    x = torch.randn(4, 33, 8)
    scores = torch.rand(4, 33)
    full = select_landmarks(x, 9, num_prefix=1, scores=scores, massive_ratio=1.5, artifact_ratio=1.8)
    for b in range(4):
        one = select_landmarks(x[b : b + 1], 9, num_prefix=1, scores=scores[b : b + 1], massive_ratio=1.5, artifact_ratio=1.8)
        assert torch.equal(one[0], full[b])


def test_half_precision_features_use_fp32_distances():
    x = torch.randn(2, 30, 8)
    assert torch.equal(select_landmarks(x.half(), 6), select_landmarks(x.half().float(), 6))
    assert torch.equal(select_landmarks(x.bfloat16(), 6), select_landmarks(x.bfloat16().float(), 6))


@settings(max_examples=60, deadline=None)
@given(
    b=st.integers(1, 3),
    n=st.integers(1, 24),
    d=st.integers(1, 6),
    data=st.data(),
)
def test_matches_spec_fuzzed(b, n, d, data):
    m = data.draw(st.integers(1, n))
    num_prefix = data.draw(st.integers(0, min(m, n)))
    method = data.draw(st.sampled_from(["fps", "grid"]))
    use_scores = data.draw(st.booleans())
    seed = data.draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, d, generator=g)
    kwargs = {}
    if use_scores:
        scores = torch.rand(b, n, generator=g) * 4
        kwargs = dict(
            scores=scores,
            massive_ratio=data.draw(st.sampled_from([0.0, 1.5, 3.0])),
            artifact_ratio=data.draw(st.sampled_from([0.0, 1.2, 2.0])),
        )
    idx = select_landmarks(x, m, num_prefix=num_prefix, method=method, **kwargs)
    assert idx.shape == (b, m) and idx.dtype == torch.int32
    for row in idx.tolist():
        assert len(set(row)) == m and all(0 <= i < n for i in row)
    assert idx.tolist() == spec_landmarks(x, m, num_prefix, method=method, **kwargs).tolist()


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda x: select_landmarks(x, 0), "num_landmarks must be >= 1"),
        (lambda x: select_landmarks(x, 11), "more than the 10 tokens"),
        (lambda x: select_landmarks(x[0], 3), "shape \\[B, N, D\\]"),
        (lambda x: select_landmarks(x.long(), 3), "float32, float16 or bfloat16"),
        (lambda x: select_landmarks(x, 3, num_prefix=4), "do not fit"),
        (lambda x: select_landmarks(x, 3, num_prefix=-1), "num_prefix"),
        (lambda x: select_landmarks(x, 3, method="random"), "method must be one of"),
        (lambda x: select_landmarks(x, 3, massive_ratio=2.0), "need per-token scores"),
        (lambda x: select_landmarks(x, 3, scores=torch.ones(2, 9), massive_ratio=2.0), "scores must have shape"),
        (lambda x: select_landmarks(x, 3, scores=torch.ones(2, 10), artifact_ratio=-1.0), "artifact_ratio"),
        (lambda x: select_landmarks(x, 2.5), "num_landmarks must be an int"),
    ],
)
def test_bad_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call(torch.randn(2, 10, 4))


def test_torch_export_keeps_one_node_and_no_host_sync():
    class M(torch.nn.Module):
        def forward(self, x, s):
            return select_landmarks(x, 5, num_prefix=1, scores=s, massive_ratio=3.0)

    x, s = torch.randn(2, 20, 4), torch.rand(2, 20)
    batch = torch.export.Dim("batch", min=1, max=64)
    ep = torch.export.export(M(), (x, s), dynamic_shapes=({0: batch}, {0: batch}))
    targets = [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]
    assert targets == ["fna.landmarks.default"]
    x3, s3 = torch.randn(3, 20, 4), torch.rand(3, 20)
    assert torch.equal(ep.module()(x3, s3), M()(x3, s3))
