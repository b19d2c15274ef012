"""fna-deploy bench on CUDA terms, where the CPU can check them: option resolution and refusals,
the warm-up / capture / fallback control flow, interleaved timing, switching registered kernels
off, and the report schema. The CUDA runs themselves are in tests/plugins/test_bench_gpu.py."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from fna_deploy.bench import (
    GRAPH_CHECK_REL_L2,
    ONNX_FUNCTIONS,
    REFERENCE_OPS,
    kernels_disabled,
    prepare_variant,
    resolve_cuda_graphs,
    resolve_device,
    resolve_dtype,
    run_bench,
    time_interleaved,
)
from fna_deploy.cli import cli

from .conftest import tiny_timm

NO_GPU = not torch.cuda.is_available()


# ---------------------------------------------------------------- options


def test_device_dtype_graph_defaults():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_dtype(None, "cuda") == "fp16" and resolve_dtype(None, "cpu") == "fp32"
    assert resolve_dtype("bf16", "cuda") == "bf16" and resolve_dtype("fp32", "cpu") == "fp32"
    assert resolve_cuda_graphs(None, "cuda") is True and resolve_cuda_graphs(None, "cpu") is False
    assert resolve_cuda_graphs(False, "cuda") is False and resolve_cuda_graphs(False, "cpu") is False


@pytest.mark.parametrize("call, message", [
    (lambda: resolve_dtype("fp16", "cpu"), "--dtype fp16 is timed on --device cuda only"),
    (lambda: resolve_dtype("int8", "cuda"), "dtype must be one of fp16, bf16, fp32"),
    (lambda: resolve_cuda_graphs(True, "cpu"), "--cuda-graphs needs --device cuda"),
    (lambda: resolve_device("gpu"), "device must be one of auto, cpu, cuda"),
])
def test_option_refusals(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.skipif(not NO_GPU, reason="checks the refusal on a machine without a GPU")
def test_resolve_cuda_without_gpu():
    with pytest.raises(ValueError, match="PyTorch sees no CUDA GPU here"):
        resolve_device("cuda")


@pytest.mark.parametrize("args, message", [
    (["--device", "cuda"], "--device cuda: PyTorch sees no CUDA GPU here; use --device cpu (or auto)"),
    (["--dtype", "fp16"], "--dtype fp16 is timed on --device cuda only"),
    (["--dtype", "bf16", "--device", "cpu"], "--dtype bf16 is timed on --device cuda only"),
    (["--cuda-graphs", "--device", "cpu"], "--cuda-graphs needs --device cuda"),
    (["--fna-ops", "both"], "--fna-ops both times our kernels beside the PyTorch reference, but they do not run here"),
])
def test_bench_cli_refusals(args, message):
    if NO_GPU is False and "cuda" in args and "--device" in args and args[args.index("--device") + 1] == "cuda":
        pytest.skip("a GPU is visible: --device cuda is valid here")
    result = CliRunner().invoke(cli, ["bench", "timm:vit_tiny_patch16_224", "--resolutions", "32", "--landmarks", "4",
                                      "--backends", "torch", "--iters", "1", *args])
    assert result.exit_code == 2, result.output
    assert f"error: {message}" in result.output
    assert "Traceback" not in result.output and result.output.count("error:") == 1


def test_bench_cli_bad_dtype_is_a_usage_error():
    result = CliRunner().invoke(cli, ["bench", "timm:vit_tiny_patch16_224", "--dtype", "fp8"])
    assert result.exit_code == 2 and "Invalid value for '--dtype'" in result.output


def test_bench_help_names_the_new_flags():
    result = CliRunner().invoke(cli, ["bench", "--help"])
    assert result.exit_code == 0
    for flag in ("--device [auto|cpu|cuda]", "--dtype [fp16|bf16|fp32]", "--cuda-graphs / --no-cuda-graphs", "--fna-ops"):
        assert flag in result.output


# ---------------------------------------------------------------- warm-up, capture, fallback


class Counter:
    """A variant: y = 2 * x + 1 on a static input buffer, counting its eager calls."""

    def __init__(self) -> None:
        self.x = torch.randn(3, 4)
        self.calls = 0

    def __call__(self) -> torch.Tensor:
        self.calls += 1
        return 2 * self.x + 1

    def refill(self):
        saved = self.x.clone()
        self.x.copy_(torch.randn_like(self.x))
        return lambda: self.x.copy_(saved)


def replaying_capture(fn):
    """A stand-in for a CUDA graph that re-runs its work on the static buffers (as a real replay does)."""
    fn()
    return lambda: fn()


def freezing_capture(fn):
    """A graph that baked in its inputs at capture time (what a host-side read inside the ops does)."""
    frozen = fn().clone()
    return lambda: frozen


def failing_capture(fn):
    raise RuntimeError("CUDA error: operation not permitted when stream is capturing\nmore detail")


def test_prepare_without_capture_is_eager_after_warmup():
    v = Counter()
    p = prepare_variant(v, warmup=3)
    assert v.calls == 3 and not p.cuda_graph and p.fallback is None
    assert torch.equal(p.output, 2 * v.x + 1)
    p.run()
    assert v.calls == 4  # run is the eager call itself


def test_prepare_warmup_zero_still_runs_once():
    v = Counter()
    prepare_variant(v, warmup=0)
    assert v.calls == 1


def test_prepare_accepts_a_replay_that_computes_the_function():
    v = Counter()
    bench_input = v.x.clone()
    p = prepare_variant(v, warmup=2, capture=replaying_capture, refill=v.refill)
    assert p.cuda_graph and p.fallback is None
    assert torch.equal(v.x, bench_input)  # the fresh-input check put the bench input back
    assert torch.equal(p.output, 2 * bench_input + 1)
    assert torch.equal(p.run(), 2 * bench_input + 1)


def test_prepare_rejects_a_replay_that_froze_its_input():
    v = Counter()
    bench_input = v.x.clone()
    p = prepare_variant(v, warmup=1, capture=freezing_capture, refill=v.refill)
    assert not p.cuda_graph
    assert p.fallback.startswith("graph replay on a fresh input differs from eager (rel L2 ")
    assert f"> {GRAPH_CHECK_REL_L2:g})" in p.fallback
    assert torch.equal(v.x, bench_input) and torch.equal(p.output, 2 * bench_input + 1)
    calls = v.calls
    p.run()
    assert v.calls == calls + 1  # timed eagerly


def test_prepare_falls_back_when_capture_raises():
    v = Counter()
    p = prepare_variant(v, warmup=1, capture=failing_capture, refill=v.refill)
    assert not p.cuda_graph
    assert p.fallback == "capture failed (RuntimeError: CUDA error: operation not permitted when stream is capturing)"
    assert torch.equal(p.output, 2 * v.x + 1)


def test_prepare_falls_back_when_replay_raises():
    v = Counter()

    def broken_capture(fn):
        fn()

        def replay():
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

        return replay

    p = prepare_variant(v, warmup=1, capture=broken_capture, refill=v.refill)
    assert not p.cuda_graph and p.fallback == "graph replay failed (RuntimeError: CUDA error: an illegal memory access was encountered)"
    bench_input = v.x.clone()
    assert torch.equal(p.run(), 2 * bench_input + 1)  # the input was put back before falling back


def test_time_interleaved_rounds_in_order():
    order: list[str] = []
    runs = {k: (lambda k=k: order.append(k)) for k in ("dense", "fna64", "fna128")}
    ticks = iter(range(100))

    def timer(run):
        run()
        return float(next(ticks))

    times = time_interleaved(runs, 3, timer)
    assert order == ["dense", "fna64", "fna128"] * 3
    assert times == {"dense": [0.0, 3.0, 6.0], "fna64": [1.0, 4.0, 7.0], "fna128": [2.0, 5.0, 8.0]}


# ---------------------------------------------------------------- reference ops


@torch.library.custom_op("fna_bench_test::scale", mutates_args=())
def _scale(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@_scale.register_kernel("cpu")
def _scale_cpu(x):
    return x * 3


def test_kernels_disabled_falls_back_to_the_op_body():
    x = torch.ones(2)
    assert torch.equal(torch.ops.fna_bench_test.scale(x), x * 3)
    with kernels_disabled([_scale], "cpu"):
        assert torch.equal(torch.ops.fna_bench_test.scale(x), x * 2)
    assert torch.equal(torch.ops.fna_bench_test.scale(x), x * 3)


# ---------------------------------------------------------------- report


def test_report_schema_on_cpu(tmp_path):
    report = run_bench(lambda res: tiny_timm(depth=2, img_size=res), model_label="tiny", resolutions=[64], landmarks=[4, 17],
                       layers="all", backends=["torch", "onnxrt"], iters=2, warmup=1)
    assert (report.device_type, report.dtype, report.cuda_graphs, report.timing) == ("cpu", "fp32", False, "host_clock")
    assert report.machine["fna_ops"] == REFERENCE_OPS and report.graph_fallbacks == {}
    for m in report.measurements:
        assert m.dtype == "fp32" and not m.cuda_graph and m.graph_fallback is None
        assert m.memory_kind == "process_peak_rss" and m.baseline_mem_mb is None
        assert m.fna_ops == (None if m.variant == "dense" else REFERENCE_OPS if m.backend == "torch" else ONNX_FUNCTIONS)
    rows = {(s.backend, s.landmarks): s for s in report.speedups}
    assert set(rows) == {(b, m) for b in ("torch", "onnxrt") for m in (4, 17)}
    for s in rows.values():
        assert 0.5 < s.cosine <= 1 + 1e-9 and s.rel_l2 >= 0 and s.kernels_vs_reference is None
    assert 0 < rows[("torch", 4)].rel_l2 < 0.5  # an approximation: close to dense, not equal to it
    data = json.loads(json.dumps(report.to_dict()))
    for key in ("device_type", "dtype", "cuda_graphs", "timing", "warmup", "graph_fallbacks"):
        assert key in data
    assert {"cosine", "rel_l2", "fna_ops", "kernels_vs_reference"} <= set(data["speedups"][0])
    assert {"cuda_graph", "graph_fallback", "baseline_mem_mb", "dtype", "fna_ops"} <= set(data["measurements"][0])
    table = report.markdown()
    assert "| cos FNA vs dense | rel L2 FNA vs dense |" in table and "MiB" not in table  # memory columns on CUDA only
    assert f"| torch | 64 | 17 | 4 | {REFERENCE_OPS} |" in table


@pytest.mark.skipif(not NO_GPU, reason="without a GPU nothing can register the CUDA kernels")
def test_fna_ops_without_gpu_is_the_reference():
    from fna_deploy.bench import fna_ops_on
    from fna_deploy.native import registered_cuda_library

    assert registered_cuda_library() is None
    implementation, why = fna_ops_on("cuda")
    assert implementation == REFERENCE_OPS and why  # the reason: not built, or built/registered without CUDA
    assert fna_ops_on("cpu") == (REFERENCE_OPS, "on the CPU the custom ops run the PyTorch reference")


def test_default_threads_follow_free_cores_and_busy_machine_warns(monkeypatch):
    """Issue 21: the default is the cores of the affinity mask minus the load; a load that leaves
    the timed threads no free core is warned about."""
    import os

    from fna_deploy import bench as bench_module
    from fna_deploy import utils as bench_threads

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.2, 0.0, 0.0))
    assert bench_threads.choose_threads() == (4, None)
    monkeypatch.setattr(os, "getloadavg", lambda: (2.4, 0.0, 0.0))
    assert bench_threads.choose_threads() == (2, None)  # 2 free cores: 2 threads, no contention
    monkeypatch.setattr(os, "getloadavg", lambda: (3.7, 0.0, 0.0))
    threads, warning = bench_threads.choose_threads()
    assert threads == 1 and warning is not None and "load 3.7 on 4 usable cores" in warning
    assert "fewer --threads" not in warning
    threads, warning = bench_threads.choose_threads(4)  # explicit threads on a busy machine: kept, warned
    assert threads == 4 and "fewer --threads" in warning
    monkeypatch.setattr(os, "getloadavg", lambda: (9.0, 0.0, 0.0))
    assert bench_threads.choose_threads()[0] == 1  # never below one thread
    lines = []
    monkeypatch.setattr(bench_module, "_run_bench", lambda load, **kw: kw["threads"])
    assert bench_module.run_bench(lambda r: None, log=lines.append, model_label="m", resolutions=[32]) == 1
    assert lines and lines[0].startswith("warning: the machine is busy")
