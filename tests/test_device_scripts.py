"""The GPU end-to-end script (scripts/device_e2e.py) where the CPU can run it: its plan, its time
budget, and a whole run of a tiny model; scripts/device_check.sh parses."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def e2e():
    spec = importlib.util.spec_from_file_location("device_e2e", ROOT / "scripts" / "device_e2e.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


TINY = ["--device", "cpu", "--models", "vit_tiny_patch16_224", "--resolutions", "64", "--landmarks", "8", "--iters", "1",
        "--warmup", "1"]


def test_plan_puts_the_targets_first_and_honours_skip(e2e):
    configs, skipped = e2e.plan(["vit_base_patch16_224", "vit_large_patch16_224"], [1024, 2048], [1, 8],
                                ["vit_large_patch16_224@2048/B8"])
    names = [c.name for c in configs]
    assert names[:4] == ["vit_large_patch16_224@1024/B1", "vit_large_patch16_224@1024/B8", "vit_base_patch16_224@2048/B1",
                         "vit_large_patch16_224@2048/B1"]
    assert names[4:] == ["vit_base_patch16_224@1024/B1", "vit_base_patch16_224@1024/B8", "vit_base_patch16_224@2048/B8"]
    assert [o.config.name for o in skipped] == ["vit_large_patch16_224@2048/B8"] and skipped[0].reason == "--skip"
    assert [c.target for c in configs[:4]] == [1.3, 1.3, 2.5, 3.0] and configs[4].target is None


def test_estimate_scales_from_what_ran(e2e):
    small = e2e.Config("vit_base_patch16_224", 1024, 1)
    assert e2e.estimate_seconds(small, []) is None
    done = [e2e.Outcome(small, "ran", seconds=2.0)]
    assert e2e.estimate_seconds(small, done) == pytest.approx(2.0)
    assert e2e.estimate_seconds(e2e.Config("vit_base_patch16_224", 1024, 8), done) == pytest.approx(16.0)
    # 4x the tokens: tokens^1.5 -> 8x; ViT-L: 3x
    assert e2e.estimate_seconds(e2e.Config("vit_large_patch16_224", 2048, 1), done) == pytest.approx(48.0)


def test_no_budget_skips_everything_and_says_so(e2e, tmp_path):
    rc = e2e.main([*TINY, "--batches", "1,2", "--budget-s", "0", "--out", str(tmp_path)])
    assert rc == 0
    data = json.loads((tmp_path / "e2e.json").read_text())
    assert [o["status"] for o in data["outcomes"]] == ["skipped", "skipped"]
    assert all(o["reason"].startswith("time budget: ") for o in data["outcomes"])
    assert "Not run:" in (tmp_path / "e2e.md").read_text()


def test_tiny_run_on_cpu(e2e, tmp_path, capsys):
    rc = e2e.main([*TINY, "--batches", "1", "--out", str(tmp_path)])
    assert rc == 0
    data = json.loads((tmp_path / "e2e.json").read_text())
    assert data["device"] == "cpu" and data["dtype"] == "fp32" and data["kernels_ok"] is True and data["failed"] == []
    (outcome,) = data["outcomes"]
    assert outcome["status"] == "ran" and outcome["seconds"] > 0
    (row,) = outcome["rows"]
    assert row["fna_ops"] == "PyTorch reference ops" and row["kernels_vs_reference_rel_l2"] is None
    assert row["tokens"] == 17 and row["m"] == 8 and row["speedup"] > 0 and 0.5 < row["cosine_vs_dense"] <= 1 + 1e-9
    assert row["target"] is None and row["target_met"] is None
    assert outcome["report"]["layers"] == "1-11"  # FNA on blocks 1-end of the 12
    table = (tmp_path / "e2e.md").read_text()
    assert "| vit_tiny_patch16_224 | 64 | 17 | 1 | 8 | PyTorch reference ops |" in table
    assert table in capsys.readouterr().out  # printed last


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_cuda_without_gpu_is_refused(e2e, tmp_path, capsys):
    assert e2e.main(["--device", "cuda", "--out", str(tmp_path)]) == 2
    assert "PyTorch sees no CUDA GPU here" in capsys.readouterr().err
    assert not (tmp_path / "e2e.json").exists()


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_device_check_parses():
    subprocess.run(["bash", "-n", str(ROOT / "scripts" / "device_check.sh")], check=True)
