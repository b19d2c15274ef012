"""patch/unpatch on every supported family: exactness at m = N, unpatch bit for bit, torch.export."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import fna_deploy as fd
from fna_deploy.patching import find_adapter, is_patched
from fna_deploy.patching.hf import HFVisionModel

from ..conftest import tiny_timm

transformers = pytest.importorskip("transformers")


def sharpen(model: nn.Module, factor: float = 8.0) -> nn.Module:
    """Scale q/k projections so softmax(q k^T) is far from uniform, hence well conditioned:
    then Newton-Schulz converges and FNA with m = N must equal dense attention."""
    with torch.no_grad():
        for name, mod in model.named_modules():
            last = name.split(".")[-1]
            if isinstance(mod, nn.Linear) and last in ("q_proj", "k_proj"):
                mod.weight.mul_(factor)
                if mod.bias is not None:
                    mod.bias.mul_(factor)
            if isinstance(mod, nn.Linear) and last == "qkv":
                c = mod.weight.shape[1]
                mod.weight[: 2 * c].mul_(factor)
            if isinstance(mod, nn.MultiheadAttention):
                c = mod.embed_dim
                mod.in_proj_weight[: 2 * c].mul_(factor)
    return model


def _hf(cls_name: str, config_name: str, **extra):
    config = getattr(transformers, config_name)(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, image_size=32, patch_size=8, **extra
    )
    return HFVisionModel(getattr(transformers, cls_name)(config).eval())


def _torchvision():
    from torchvision.models.vision_transformer import VisionTransformer

    model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64).eval()
    nn.init.normal_(model.heads.head.weight)  # torchvision zero-initialises the head: outputs would all be 0
    return model


# name -> (builder, input size, expected family, expected prefix tokens)
FAMILIES = {
    "timm-vit": (lambda: tiny_timm("vit_tiny_patch16_224", img_size=64, depth=2), 64, "timm", 1),
    "timm-deit-distilled": (lambda: tiny_timm("deit_tiny_distilled_patch16_224", img_size=64, depth=2), 64, "timm", 2),
    "timm-reg4-dinov2": (lambda: tiny_timm("vit_small_patch14_reg4_dinov2", img_size=56, depth=2), 56, "timm", 5),
    "hf-vit": (lambda: _hf("ViTModel", "ViTConfig"), 32, "hf", 1),
    "hf-vit-cls": (lambda: _hf("ViTForImageClassification", "ViTConfig"), 32, "hf", 1),
    "hf-dinov2": (lambda: _hf("Dinov2Model", "Dinov2Config"), 32, "hf", 1),
    "hf-dinov2-reg": (lambda: _hf("Dinov2WithRegistersModel", "Dinov2WithRegistersConfig", num_register_tokens=2), 32, "hf", 3),
    "hf-clip": (lambda: _hf("CLIPVisionModel", "CLIPVisionConfig"), 32, "hf", 1),
    "hf-siglip": (lambda: _hf("SiglipVisionModel", "SiglipVisionConfig"), 32, "hf", 0),
    "torchvision": (_torchvision, 32, "torchvision", 1),
}


@pytest.fixture(params=sorted(FAMILIES))
def family(request):
    build, size, fam, prefix = FAMILIES[request.param]
    return request.param, build(), torch.randn(2, 3, size, size), fam, prefix


def test_detects_family_and_prefix_tokens(family):
    _name, model, _x, fam, prefix = family
    info = fd.model_info(model)
    assert info.family == fam and info.num_prefix == prefix
    assert find_adapter(model).name == fam
    assert fd.patch(model, fd.FNAConfig(num_landmarks=8)).__class__ is model.__class__
    assert is_patched(model)


def test_m_equals_n_matches_dense(family):
    name, model, x, _fam, _prefix = family
    sharpen(model)
    n = fd.model_info(model).num_tokens()
    with torch.no_grad():
        dense = model(x)
        fd.patch(model, fd.FNAConfig(num_landmarks=n, layers="all", pinv_iters=20))
        out = model(x)
    rel = ((out - dense).abs().max() / dense.abs().max()).item()
    assert rel < 1e-3, f"{name}: relative error {rel:.2e} at m = N"


def test_patch_changes_output_and_unpatch_restores_bit_for_bit(family):
    _name, model, x, _fam, _prefix = family
    state_before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        before = model(x)
        fd.patch(model, fd.FNAConfig(num_landmarks=6, layers="all"))
        patched = model(x)
        assert model.state_dict().keys() == state_before.keys()
        fd.unpatch(model)
        after = model(x)
    assert not torch.allclose(before, patched, atol=1e-6)
    assert torch.equal(before, after)
    assert not is_patched(model)
    assert all(torch.equal(state_before[k], v) for k, v in model.state_dict().items())
    fd.unpatch(model)  # a second unpatch is a no-op


def _attention_nodes(targets: list[str]) -> int:
    return sum("scaled_dot_product" in t or t.startswith("aten.softmax") or t.startswith("aten._softmax") for t in targets)


def test_torch_export_has_the_two_custom_ops(family):
    _name, model, x, _fam, _prefix = family
    with torch.no_grad():
        dense_ep = torch.export.export(model, (x,))
    dense_targets = [str(n.target) for n in dense_ep.graph.nodes if n.op == "call_function"]
    fd.patch(model, fd.FNAConfig(num_landmarks=8, layers="all"))
    with torch.no_grad():
        eager = model(x)
        ep = torch.export.export(model, (x,))
    targets = [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]
    assert targets.count("fna.landmarks.default") == 1
    assert targets.count("fna.nystrom_attention.default") == 2  # two blocks
    # both blocks' softmax attention is gone (a pooling head's own attention may remain)
    assert _attention_nodes(targets) == _attention_nodes(dense_targets) - 2
    assert torch.allclose(ep.module()(x), eager, atol=1e-5)


def test_batch_independence(family):
    _name, model, x, _fam, _prefix = family
    fd.patch(model, fd.FNAConfig(num_landmarks=8, layers="all"))
    with torch.no_grad():
        full = model(x)
        first = model(x[:1])
    assert torch.allclose(full[:1], first, atol=1e-5)


def test_deepcopy_of_patched_model_is_independent():
    model = tiny_timm()
    fd.patch(model, fd.FNAConfig(num_landmarks=8))
    clone = copy.deepcopy(model)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        for p in clone.parameters():
            p.mul_(0.5)
        assert not torch.allclose(clone(x), ref)  # the copy computes with its own weights
        fd.unpatch(clone)
        assert is_patched(model) and not is_patched(clone)
        assert torch.equal(model(x), ref)


def test_input_features_are_the_residual_stream_entering_the_block(family, monkeypatch):
    """features="input" means what it means in the official FNA code: farthest-point sampling on
    the residual stream entering the block, before its first norm (not the normalised attention
    input). The stream is recorded here by an independent forward pre-hook, and the landmarks
    are checked against the spec implementation of landmark selection."""
    from fna_deploy.patching import base as patch_base

    from ..ops.test_landmarks import spec_landmarks

    _name, model, x, _fam, prefix = family
    calls = []
    real = patch_base.select_landmarks

    def recording(features, m, **kwargs):
        calls.append(features.detach().clone())
        return real(features, m, **kwargs)

    monkeypatch.setattr(patch_base, "select_landmarks", recording)
    blocks = find_adapter(model).blocks(model)
    layer = len(blocks) - 1
    captured = []

    def hook(module, args, kwargs):
        hidden = args[0] if args else next(v for v in kwargs.values() if isinstance(v, torch.Tensor))
        captured.append((hidden[0] if isinstance(hidden, tuple) else hidden).detach().clone())

    handle = blocks[layer].register_forward_pre_hook(hook, with_kwargs=True)
    m = 6
    fd.patch(model, fd.FNAConfig(num_landmarks=m, layers=[layer], features="input"))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
        fd.unpatch(model)
    assert len(calls) == 1 and len(captured) == 1
    residual = captured[0]
    assert calls[0].shape == residual.shape and torch.equal(calls[0], residual)
    expected = spec_landmarks(residual, m, num_prefix=prefix)
    assert torch.equal(real(residual, m, num_prefix=prefix), expected)
