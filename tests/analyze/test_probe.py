"""fna_deploy.analyze.probe: the per-layer FNA error is Nystrom attention on the layer's own q, k, v."""

from __future__ import annotations

import pytest

from fna_deploy import FNAConfig
from fna_deploy.analyze import analyze
from fna_deploy.ops import dense_attention, nystrom_attention, select_landmarks

from .conftest import ARTIFACT, LANDMARKS, MASSIVE, N_TOKENS, block_inputs, qkv_of


def test_fna_error_matches_nystrom_on_the_layers_own_qkv(planted):
    model, x, report = planted
    hidden = block_inputs(model, x)
    for index in (1, 3):
        q, k, v, scale = qkv_of(model.blocks[index], hidden[index])
        dense = dense_attention(q, k, v, scale=scale)
        scores = hidden[index].norm(dim=-1)
        layer = report.layers[index]
        for m in (8, 32):
            for name, ratios in (("plain", (0.0, 0.0)), ("massive", (10.0, 0.0)), ("massive+artifact", (10.0, 4.0))):
                idx = select_landmarks(
                    q.mean(1), m, num_prefix=1, scores=scores if ratios[0] else None,
                    massive_ratio=ratios[0], artifact_ratio=ratios[1],
                )
                if ratios[0]:
                    assert set(MASSIVE) <= set(idx[0].tolist())  # guaranteed landmarks
                if ratios[1]:
                    assert not set(ARTIFACT) & set(idx[0].tolist())  # excluded
                out = nystrom_attention(q, k, v, idx, scale=scale)
                err = ((out - dense).flatten(1).norm(dim=1) / dense.flatten(1).norm(dim=1)).mean()
                got = layer.fna_error[m] if name == "plain" else layer.fna_error_variants[name][m]
                assert got == pytest.approx(float(err), rel=1e-4, abs=1e-6), (index, m, name)


def test_fna_error_falls_with_m(planted):
    _, _, report = planted
    for layer in report.layers:
        errors = [layer.fna_error[m] for m in LANDMARKS]
        assert all(a > b for a, b in zip(errors, errors[1:])), (layer.index, errors)
        assert errors[0] > 10 * errors[-1]


def test_fna_error_vanishes_at_m_equal_n_with_enough_pinv_iterations(planted):
    model, x, _ = planted
    report = analyze(model, x, landmarks=(N_TOKENS,), budget=0.0, config=FNAConfig(pinv_iters=20))
    assert report.num_tokens == N_TOKENS
    for layer in report.layers:
        assert layer.fna_error[N_TOKENS] < 1e-3
        for errors in layer.fna_error_variants.values():
            assert errors[N_TOKENS] < 1e-3


def test_landmarks_beyond_n_are_skipped_and_none_fitting_is_an_error(planted):
    model, x, _ = planted
    with pytest.raises(ValueError, match="none of 100, 200 fits"):
        analyze(model, x, landmarks=(100, 200))
