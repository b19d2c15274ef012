"""What patch() does inside a forward: which layers, which landmarks, which scores; its errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fna_deploy as fd
from fna_deploy.ops import nystrom_attention, select_landmarks
from fna_deploy.patching import base as patch_base
from fna_deploy.patching import patch_record

from ..conftest import tiny_timm


@pytest.fixture
def spy(monkeypatch):
    """Record every select_landmarks call the patched layers make: (kwargs, scores, idx)."""
    calls = []

    def recording(features, num_landmarks, **kwargs):
        idx = select_landmarks(features, num_landmarks, **kwargs)
        calls.append({"features": features, "m": num_landmarks, **kwargs, "idx": idx})
        return idx

    monkeypatch.setattr(patch_base, "select_landmarks", recording)
    return calls


def test_only_chosen_layers_change(spy):
    model = tiny_timm(depth=4)
    x = torch.randn(2, 3, 64, 64)
    fd.patch(model, fd.FNAConfig(num_landmarks=8, layers="2-3"))
    record = patch_record(model)
    assert record.layers == [2, 3] and record.num_prefix == 1
    assert [b.attn.__dict__.get("forward") is not None for b in model.blocks] == [False, False, True, True]
    with torch.no_grad():
        model(x)
    assert len(spy) == 1  # landmarks chosen once, at block 2, reused by block 3


def test_fna_layer_equals_the_formula_on_its_own_inputs(spy):
    """The last block, patched, computes x + proj(nystrom(q, k, v, fps(mean_h q))) + MLP."""
    model = tiny_timm(depth=2)
    x = torch.randn(2, 3, 64, 64)
    captured = {}
    model.blocks[1].register_forward_pre_hook(lambda mod, args: captured.setdefault("x", args[0]))
    fd.patch(model, fd.FNAConfig(num_landmarks=7, layers=[1]))
    with torch.no_grad():
        model.forward_features(x)
        h = captured["x"]
        block = model.blocks[1]
        attn = block.attn
        b, n, c = h.shape
        y = block.norm1(h)
        qkv = y @ attn.qkv.weight.T + attn.qkv.bias
        q, k, v = qkv.reshape(b, n, 3, attn.num_heads, c // attn.num_heads).permute(2, 0, 3, 1, 4)
        idx = select_landmarks(q.mean(1), 7, num_prefix=1)
        a = nystrom_attention(q, k, v, idx).transpose(1, 2).reshape(b, n, c)
        h2 = h + block.ls1(attn.proj(a))
        expected = h2 + block.ls2(block.mlp(block.norm2(h2)))
        actual = block(h)
    assert torch.equal(spy[-1]["idx"], idx)
    assert torch.allclose(actual, expected, atol=1e-5)


def test_resample_every_layer_selects_in_each(spy):
    model = tiny_timm(depth=4)
    fd.patch(model, fd.FNAConfig(num_landmarks=8, layers="all", resample_every_layer=True))
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    assert len(spy) == 4
    ep = torch.export.export(model, (torch.randn(1, 3, 64, 64),))
    targets = [str(n.target) for n in ep.graph.nodes]
    assert targets.count("fna.landmarks.default") == 4


@pytest.mark.parametrize("features", ["q", "k", "v", "input"])
def test_features_choice(spy, features):
    model = tiny_timm(depth=2)
    fd.patch(model, fd.FNAConfig(num_landmarks=8, layers=[1], features=features))
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    width = model.embed_dim if features == "input" else model.blocks[0].attn.head_dim
    assert spy[0]["features"].shape == (1, 17, width)


def test_planted_massive_token_becomes_a_landmark(spy):
    model = tiny_timm(depth=4)
    planted = 9

    def plant(module, args, output):  # after block 0: one patch token with a huge norm
        output = output.clone()
        output[:, planted] *= 200.0
        return output

    model.blocks[0].register_forward_hook(plant)
    x = torch.randn(2, 3, 64, 64)
    fd.patch(model, fd.FNAConfig(num_landmarks=4, layers="2-3", massive_ratio=10.0))
    with torch.no_grad():
        model(x)
    call = spy[0]
    assert call["massive_ratio"] == 10.0
    # the scores are the norms of the residual stream entering block 2 (the first FNA layer)
    captured = {}
    hook = model.blocks[2].register_forward_pre_hook(lambda m, a: captured.setdefault("x", a[0].clone()))
    with torch.no_grad():
        model(x)
    hook.remove()
    assert torch.allclose(call["scores"], captured["x"].norm(dim=-1))
    assert call["idx"][:, :2].tolist() == [[0, planted], [0, planted]]

    spy.clear()
    fd.patch(model, fd.FNAConfig(num_landmarks=4, layers="2-3", massive_ratio=0, artifact_ratio=10.0))
    with torch.no_grad():
        model(x)
    assert planted not in spy[0]["idx"].flatten().tolist()  # now an excluded artifact


def test_num_prefix_override(spy):
    model = tiny_timm(depth=2)
    fd.patch(model, fd.FNAConfig(num_landmarks=8, layers=[1], num_prefix=3))
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    assert spy[0]["num_prefix"] == 3 and spy[0]["idx"][0, :3].tolist() == [0, 1, 2]


def test_patching_twice_applies_only_the_new_config():
    model = tiny_timm(depth=4)
    x = torch.randn(1, 3, 64, 64)
    fd.patch(model, fd.FNAConfig(num_landmarks=8, layers="all"))
    fd.patch(model, fd.FNAConfig(num_landmarks=8, layers=[3]))
    assert [("forward" in b.attn.__dict__) for b in model.blocks] == [False, False, False, True]
    with torch.no_grad():
        once = model(x)
        fd.unpatch(model)
        fd.patch(model, fd.FNAConfig(num_landmarks=8, layers=[3]))
        assert torch.equal(model(x), once)


def test_default_config_patches_second_half():
    model = tiny_timm(depth=6, img_size=160)  # 100 patches: room for the default 64 landmarks
    fd.patch(model)
    assert patch_record(model).layers == [3, 4, 5]


class NotAViT(nn.Module):
    def forward(self, x):
        return x


@pytest.mark.parametrize(
    "model, config, error, message",
    [
        (NotAViT(), fd.FNAConfig(), fd.UnsupportedModelError, "NotAViT is not a supported model; fna-deploy patches: timm"),
        (nn.Linear(2, 2), fd.FNAConfig(), ValueError, "Linear is not a supported model"),
        (None, fd.FNAConfig(), ValueError, "expected a torch.nn.Module"),
        ("tiny", fd.FNAConfig(layers="0-4"), ValueError, "block index 4 is out of range; this model has 4 blocks"),
        ("tiny", fd.FNAConfig(num_landmarks=18), ValueError, "18 landmarks is more than the 17 tokens"),
        ("tiny", fd.FNAConfig(num_landmarks=4, num_prefix=4), ValueError, None),
        ("tiny", {"num_landmarks": 4}, ValueError, "config must be an FNAConfig"),
    ],
)
def test_errors(model, config, error, message):
    if model == "tiny":
        model = tiny_timm(depth=4)
    if message is None:  # num_prefix == m is allowed: every landmark is a prefix token
        fd.patch(model, config)
        return
    with pytest.raises(error, match=message):
        fd.patch(model, config)
    if isinstance(model, nn.Module):
        assert patch_record(model) is None


def test_unsupported_attention_module_is_refused_and_nothing_is_left_patched():
    model = tiny_timm(depth=4)
    model.blocks[3].attn = nn.Identity()
    with pytest.raises(fd.UnsupportedModelError, match="block 3 .* uses attention Identity"):
        fd.patch(model, fd.FNAConfig(num_landmarks=8, layers="all"))
    assert all("forward" not in b.attn.__dict__ for b in model.blocks)
    assert patch_record(model) is None


def test_wrong_resolution_at_run_time_says_so():
    model = tiny_timm(depth=2)
    model.patch_embed.strict_img_size = False
    model.pos_embed = nn.Parameter(model.pos_embed[:, :5])  # pretend a tiny 32px model
    fd.patch(model, fd.FNAConfig(num_landmarks=16, layers=[1]))
    with pytest.raises(ValueError, match="num_landmarks=16 is more than the 5 tokens"):
        with torch.no_grad():
            model.blocks[1](torch.randn(1, 5, model.embed_dim))
