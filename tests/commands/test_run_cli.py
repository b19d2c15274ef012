"""fna-deploy run: the whole chain on a small model, and its refusals."""

from __future__ import annotations

import json
import stat

import pytest
from click.testing import CliRunner

from fna_deploy.cli import cli
from fna_deploy.trt import tensorrt_version

ARGS = ["timm:vit_tiny_patch16_224", "--resolution", "64", "--landmarks", "8", "--layers", "10-11", "--bench-iters", "1"]


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    result = CliRunner().invoke(cli, ["run", *ARGS, "-o", str(out)])
    return out, result


def test_run_writes_every_artifact(chain):
    out, result = chain
    assert result.exit_code == 0, result.output
    report = json.loads((out / "run_report.json").read_text())
    assert report["passed"] is True
    assert (out / "vit_tiny_patch16_224_fna.onnx").exists() and (out / "vit_tiny_patch16_224_fna_trt.onnx").exists()
    assert report["export"]["portable"]["fna_nodes"] == {"FnaLandmarks": 1, "NystromAttention": 2}
    assert all(p["passed"] for p in report["export"]["portable"]["parity"])
    assert report["export"]["portable"]["passed"] is True
    assert report["export"]["trt"]["parity"] == [] and report["export"]["trt"]["passed"] is None  # not checked
    assert stat.S_IMODE((out / "run_report.json").stat().st_mode) == stat.S_IMODE((out / "vit_tiny_patch16_224_fna.onnx").stat().st_mode)
    pairs = {p["other"]: p for p in report["verify"]["pairs"]}
    assert pairs["onnxrt"]["passed"] and not pairs["torch-dense"]["gating"]
    assert {s["backend"] for s in report["bench"]["speedups"]} == {"torch", "onnxrt"}
    config = out / "triton" / "vit_tiny_patch16_224" / "config.pbtxt"
    assert config.exists() and report["triton"]["backend"] == "python"
    assert "engine" in result.output and "fna-deploy serve" in result.output


@pytest.mark.skipif(tensorrt_version() is not None, reason="checks the skip note shown when TensorRT is missing")
def test_run_says_why_the_engine_was_skipped(chain):
    out, result = chain
    report = json.loads((out / "run_report.json").read_text())
    # without TensorRT, auto falls back to TensorRT-RTX when installed; the missing TensorRT is named first
    why = report["skipped"]["build"]
    assert why.startswith("TensorRT is not installed")
    assert "skipped" in result.output


def test_served_model_matches_with_the_printed_infer_command(chain):
    """The summary's infer command, run against a live server on the run's repository, passes."""
    import shlex

    from ..triton.conftest import _server_binary_or_skip

    out, _result = chain
    report = json.loads((out / "run_report.json").read_text())
    command = report["infer_command"]
    assert f"--compare {out / 'weights.safetensors'} --arch timm:vit_tiny_patch16_224" in command
    assert (out / "weights.safetensors").exists()
    binary = _server_binary_or_skip()
    from fna_deploy.triton import TritonServer

    with TritonServer(out / "triton", binary=binary) as server:
        args = shlex.split(command)[1:]
        args[1] = server.http_url  # the printed command assumes the default port 8000
        result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "vs PyTorch" in result.output


def test_run_refuses_to_overwrite_a_repository(chain):
    out, _result = chain
    result = CliRunner().invoke(cli, ["run", *ARGS, "-o", str(out), "--no-bench"])
    assert result.exit_code == 2 and "already exists; pass --force" in result.output


def test_run_bad_outdir(tmp_path):
    (tmp_path / "file").write_text("x")
    result = CliRunner().invoke(cli, ["run", *ARGS, "-o", str(tmp_path / "file")])
    assert result.exit_code == 2 and "is a file" in result.output and "Traceback" not in result.output
