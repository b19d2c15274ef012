"""fna-deploy bench on CUDA (skipped without a GPU; scripts/device_check.sh runs these): CUDA-graph
capture and its fallback on real CUDA work, and a whole bench run of a small ViT in fp16 with our
kernels and the PyTorch reference ops both timed."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from fna_deploy import native
from fna_deploy.bench import FNA_KERNELS, REFERENCE_OPS, cuda_graph_capture, input_refill, prepare_variant, run_bench
from fna_deploy.cli import cli

from ..conftest import tiny_timm

pytestmark = pytest.mark.gpu


@pytest.fixture
def kernels(cuda_build, monkeypatch):
    monkeypatch.setenv("FNA_DEPLOY_PLUGIN_DIR", str(cuda_build.build_dir))
    lib = native.load(cuda_build.library)
    assert lib.cuda_registered
    return lib


def test_cuda_graph_replays_on_new_input():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device visible to torch")
    x = torch.randn(64, 64, device="cuda")
    w = torch.randn(64, 64, device="cuda")

    def fn():
        return torch.relu(x @ w) + 1

    p = prepare_variant(fn, warmup=2, capture=cuda_graph_capture, refill=input_refill(x), sync=torch.cuda.synchronize)
    assert p.cuda_graph and p.fallback is None
    x.copy_(torch.randn_like(x))
    assert torch.allclose(p.run(), fn())


def test_uncapturable_variant_falls_back_and_cuda_still_works():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device visible to torch")
    x = torch.randn(1000, device="cuda")

    def fn():  # a host read of a device value: not capturable
        return x * 2 if bool((x.sum() > 0).item()) else x * 3

    p = prepare_variant(fn, warmup=1, capture=cuda_graph_capture, sync=torch.cuda.synchronize)
    assert not p.cuda_graph and p.fallback.startswith("capture failed (")
    assert torch.equal(p.run(), fn())
    assert torch.ones(4, device="cuda").sum().item() == 4.0


def test_bench_cuda_fp16_graphs_kernels_and_reference(kernels, tmp_path):
    report = run_bench(lambda res: tiny_timm(img_size=res), model_label="tiny", resolutions=[128], landmarks=[16], layers="1-11",
                       backends=["torch", "onnxrt"], device="cuda", fna_ops="both", batch=2, warmup=2, iters=5)
    print(json.dumps(report.graph_fallbacks, indent=1))
    assert (report.device_type, report.dtype, report.cuda_graphs, report.timing) == ("cuda", "fp16", True, "cuda_events")
    assert "onnxrt" in report.skipped and report.machine["fna_ops"] == FNA_KERNELS
    by_ops = {m.fna_ops: m for m in report.measurements}
    assert set(by_ops) == {None, FNA_KERNELS, REFERENCE_OPS}
    for m in report.measurements:
        assert m.memory_kind == "cuda_max_allocated_above_baseline" and m.peak_mem_mb > 0 and m.baseline_mem_mb > 0
        assert m.cuda_graph or m.graph_fallback  # captured, or the reason why not
        assert m.median_ms > 0 and m.median_ms <= m.p90_ms
    assert by_ops[None].cuda_graph and by_ops[REFERENCE_OPS].cuda_graph  # timm dense and the reference ops capture
    rows = {s.fna_ops: s for s in report.speedups}
    assert rows[FNA_KERNELS].kernels_vs_reference["rel_l2"] <= 1e-2  # fp16, whole model
    assert rows[REFERENCE_OPS].kernels_vs_reference is None
    assert all(s.cosine > 0.9 for s in report.speedups)
    table = report.markdown()
    assert "| dense MiB | FNA MiB | kernels vs ref rel L2 | CUDA graph dense/FNA |" in table
    assert f"| torch | 128 | 65 | 16 | {FNA_KERNELS} |" in table


def test_bench_cli_on_cuda(kernels, tmp_path):
    result = CliRunner().invoke(cli, ["bench", "timm:vit_tiny_patch16_224", "--device", "cuda", "--resolutions", "64",
                                      "--landmarks", "8", "--iters", "2", "--report", str(tmp_path / "b.json")])
    assert result.exit_code == 0, result.output
    assert "skipped onnxrt:" in result.output and "fp16" in result.output
    data = json.loads((tmp_path / "b.json").read_text())
    assert data["dtype"] == "fp16" and data["cuda_graphs"] is True and data["speedups"][0]["fna_ops"] == FNA_KERNELS
