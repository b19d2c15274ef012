"""fna-deploy export through click's CliRunner and a real subprocess; every bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import onnx
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from fna_deploy.cli import cli
from fna_deploy.export import check as check_module

from ..conftest import tiny_timm

MODEL = ["timm:vit_tiny_patch16_224", "--resolution", "64", "--landmarks", "8", "-q"]


def invoke(*args):
    return CliRunner().invoke(cli, ["export", *args], catch_exceptions=False)


def test_export_writes_model_and_report(tmp_path):
    out, report = tmp_path / "m.onnx", tmp_path / "r.json"
    result = invoke(*MODEL, "--layers", "10-11", "--massive-ratio", "20", "-o", str(out), "--report", str(report))
    assert result.exit_code == 0, result.output
    assert "FnaLandmarks x1, NystromAttention x2" in result.output and "parity, batch 2" in result.output
    data = json.loads(report.read_text())
    assert data["passed"] and data["config"]["massive_ratio"] == 20.0 and data["fna_layers"] == [10, 11]
    assert data["tokens"] == 17
    onnx.checker.check_model(onnx.load(out), full_check=True)


def test_default_output_name_and_arch_weights(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_timm().state_dict().items()}, str(weights))
    result = invoke(str(weights), "--arch", "timm:vit_tiny_patch16_224", "--resolution", "64", "--landmarks", "8", "-q",
                    "--target", "trt", "--batch", "2", "--no-check")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "vit_tiny_patch16_224_fna_trt.onnx").exists()
    assert "not checked" in result.output


def test_failed_check_exits_1_and_keeps_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(check_module, "FP32_TOL", 0.0)
    out = tmp_path / "m.onnx"
    result = invoke(*MODEL, "-o", str(out))
    assert result.exit_code == 1
    assert "parity check failed: output 'output' at batch 1" in result.output
    assert f"kept at {out}" in result.output and out.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["timm:nope", "-q"], "timm has no model named 'nope'"),
        (["missing.pt2", "-q"], "'missing.pt2' does not exist"),
        (["timm:vit_tiny_patch16_224", "--resolution", "64", "--landmarks", "8", "--layers", "0-12", "-q"], "block index 12 is out of range; this model has 12 blocks"),
        (["timm:vit_tiny_patch16_224", "--resolution", "64", "--landmarks", "40", "-q"], "40 landmarks is more than the 17 tokens"),
        (["timm:vit_tiny_patch16_224", "--massive-ratio", "0.5", "-q"], "massive_ratio: 0.5 would guarantee tokens below the median"),
        (["timm:vit_tiny_patch16_224", "--batch", "2", "--dynamic-batch", "-q"], "give one of them"),
        (["timm:vit_tiny_patch16_224", "-o", "model.txt", "-q"], "should end in .onnx"),
        (["timm:vit_tiny_patch16_224", "-o", "/nonexistent-dir/m.onnx", "-q"], "output directory does not exist: /nonexistent-dir"),
    ],
)
def test_bad_input_is_one_sentence(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke(*args)
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and message in lines[-1], result.output
    assert "Traceback" not in result.output
    assert not list(tmp_path.glob("*.onnx"))


def test_pickle_refused_with_reason(tmp_path):
    torch.save(tiny_timm(depth=1), tmp_path / "whole.pt")
    result = invoke(str(tmp_path / "whole.pt"), "-o", str(tmp_path / "m.onnx"), "-q")
    assert result.exit_code == 2
    assert "unpickling runs whatever code the file carries" in result.output and "--allow-pickle" in result.output
    assert not (tmp_path / "m.onnx").exists()


def test_unwritable_output(tmp_path, monkeypatch):
    # the permission bits are not enforced for root, so simulate a read-only folder
    from fna_deploy.export import graph

    monkeypatch.setattr(graph.os, "access", lambda path, mode: False)
    result = invoke(*MODEL, "-o", str(tmp_path / "m.onnx"))
    assert result.exit_code == 2
    assert f"error: output directory is not writable: {tmp_path}" in result.output
    assert not list(tmp_path.iterdir())


def test_real_subprocess(tmp_path):
    out = tmp_path / "m.onnx"
    proc = subprocess.run(
        [sys.executable, "-m", "fna_deploy.cli", "export", *MODEL, "--layers", "11", "-o", str(out), "--fp16"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "(fp16)" in proc.stdout and out.exists()
    bad = subprocess.run([sys.executable, "-m", "fna_deploy.cli", "export", "timm:nope"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip().endswith("timm.list_models('*vit*'))\"") and "Traceback" not in bad.stderr
