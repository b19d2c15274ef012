"""fna_deploy.analyze.recommend: the recommended config meets the budget, its flags export."""

from __future__ import annotations

import pytest
import torch

from fna_deploy import parse_layers
from fna_deploy.analyze import analyze, export_flags

from ..conftest import tiny_timm
from .conftest import LANDMARKS, end_to_end, images, sharp_model


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


def test_below_the_break_even_or_with_a_small_saving_the_advice_is_dense(planted):
    """N=65 is far below the ~800 tokens where FNA broke even on CPU: stay dense, say why, still
    report the best config; no speedup range below the break-even (the measured share of the FLOP
    bound, 0.85-1.15, holds only above it)."""
    model, x, report = planted
    rec = report.recommendation
    assert report.settings["break_even_tokens"] == 800 and report.settings["min_saving"] == 0.10
    assert rec.advice == "dense" and not rec.uses_fna and rec.layers  # the best config is kept
    assert f"{report.num_tokens} tokens is below the measured break-even of about 800 tokens" in rec.reason
    bound = rec.flops_dense / rec.flops_fna
    # one verdict (issue 21): below the break-even no speedup is promised beside "keep it dense"
    assert rec.expected_speedup is None and rec.to_dict()["expected_speedup"] is None
    assert "would run at" not in rec.reason and f"FLOP bound of {bound:.2f}x is not reached" in rec.reason

    # the same search with the checks off: FNA is advised, with the same config
    on = analyze(model, x, landmarks=(8,), budget=1.0, massive_ratio=0, break_even_tokens=0, min_saving=0).recommendation
    assert on.advice == "fna" and on.uses_fna and "expected speedup" in on.reason
    # a saving below min_saving: dense, and the reason names the saving
    small = analyze(model, x, landmarks=(8,), budget=1.0, massive_ratio=0, break_even_tokens=0, min_saving=0.99).recommendation
    assert small.advice == "dense" and small.layers == on.layers
    low, high = small.expected_speedup  # above the break-even the range is quoted, and called too little
    assert f"would run at {low:.2f}-{high:.2f}x of dense, too little" in small.reason
    assert f"saves only {100 * on.flops_saving:.1f}% of the blocks' FLOPs (less than 99%)" in small.reason
    with pytest.raises(ValueError, match="min_saving"):
        analyze(model, x, min_saving=1.5)
    with pytest.raises(ValueError, match="break_even_tokens"):
        analyze(model, x, break_even_tokens=-1)
