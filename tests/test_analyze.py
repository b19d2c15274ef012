"""fna-deploy analyze: token classes, per-layer FNA error, the budgeted recommendation, outputs, CLI.

Random-init models have no natural sinks, so the fixture plants them: a forward hook on block 0
scales chosen tokens of its output, so they enter block 1 and every later block with a large
norm. The query/key projections are scaled up so that attention is far from uniform (otherwise
Nystrom is nearly exact at any m and the error curves say nothing).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from fna_deploy import FNAConfig, parse_layers, patch, unpatch
from fna_deploy.analyze import (
    analyze,
    classify_tokens,
    export_flags,
    format_layers,
    write_plots,
    write_report,
)
from fna_deploy.cli import cli
from fna_deploy.ops import dense_attention, nystrom_attention, select_landmarks

from .conftest import tiny_timm

MASSIVE = [5, 40]  # planted massive tokens (x100)
ARTIFACT = [20]  # planted artifact token (x6: between the artifact ratio 4 and the massive ratio 10)
PLANT_AFTER = 0  # planted at block 0's output: they enter block 1 and stay
LANDMARKS = (8, 16, 32, 65)  # 65 = N at 32 px with 4 px patches (+ CLS)
N_TOKENS = 65


def sharp_model(depth: int = 4, plant: bool = True):
    torch.manual_seed(0)
    model = tiny_timm("vit_tiny_patch16_224", 32, patch_size=4, depth=depth)
    dim = model.embed_dim
    with torch.no_grad():
        for block in model.blocks:
            block.attn.qkv.weight[: 2 * dim] *= 3.0
    if plant:

        def hook(module, args, out):
            out = out.clone()
            out[:, MASSIVE] *= 100.0
            out[:, ARTIFACT] *= 6.0
            return out

        model.blocks[PLANT_AFTER].register_forward_hook(hook)
    return model


def images(count: int = 3) -> torch.Tensor:
    return torch.randn(count, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def planted():
    model = sharp_model()
    x = images()
    report = analyze(model, x, landmarks=LANDMARKS, budget=0.01)
    return model, x, report


def block_inputs(model, x):
    """The residual stream entering each block, recorded independently of analyze."""
    seen = []
    handles = [b.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach())) for b in model.blocks]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return seen


def qkv_of(block, hidden):
    """q, k, v [B, H, N, d] of a timm block from the residual stream entering it (by hand)."""
    attn = block.attn
    b, n, _ = hidden.shape
    with torch.no_grad():
        y = block.norm1(hidden)
        qkv = F.linear(y, attn.qkv.weight, attn.qkv.bias).reshape(b, n, 3, attn.num_heads, attn.head_dim)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    return q, k, v, attn.scale


# ------------------------------------------------------------------------------------- tokens


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


# ---------------------------------------------------------------------------------- FNA error


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


# ----------------------------------------------------------------------------- recommendation


def end_to_end(model, x, config):
    with torch.no_grad():
        ref = model(x)
        patch(model, config)
        try:
            out = model(x)
        finally:
            unpatch(model)
    return float((1 - F.cosine_similarity(out.double(), ref.double(), dim=1)).max())


def test_recommendation_meets_the_budget_and_its_flags_say_so(planted):
    model, x, report = planted
    rec = report.recommendation
    assert rec.layers and rec.num_landmarks in LANDMARKS
    config = rec.config()
    measured = end_to_end(model, x, config)
    assert measured <= 0.01
    assert rec.end_to_end_error == pytest.approx(measured, rel=1e-3, abs=1e-7)
    flags = rec.export_flags.split()
    assert flags[flags.index("--landmarks") + 1] == str(rec.num_landmarks)
    assert parse_layers(flags[flags.index("--layers") + 1], 4) == rec.layers
    if rec.massive_ratio:
        assert flags[flags.index("--massive-ratio") + 1] == "10"
    assert rec.flops_fna < rec.flops_dense and 0 < rec.flops_saving < 1
    # the winner saves at least as much as every candidate that met the budget
    assert rec.flops_saving >= max(c.flops_saving for c in report.candidates) - 1e-12


def test_recommendation_changes_with_the_budget(planted):
    model, x, _ = planted
    # massive_ratio=0: plain landmarks only, one search per m (the variants are tested elsewhere)
    none = analyze(model, x, landmarks=(8,), budget=0.0, massive_ratio=0).recommendation
    assert none.layers == [] and none.export_flags == "" and none.num_landmarks is None
    assert "budget" in none.reason
    loose = analyze(model, x, landmarks=(8, 16), budget=1.0, massive_ratio=0).recommendation
    assert loose.layers == [0, 1, 2, 3] and loose.num_landmarks == 8  # all layers, the cheapest m
    assert loose.export_flags.startswith("--landmarks 8 --layers 0-3")
    tight = analyze(model, x, landmarks=(8, 16), budget=1e-3, massive_ratio=0).recommendation
    assert loose.end_to_end_error > 1e-3  # so the tighter budget has to give something up
    assert (tight.num_landmarks, tight.layers) != (loose.num_landmarks, loose.layers)
    assert tight.flops_saving < loose.flops_saving
    if tight.layers:
        assert end_to_end(model, x, tight.config()) <= 1e-3


def test_no_saving_at_small_n_recommends_dense():
    torch.manual_seed(0)
    model = tiny_timm("vit_tiny_patch16_224", 32, depth=2)  # 16 px patches: 5 tokens
    report = analyze(model, images(2), landmarks=(4, 5, 8), budget=1.0)
    assert report.num_tokens == 5
    assert report.skipped_landmarks == {8: "more landmarks than the 5 tokens"}
    assert report.recommendation.layers == [] and "saves no FLOPs" in report.recommendation.reason
    assert report.candidates == []


def test_variants_not_reached_cost_no_extra_passes():
    model = sharp_model(depth=2, plant=False)
    report = analyze(model, images(2), landmarks=(8,), budget=0.01)
    by_variant = {c.variant: c for c in report.candidates}
    assert by_variant["massive"].evaluations == 0 and by_variant["massive+artifact"].evaluations == 0
    assert by_variant["massive"].layers == by_variant["plain"].layers
    assert report.recommendation.massive_ratio == 0 and report.recommendation.artifact_ratio == 0


def test_format_layers_and_export_flags():
    assert format_layers([2, 3, 4, 7, 9, 10]) == "2-4,7,9-10"
    assert format_layers([5]) == "5"
    assert parse_layers(format_layers([0, 2, 3, 11]), 12) == [0, 2, 3, 11]
    assert export_flags(64, range(6, 12), massive_ratio=20.0) == "--landmarks 64 --layers 6-11 --massive-ratio 20"
    assert (
        export_flags(32, [1], artifact_ratio=2.5, method="grid", pinv_iters=8, resolution=1024)
        == "--resolution 1024 --landmarks 32 --layers 1 --method grid --artifact-ratio 2.5 --pinv-iters 8"
    )


def test_export_accepts_the_recommended_flags(planted):
    """The flags parse as the real ``fna-deploy export`` options, to the recommended config."""
    export_module = pytest.importorskip("fna_deploy.commands.export")
    rec = planted[2].recommendation
    flags = export_flags(
        rec.num_landmarks, rec.layers, massive_ratio=10.0, artifact_ratio=4.0, method="grid",
        features="k", pinv_iters=9, resolution=32,
    )
    command = export_module.export
    ctx = command.make_context("export", ["timm:vit_tiny_patch16_224", *flags.split()])
    value = {opt: ctx.params[p.name] for p in command.params for opt in p.opts}  # by flag name
    assert value["--landmarks"] == rec.num_landmarks and value["--resolution"] == 32
    assert parse_layers(value["--layers"], 4) == rec.layers
    assert (value["--massive-ratio"], value["--artifact-ratio"]) == (10.0, 4.0)
    assert (value["--method"], value["--features"], value["--pinv-iters"]) == ("grid", "k", 9)


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


# ------------------------------------------------------------------------------------ outputs


def test_report_json_is_written_atomically_and_reopens(planted, tmp_path):
    _, _, report = planted
    path = write_report(report, tmp_path / "sub" / "analysis.json")
    assert sorted(p.name for p in path.parent.iterdir()) == ["analysis.json"]  # no temporary left
    data = json.loads(path.read_text())
    assert data == json.loads(json.dumps(report.to_dict()))
    assert len(data["layers"]) == 4
    for i, layer in enumerate(data["layers"]):
        assert layer["index"] == i
        for key in ("norm_median", "norm_max", "massive_tokens", "artifact_tokens", "sink_mass", "fna_error"):
            assert key in layer
        assert sorted(layer["fna_error"], key=int) == [str(m) for m in LANDMARKS]
    assert data["layers"][2]["massive_tokens"] == MASSIVE
    rec = data["recommendation"]
    for key in ("layers", "num_landmarks", "massive_ratio", "artifact_ratio", "export_flags"):
        assert key in rec
    assert rec["export_flags"] == report.recommendation.export_flags


def test_report_write_errors(planted, tmp_path):
    _, _, report = planted
    with pytest.raises(IsADirectoryError):
        write_report(report, tmp_path)


def test_plots_are_written_and_reopen(planted, tmp_path):
    pytest.importorskip("matplotlib")
    from PIL import Image

    _, _, report = planted
    files = write_plots(report, tmp_path / "plots")
    assert sorted(f.name for f in files) == ["fna_error.png", "savings.png", "token_norms.png"]
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted(f.name for f in files)
    for f in files:
        with Image.open(f) as image:
            assert image.format == "PNG" and image.size[0] > 200 and image.size[1] > 200


# ---------------------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def pickled_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "sharp.pt"
    torch.save(sharp_model(depth=2, plant=False), path)
    return path


def test_cli_writes_report_and_plots(pickled_model, tmp_path):
    pytest.importorskip("matplotlib")
    report = tmp_path / "analysis.json"
    result = CliRunner().invoke(
        cli,
        [
            "analyze", str(pickled_model), "--allow-pickle", "--random", "2", "--landmarks", "8,16,100",
            "--budget", "1", "--report", str(report), "--plot", str(tmp_path / "plots"),
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert data["num_images"] == 2 and len(data["layers"]) == 2
    assert data["skipped_landmarks"] == {"100": "more landmarks than the 65 tokens"}
    assert data["recommendation"]["export_flags"] == "--landmarks 8 --layers 0-1"
    # the printed command names the analysed model, ready to paste
    assert f"fna-deploy export {pickled_model} --allow-pickle --landmarks 8 --layers 0-1" in result.output
    assert len(list((tmp_path / "plots").glob("*.png"))) == 3


def test_cli_on_an_image_directory(tmp_path):
    from PIL import Image

    for i in range(2):
        Image.new("RGB", (40 + i * 10, 36), color=(30 * i, 100, 200)).save(tmp_path / f"img{i}.png")
    result = CliRunner().invoke(
        cli,
        ["analyze", "timm:vit_tiny_patch16_224", "--resolution", "32", "--images", str(tmp_path), "--landmarks", "2,4"],
    )
    assert result.exit_code == 0, result.output
    assert "2 image(s)" in result.output and "keep the model dense" in result.output


def test_cli_flags_carry_the_resolution_analyzed(tmp_path):
    report = tmp_path / "r.json"
    result = CliRunner().invoke(
        cli,
        ["analyze", "timm:vit_tiny_patch16_224", "--resolution", "64", "--random", "1", "--landmarks", "4",
         "--budget", "1", "--report", str(report)],
    )
    assert result.exit_code == 0, result.output
    flags = json.loads(report.read_text())["recommendation"]["export_flags"]
    assert flags.startswith("--resolution 64 --landmarks 4 --layers ")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--random", "2", "--images", "."], "exclude each other"),
        (["--landmarks", "8,x"], "'x' is not an integer"),
        (["--landmarks", "500"], "none of 500 fits"),
        (["--images", "/no/such/dir"], "/no/such/dir"),
        (["--random", "1", "--report", "."], "is a directory"),
    ],
)
def test_cli_errors_are_one_sentence(args, message):
    result = CliRunner().invoke(cli, ["analyze", "timm:vit_tiny_patch16_224", "--resolution", "32", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_cli_empty_image_directory_and_unknown_model(tmp_path):
    result = CliRunner().invoke(cli, ["analyze", "timm:vit_tiny_patch16_224", "--images", str(tmp_path)])
    assert result.exit_code == 2 and "no images" in result.output
    result = CliRunner().invoke(cli, ["analyze", "timm:no_such_vit"])
    assert result.exit_code == 2 and "no model named" in result.output


def test_cli_bare_weights_with_arch(tmp_path):
    from safetensors.torch import save_file

    weights = tmp_path / "w.safetensors"
    save_file(tiny_timm("vit_tiny_patch16_224", 32).state_dict(), str(weights))
    args = ["analyze", str(weights), "--arch", "timm:vit_tiny_patch16_224", "--resolution", "32", "--random", "1", "--landmarks", "2"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "5 tokens (32x32)" in result.output
    result = CliRunner().invoke(cli, [*args, "--checkpoint", str(weights)])
    assert result.exit_code == 2 and "--arch takes the weights from MODEL" in result.output


def test_cli_pickle_needs_consent(pickled_model):
    result = CliRunner().invoke(cli, ["analyze", str(pickled_model)])
    assert result.exit_code == 2 and "--allow-pickle" in result.output


def test_cli_subprocess(pickled_model, tmp_path):
    report = tmp_path / "r.json"
    run = subprocess.run(
        [sys.executable, "-m", "fna_deploy.cli", "analyze", str(pickled_model), "--allow-pickle", "--random", "2",
         "--landmarks", "8", "--budget", "1", "--report", str(report)],
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(report.read_text())["recommendation"]["num_landmarks"] == 8
    assert f"fna-deploy export {pickled_model} --allow-pickle --landmarks 8" in run.stdout
