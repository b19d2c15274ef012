"""bench's trt / tensorrt-rtx backends and the runner interface.

TensorRT cannot run here (no GPU; TensorRT-RTX engines need compute capability 8.0/8.6/8.9/12.x).
So the engine path is tested with fakes at TensorRT's own boundary only: the engine builder
(``fna_deploy.trt.build_engine``, which calls TensorRT) and the execution of a plan
(``runtimes.tensorrt._polygraphy_trt``, polygraphy's TrtRunner; ``_rtx_execution``, TensorRT-RTX's
runtime). The fake "plan" is the ONNX file it
was built from, executed by ONNX Runtime: everything of ours between (exports for the trt target,
engine per variant, sidecar, landmark count, timing, parity beside speed) runs for real.
What did not run: TensorRT itself, and TensorRT-RTX's execute_async_v3 path.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

import fna_deploy.trt as trt_pkg
from fna_deploy.bench import ENGINE_PLUGINS, run_bench
from fna_deploy.cli import cli
from fna_deploy.runtimes import tensorrt as trt_runtime
from fna_deploy.runtimes.base import as_polygraphy
from fna_deploy.runtimes.onnxrt import OnnxrtRunner, providers
from fna_deploy.trt import EngineSidecar, TensorRTUnavailable, TensorSpec

from ..conftest import tiny_timm

builds: list[dict] = []


def fake_build(onnx_path, plan_path, *, fp16=False, plugin=None, batch=(1, 1, 1), runtime="auto", **_):
    """TensorRT's builder stand-in: the plan is the ONNX file; the sidecar is what build writes."""
    model = onnx.load(str(onnx_path))
    meta = {p.key: p.value for p in model.metadata_props}
    builds.append({"onnx": str(onnx_path), "target": meta.get("fna_target"), "batch": batch, "runtime": runtime, "fp16": fp16})
    Path(plan_path).write_bytes(Path(onnx_path).read_bytes())
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    sidecar = EngineSidecar("10.0", "fake", fp16, "none", [TensorSpec("images", "float32", dims)], [TensorSpec("output", "float32", [-1])],
                            {"images": {"min": dims, "opt": dims, "max": dims}}, str(onnx_path),
                            fna_config=json.loads(meta["fna_config"]) if meta.get("fna_config") else None, runtime=runtime)
    EngineSidecar.path_for(plan_path).write_text(sidecar.to_json())
    return sidecar


def fake_execution(plan_path, plugin, name):
    """polygraphy's TrtRunner stand-in: runs the plan (an ONNX file) in ONNX Runtime."""
    runner = OnnxrtRunner(_with_bodies(plan_path))

    def execute(feeds):
        outputs[Path(plan_path).stem] = out = runner.infer(feeds)
        return out

    return execute


outputs: dict[str, list] = {}


def _with_bodies(path) -> bytes:
    from fna_deploy.export.functions import with_bodies

    return with_bodies(onnx.load(str(path)))[0].SerializeToString()


@pytest.fixture
def fake_tensorrt(monkeypatch):
    builds.clear()
    monkeypatch.setattr(trt_runtime, "unavailable", lambda runtime: None)
    monkeypatch.setattr(trt_pkg, "build_engine", fake_build)
    monkeypatch.setattr(trt_runtime, "_polygraphy_trt", fake_execution)
    monkeypatch.setattr(trt_runtime, "_rtx_execution", lambda plan, plugin: fake_execution(plan, plugin, "tensorrt-rtx"))
    monkeypatch.setattr("fna_deploy.trt.runtime.engine_runs_here", lambda sidecar: None)
    return builds


def test_bench_trt_builds_times_and_reports_parity(fake_tensorrt):
    report = run_bench(lambda res: tiny_timm(depth=2, img_size=res), model_label="tiny", resolutions=[64], landmarks=[4],
                       layers="all", backends=["torch", "trt"], iters=2, warmup=1)
    assert not report.skipped
    # one engine per variant: dense from a dense export, FNA from a trt-target export, both at the bench batch
    assert [(b["target"], b["batch"], b["runtime"]) for b in fake_tensorrt] == [("dense", (1, 1, 1), "tensorrt"), ("trt", (1, 1, 1), "tensorrt")]
    trt_rows = [m for m in report.measurements if m.backend == "trt"]
    assert {(m.variant, m.landmarks) for m in trt_rows} == {("dense", None), ("fna", 4)}
    assert all(m.median_ms > 0 and m.throughput > 0 for m in trt_rows)
    speedups = {s.backend: s for s in report.speedups}
    assert speedups["trt"].fna_ops == ENGINE_PLUGINS["trt"]
    # parity beside speed: computed from what the engines returned (FNA vs dense, like every backend)
    dense, fna = outputs["trt_dense_64"][0].ravel().astype(np.float64), outputs["trt_fna4_64"][0].ravel().astype(np.float64)
    cosine = dense @ fna / np.linalg.norm(dense) / np.linalg.norm(fna)
    assert speedups["trt"].cosine == pytest.approx(cosine, abs=1e-7) and 0.99 < cosine < 1
    assert speedups["trt"].rel_l2 == pytest.approx(np.linalg.norm(fna - dense) / np.linalg.norm(dense), rel=1e-5)
    assert f"| trt | 64 | 17 | 4 | {ENGINE_PLUGINS['trt']} |" in report.markdown()


def test_bench_engine_is_the_fna_variant(fake_tensorrt, tmp_path):
    model = tiny_timm(depth=2, img_size=64)
    from fna_deploy import FNAConfig
    from fna_deploy.export import export_onnx

    export_onnx(model, FNAConfig(num_landmarks=8, layers="all"), tmp_path / "m.onnx", target="trt", input_shape=(1, 3, 64, 64),
                dynamic_batch=False, check=False)
    fake_build(tmp_path / "m.onnx", tmp_path / "m.plan", runtime="tensorrt-rtx")
    fake_tensorrt.clear()
    report = run_bench(lambda res: model, model_label="tiny", resolutions=[64], landmarks=[8], layers="all",
                       backends=["tensorrt-rtx"], iters=1, warmup=0, engine=tmp_path / "m.plan")
    assert [b["target"] for b in fake_tensorrt] == ["dense"]  # only the dense engine is built; the FNA one is the plan
    assert [s.landmarks for s in report.speedups] == [8] and report.machine["engine"] == str(tmp_path / "m.plan")
    assert report.speedups[0].cosine > 0.99


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where no GPU is visible")
@pytest.mark.parametrize("backend", ["trt", "tensorrt-rtx"])
def test_bench_engine_backend_that_cannot_run_exits_2_with_its_reason(backend):
    result = CliRunner().invoke(cli, ["bench", "timm:vit_tiny_patch16_224", "--resolutions", "32", "--landmarks", "4",
                                      "--iters", "1", "--backends", backend, "-q"])
    assert result.exit_code == 2, result.output
    reason = trt_runtime.unavailable(trt_runtime.BACKEND_RUNTIMES[backend])
    assert reason and f"| {backend} | - | - | - | not run: {reason} |" in result.output
    assert result.output.strip().splitlines()[-1] == f"error: --backends {backend} could not run here: {reason}"


def test_engine_runner_refuses_an_engine_this_machine_cannot_run(tmp_path):
    fake_build_path = tmp_path / "m.plan"
    fake_build_path.write_bytes(b"plan")
    EngineSidecar.path_for(fake_build_path).write_text(EngineSidecar(
        "1.7.1", "none", False, "none", [], [], {}, "m.onnx", runtime="tensorrt-rtx", compute_capabilities=[86]).to_json())
    reason = trt_pkg.engine_runs_here(fake_build_path)
    if reason is None:
        pytest.skip("this machine can run a TensorRT-RTX engine for 8.6")
    with pytest.raises(TensorRTUnavailable, match="TensorRT-RTX"):
        trt_runtime.EngineRunner(fake_build_path).infer({})


def test_onnxrt_providers_follow_the_device():
    assert providers("cpu", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert providers("cuda", ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert providers("cuda", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]


def test_runner_through_polygraphy_matches_direct_inference(tmp_path):
    from fna_deploy.export import export_onnx

    model = tiny_timm(depth=1, img_size=32).eval()
    export_onnx(model, None, tmp_path / "d.onnx", target="dense", input_shape=(1, 3, 32, 32), dynamic_batch=False, check=False)
    runner = OnnxrtRunner(tmp_path / "d.onnx")
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(runner.infer({"images": x})[0], want, rtol=1e-4, atol=1e-4)
    adapter = as_polygraphy(runner)
    with adapter:
        got = adapter.infer({"images": x})
    assert list(got) == runner.output_names()
    np.testing.assert_allclose(next(iter(got.values())), want, rtol=1e-4, atol=1e-4)
    assert runner.time({"images": x}, warmup=0, iters=2)["median_ms"] > 0
