"""fna_deploy.analyze.analysis: the model is left as found, API errors, torchvision and HF models."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fna_deploy import FNAConfig, patch, unpatch
from fna_deploy.analyze import analyze

from .conftest import images


def test_model_is_left_as_it_was(planted):
    model, x, _ = planted
    with torch.no_grad():
        before = model(x)
    analyze(model, x, landmarks=(8,), budget=1.0)
    with torch.no_grad():
        after = model(x)
    assert torch.equal(before, after)
    for module in model.modules():
        assert "forward" not in module.__dict__ and "_fna_plan" not in module.__dict__
    assert not hasattr(model, "_fna_patch")


def test_api_errors(planted):
    model, x, _ = planted
    with pytest.raises(ValueError, match="artifact_ratio"):
        analyze(model, x, massive_ratio=4, artifact_ratio=8)
    with pytest.raises(ValueError, match="budget"):
        analyze(model, x, budget=-1)
    with pytest.raises(ValueError, match="inputs"):
        analyze(model, x[0])
    with pytest.raises(ValueError, match="landmarks"):
        analyze(model, x, landmarks=(0, 8))
    with pytest.raises(ValueError, match=r"cannot run on images of shape \(3, 48, 48\)"):
        analyze(model, torch.randn(1, 3, 48, 48))
    patch(model, FNAConfig(num_landmarks=8, layers="all"))
    try:
        with pytest.raises(ValueError, match="already patched"):
            analyze(model, x)
    finally:
        unpatch(model)


def test_torchvision_model_is_analyzed():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(
        image_size=32, patch_size=4, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64
    ).eval()
    # torchvision zero-initialises the head: outputs are all 0, so analyze compares the last block's tokens
    report = analyze(model, images(2), landmarks=(8, 65), budget=1.0, config=FNAConfig(pinv_iters=20))
    assert report.settings["end_to_end_on"] == "last block output"
    assert report.num_tokens == 65 and len(report.layers) == 2
    assert all(layer.fna_error[65] < 1e-3 for layer in report.layers)
    assert report.grid == (8, 8)
    rec = report.recommendation
    assert rec.layers == [0, 1] and rec.num_landmarks == 8
    feats = []
    hook = model.encoder.layers[-1].register_forward_hook(lambda m, a, out: feats.append(out))
    try:
        with torch.no_grad():
            model(images(2))
            patch(model, rec.config())  # carries pinv_iters=20
            model(images(2))
    finally:
        unpatch(model)
        hook.remove()
    cos = F.cosine_similarity(feats[1].flatten(1).double(), feats[0].flatten(1).double(), dim=1)
    assert rec.end_to_end_error == pytest.approx(float((1 - cos).max()), rel=1e-3, abs=1e-7)


def test_hugging_face_model_is_analyzed():
    transformers = pytest.importorskip("transformers")
    from fna_deploy.patching.hf import HFVisionModel

    torch.manual_seed(0)
    config = transformers.ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=4
    )
    model = HFVisionModel(transformers.ViTModel(config).eval())
    with torch.no_grad():  # sharpen attention (random init is nearly uniform)
        for name, module in model.named_modules():
            if name.endswith(("query", "key", "q_proj", "k_proj")):
                module.weight.mul_(4.0)
    x = images(2)
    with torch.no_grad():
        before = model(x)
    report = analyze(model, x, landmarks=(16, 65), budget=1.0, config=FNAConfig(pinv_iters=20))
    assert report.settings["end_to_end_on"] == "model output"
    assert report.num_tokens == 65 and report.num_prefix == 1
    assert all(layer.fna_error[65] < 1e-3 < layer.fna_error[16] for layer in report.layers)
    with torch.no_grad():
        assert torch.equal(model(x), before)
