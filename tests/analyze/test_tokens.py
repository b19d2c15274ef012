"""fna_deploy.analyze.tokens: planted massive and artifact tokens are found, norms and sink mass match
independent computations."""

from __future__ import annotations

import pytest
import torch

from fna_deploy.analyze import analyze, classify_tokens

from ..conftest import tiny_timm
from .conftest import ARTIFACT, MASSIVE, N_TOKENS, PLANT_AFTER, block_inputs, images, qkv_of


def test_planted_tokens_found_exactly_from_the_right_layer_on(planted):
    _, _, report = planted
    assert [layer.index for layer in report.layers] == [0, 1, 2, 3]
    for layer in report.layers:
        if layer.index <= PLANT_AFTER:
            assert layer.massive_tokens == [] and layer.artifact_tokens == []
            assert layer.norm_ratio < 4
        else:
            assert layer.massive_tokens == MASSIVE
            assert layer.artifact_tokens == ARTIFACT
            assert layer.massive_stable and layer.artifact_stable
            assert layer.norm_ratio > 10


def test_norm_statistics_match_an_independent_computation(planted):
    model, x, report = planted
    for layer, hidden in zip(report.layers, block_inputs(model, x)):
        norms = hidden.norm(dim=-1)  # [I, N]
        patch_median = norms[:, 1:].sort(dim=1).values[:, (N_TOKENS - 2) // 2]
        assert layer.norm_max == pytest.approx(float(norms.max()), rel=1e-5)
        assert layer.norm_ratio == pytest.approx(float((norms.max(1).values / patch_median).max()), rel=1e-5)
        assert layer.norm_median == pytest.approx(float(patch_median.sort().values[(len(x) - 1) // 2]), rel=1e-5)


def test_sink_mass_is_the_attention_the_massive_tokens_receive(planted):
    model, x, report = planted
    hidden = block_inputs(model, x)
    for index in (0, 2):
        q, k, v, scale = qkv_of(model.blocks[index], hidden[index])
        probs = torch.softmax((q @ k.transpose(-1, -2)) * scale, dim=-1)  # [B, H, N, N]
        received = probs.mean(dim=(1, 2))  # share of all attention, per key token
        layer = report.layers[index]
        expected_sink = float(received[:, layer.massive_tokens].sum(1).mean()) if layer.massive_tokens else 0.0
        assert layer.sink_mass == pytest.approx(expected_sink, abs=1e-6)
        assert layer.prefix_mass == pytest.approx(float(received[:, 0].mean()), abs=1e-6)
        if layer.artifact_tokens:
            assert layer.artifact_mass == pytest.approx(float(received[:, layer.artifact_tokens].sum(1).mean()), abs=1e-6)


def test_real_sinks_take_the_attention_and_guaranteeing_them_lowers_the_error():
    """Planted tokens whose keys every query leans on: a true attention sink, as in trained ViTs."""
    torch.manual_seed(0)
    model = tiny_timm("vit_tiny_patch16_224", 32, patch_size=4, depth=4)
    dim = model.embed_dim
    sinks = [7, 50]
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        u = torch.zeros(dim)
        for block in model.blocks:
            block.attn.qkv.weight[: 2 * dim] *= 3.0
            e = torch.randn(dim, generator=g)
            e /= e.norm()
            block.attn.qkv.bias[:dim] = 30.0 * e  # every query leans on direction e ...
            w_k = block.attn.qkv.weight[dim : 2 * dim]
            u += w_k.T @ e / (w_k.T @ e).norm()  # ... and a token along u has a key along e
        u -= u.mean()
        u /= u.norm()

    def hook(module, args, out):
        out = out.clone()
        out[:, sinks] = 100.0 * out[:, 1:].norm(dim=-1).median() * u
        return out

    model.blocks[0].register_forward_hook(hook)
    report = analyze(model, images(3), landmarks=(8,), budget=0.0)
    assert report.layers[0].massive_tokens == [] and report.layers[0].sink_mass == 0.0
    for layer in report.layers[1:]:
        assert layer.massive_tokens == sinks
        assert layer.token_share == pytest.approx(2 / N_TOKENS)
        assert layer.sink_mass > 0.5  # two of 65 tokens take most of the attention
        assert layer.fna_error_variants["massive"][8] < 0.8 * layer.fna_error[8]


def test_unstable_tokens_are_reported_as_such():
    torch.manual_seed(0)
    model = tiny_timm("vit_tiny_patch16_224", 32, patch_size=4, depth=2)

    def hook(module, args, out):  # a different massive token in every image
        out = out.clone()
        for i in range(out.shape[0]):
            out[i, 10 + i] *= 100.0
        return out

    model.blocks[0].register_forward_hook(hook)
    report = analyze(model, images(3), landmarks=(8,), budget=0.0)
    layer = report.layers[1]
    assert layer.massive_tokens == []  # no token is massive in a majority of the images
    assert not layer.massive_stable
    massive, _ = classify_tokens(layer.norms, 1, 10.0, 4.0)
    assert [int(i) for i in massive.nonzero()[:, 1]] == [10, 11, 12]
