"""fna-deploy verify (polygraphy comparison) and fna-deploy bench (report, table, plot)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

import fna_deploy as fd
from fna_deploy.bench import run_bench
from fna_deploy.cli import cli
from fna_deploy.export import export_onnx
from fna_deploy.verify import pair_metrics, verify

from .conftest import tiny_timm

FNA = ["--landmarks", "8", "--layers", "1"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Weights on disk, an export of them, and an export of other weights (same architecture)."""
    root = tmp_path_factory.mktemp("verify")
    torch.manual_seed(0)
    model = tiny_timm(depth=2)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(root / "w.safetensors"))
    cfg = fd.FNAConfig(num_landmarks=8, layers=[1])
    export_onnx(model, cfg, root / "good.onnx", check=False)
    torch.manual_seed(1)
    export_onnx(tiny_timm(depth=2), cfg, root / "other.onnx", check=False)
    return root


def _invoke(root, onnx_name, *extra):
    args = ["verify", str(root / "w.safetensors"), "--arch", "timm:vit_tiny_patch16_224", "--resolution", "64", *FNA, *extra]
    if onnx_name:
        args += ["--onnx", str(root / onnx_name)]
    return CliRunner().invoke(cli, args)


def _depth2(monkeypatch):
    # the saved weights are a 2-block model: build the architecture with depth=2
    import timm

    original = timm.create_model
    monkeypatch.setattr(timm, "create_model", lambda name, **kw: original(name, **{**kw, "depth": 2}))


def test_verify_passes_on_a_correct_export(exported, tmp_path, monkeypatch):
    _depth2(monkeypatch)
    result = _invoke(exported, "good.onnx", "--random", "3", "--report", str(tmp_path / "v.json"))
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "v.json").read_text())
    assert data["passed"] is True and data["runners"] == ["torch-fna", "torch-dense", "onnxrt"]
    pairs = {p["other"]: p for p in data["pairs"]}
    assert pairs["onnxrt"]["gating"] and pairs["onnxrt"]["max_abs"] < 1e-4 and pairs["onnxrt"]["top1_agreement"] == 1.0
    assert not pairs["torch-dense"]["gating"] and pairs["torch-dense"]["max_abs"] > 0  # the approximation, reported
    for key in ("max_abs", "mean_abs", "rel_l2", "cosine", "top1_agreement", "passed", "polygraphy_passed"):
        assert key in pairs["onnxrt"]


def test_verify_fails_on_other_weights(exported, monkeypatch):
    _depth2(monkeypatch)
    result = _invoke(exported, "other.onnx")
    assert result.exit_code == 1
    assert "error: onnxrt differs from torch-fna: max abs error" in result.output


def test_verify_on_a_folder_of_images(exported, tmp_path, monkeypatch):
    from PIL import Image

    _depth2(monkeypatch)
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (80, 90, 3), dtype=np.uint8)).save(tmp_path / f"img{i}.png")
    result = _invoke(exported, "good.onnx", "--images", str(tmp_path), "--report", str(tmp_path / "v.json"))
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "v.json").read_text())["inputs"] == f"3 images from {tmp_path}"


def test_verify_bad_input(exported, tmp_path):
    result = _invoke(exported, None, "--images", str(tmp_path), "--random", "2")
    assert result.exit_code == 2 and "give one of them" in result.output


def test_verify_api_needs_a_patched_model():
    with pytest.raises(ValueError, match="needs the FNA-patched model"):
        verify(tiny_timm(depth=1), [np.zeros((1, 3, 64, 64), np.float32)])


def test_pair_metrics_against_numpy():
    ref = [np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])]
    oth = [np.array([[1.0, 2.5, 3.0], [3.0, 2.0, 4.0]])]
    m = pair_metrics(ref, oth)
    assert m["max_abs"] == 3.0 and m["mean_abs"] == pytest.approx(3.5 / 6)
    assert m["top1_agreement"] == 0.5
    assert m["rel_l2"] == pytest.approx(np.linalg.norm([0, 0.5, 0, 0, 0, 3]) / np.linalg.norm(ref[0]))


def test_bench_report_table_and_plot(tmp_path):
    loads = []

    def load(res):
        loads.append(res)
        return tiny_timm(depth=2, img_size=res)

    report = run_bench(load, model_label="tiny", resolutions=[32, 64], landmarks=[4, 8], layers="all",
                       backends=["torch", "onnxrt", "trt"], iters=2, warmup=1)
    assert loads == [32, 64]
    assert "trt" in report.skipped
    assert report.machine["fna_ops"] == "PyTorch reference ops"
    kinds = {(m.backend, m.resolution, m.variant, m.landmarks) for m in report.measurements}
    assert ("torch", 64, "fna", 8) in kinds and ("onnxrt", 32, "dense", None) in kinds
    # 32px has 5 tokens: m=8 does not fit there and is left out
    assert sorted((s.backend, s.resolution, s.landmarks) for s in report.speedups) == sorted(
        (b, r, m) for b in ("torch", "onnxrt") for r, m in ((32, 4), (64, 4), (64, 8))
    )
    for s in report.speedups:
        assert s.speedup > 0 and s.share_of_bound == pytest.approx(s.speedup / s.flop_bound, rel=1e-2)
    assert all(m.median_ms <= m.p90_ms and m.throughput > 0 for m in report.measurements)
    table = report.markdown()
    assert table.count("\n") == 1 + len(report.speedups) + len(report.skipped) and "FLOP bound" in table
    assert f"| trt | - | - | - | not run: {report.skipped['trt']} |" in table
    report.plot(tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report.write_json(tmp_path / "b.json")
    assert json.loads((tmp_path / "b.json").read_text())["speedups"][0]["flop_bound"] > 0


def test_bench_cli(tmp_path):
    result = CliRunner().invoke(cli, ["bench", "timm:vit_tiny_patch16_224", "--resolutions", "32", "--landmarks", "4", "--backends", "torch",
                                      "--iters", "1", "--layers", "11", "--report", str(tmp_path / "b.json"), "--plot", str(tmp_path / "plots")])
    assert result.exit_code == 0, result.output
    assert "| torch | 32 | 5 | 4 |" in result.output
    assert (tmp_path / "plots" / "latency.png").exists() and json.loads((tmp_path / "b.json").read_text())["measurements"]


@pytest.mark.parametrize("args, message", [
    (["--resolutions", "a,b"], "--resolutions: expected comma-separated integers"),
    (["--backends", "tensorflow"], "unknown backend 'tensorflow'"),
    (["--layers", "x-y"], "layers: cannot parse"),
    (["--resolutions", "32", "--landmarks", "64"], "fewer than every --landmarks value"),
])
def test_bench_bad_input(args, message):
    result = CliRunner().invoke(cli, ["bench", "timm:vit_tiny_patch16_224", *args])
    assert result.exit_code == 2 and message in result.output


def test_verify_reads_the_fna_config_from_the_onnx(exported, monkeypatch):
    _depth2(monkeypatch)
    args = ["verify", str(exported / "w.safetensors"), "--arch", "timm:vit_tiny_patch16_224", "--onnx", str(exported / "good.onnx")]
    result = CliRunner().invoke(cli, args)  # no FNA flags, no --resolution: both come from the file (m=8, layer 1, 64 px)
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(cli, [*args, "--landmarks", "16"])
    assert result.exit_code == 2
    assert "error: --landmarks 16 contradicts" in result.stderr and "num_landmarks=8" in result.stderr
    result = CliRunner().invoke(cli, [*args, "--layers", "0-1"])
    assert result.exit_code == 2 and "--layers 0-1 contradicts" in result.stderr
    result = CliRunner().invoke(cli, [*args, "--resolution", "96"])
    assert result.exit_code == 2 and "exported at 64 px" in result.stderr


def test_verify_engine_without_a_runtime_exits_2(exported, tmp_path):
    from fna_deploy.trt import tensorrt_version

    if tensorrt_version() is not None and torch.cuda.is_available():
        pytest.skip("TensorRT and a GPU are here: the engine would run")
    (tmp_path / "m.plan").write_bytes(b"engine bytes")
    result = _invoke(exported, None, "--engine", str(tmp_path / "m.plan"))
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: --engine {str(tmp_path / 'm.plan')!r} cannot run here")


def test_outputs_without_signal_fail_unless_allowed():
    from fna_deploy.export.check import compare
    from fna_deploy.verify import degenerate_output

    zeros = np.zeros((2, 10), np.float32)
    assert degenerate_output([zeros]) == "every output value is 0"
    assert degenerate_output([np.full((2, 3), 0.5)]) == "every output value equals 0.5"
    assert degenerate_output([np.arange(6.0).reshape(2, 3)]) is None
    result = compare(zeros, zeros.copy(), batch=2, output="output", fp16=False)
    assert not result.passed and "carries no signal" in result.describe()
    assert compare(zeros, zeros.copy(), batch=2, output="output", fp16=False, allow_degenerate=True).passed
    # a model whose head is zero: every implementation "agrees"; the verdict says why that proves nothing
    model = tiny_timm(depth=1)
    torch.nn.init.zeros_(model.head.weight)
    torch.nn.init.zeros_(model.head.bias)
    fd.patch(model, fd.FNAConfig(num_landmarks=8))
    feeds = [np.random.default_rng(0).standard_normal((1, 3, 64, 64), dtype=np.float32)]
    report = verify(model, feeds)
    assert report.degenerate == "every output value is 0" and not report.passed
    assert verify(model, feeds, allow_degenerate=True).passed
