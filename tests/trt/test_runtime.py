"""Runtime choice, compute capabilities and "can this engine run here" without any runtime: the
machine (installed runtimes, GPU) is faked, so every branch is exercised on any machine."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from fna_deploy.trt import EngineSidecar, TensorSpec, fp16_strategy, runtime
from fna_deploy.trt.runtime import TensorRTUnavailable, engine_runs_here, parse_compute_capabilities, resolve_runtime, rtx_targets


def machine(monkeypatch, *, trt=None, rtx=None, cc=None, gpu="NVIDIA H200"):
    versions = {"tensorrt": trt, "tensorrt-rtx": rtx}
    monkeypatch.setattr(runtime, "runtime_version", lambda name: versions[name])
    monkeypatch.setattr(runtime, "local_compute_capability", lambda: cc)
    monkeypatch.setattr(runtime, "local_gpu_name", lambda: gpu if cc else None)


def sidecar(**kw) -> EngineSidecar:
    base = dict(runtime_version="1.7.1.116", gpu="none", fp16=False, fp16_strategy="fp32",
                inputs=[TensorSpec("images", "float32", [-1, 3, 64, 64])], outputs=[TensorSpec("output", "float32", [-1, 10])],
                profile={"images": {"min": [1, 3, 64, 64], "opt": [1, 3, 64, 64], "max": [2, 3, 64, 64]}}, onnx="m.onnx",
                runtime="tensorrt-rtx", compute_capabilities=None)
    return EngineSidecar(**{**base, **kw})


@pytest.mark.parametrize("spec, expected", [("80,86,89,120", [80, 86, 89, 120]), ("8.6, 12.0", [86, 120]), ("86,86", [86]), ("", None), (None, None)])
def test_parse_compute_capabilities(spec, expected):
    assert parse_compute_capabilities(spec) == expected


@pytest.mark.parametrize("spec", ["eighty", "80,x", "5"])
def test_parse_compute_capabilities_errors(spec):
    with pytest.raises(ValueError, match="--compute-capabilities"):
        parse_compute_capabilities(spec)


def test_auto_prefers_tensorrt_with_a_gpu_else_rtx(monkeypatch):
    machine(monkeypatch, trt="10.13", rtx="1.7", cc=86)
    assert resolve_runtime("auto") == "tensorrt"
    machine(monkeypatch, trt="10.13", rtx="1.7", cc=None)
    assert resolve_runtime("auto") == "tensorrt-rtx"
    machine(monkeypatch, trt=None, rtx=None)
    with pytest.raises(TensorRTUnavailable, match="neither TensorRT nor TensorRT-RTX is installed; install it with 'pip install tensorrt-rtx'"):
        resolve_runtime("auto")
    assert resolve_runtime("tensorrt") == "tensorrt"  # an explicit choice is kept; building then says what is missing


def test_rtx_targets(monkeypatch):
    members = {"NONE": 0, "CURRENT": 1, "SM75": 75, "SM80": 80, "SM86": 86, "SM89": 89, "SM120": 120, "SM121": 121}
    fake = SimpleNamespace(__version__="1.7", ComputeCapability=SimpleNamespace(__members__=members))
    machine(monkeypatch, rtx="1.7", cc=None)
    assert rtx_targets(fake, None) is None  # no GPU, nothing asked: the library's default set
    assert rtx_targets(fake, [80, 120]) == [80, 120]
    with pytest.raises(ValueError, match=r"^TensorRT-RTX does not build or run engines for compute capability 9\.0 \(Hopper"):
        rtx_targets(fake, [86, 90])
    with pytest.raises(ValueError, match="cannot build for compute capability 7.0"):
        rtx_targets(fake, [70])
    machine(monkeypatch, rtx="1.7", cc=89)
    assert rtx_targets(fake, None) == [89]  # the local GPU's
    machine(monkeypatch, rtx="1.7", cc=90)
    with pytest.raises(ValueError, match="9.0"):
        rtx_targets(fake, None)  # an H100/H200 here: refused, not silently built for something else


def test_fp16_strategy_for_rtx_converts_the_onnx():
    assert fp16_strategy("1.7.1", True, "tensorrt-rtx") == "convert-onnx"
    assert fp16_strategy("10.13", True, "tensorrt") == "builder-flag"


def test_engine_runs_here(monkeypatch, tmp_path):
    machine(monkeypatch, rtx=None, cc=None)
    assert "not installed here; install it with 'pip install tensorrt-rtx'" in engine_runs_here(sidecar())
    machine(monkeypatch, rtx="1.8.0", cc=86)
    assert "built with TensorRT-RTX 1.7.1.116 but this machine has TensorRT-RTX 1.8.0" in engine_runs_here(sidecar())
    machine(monkeypatch, rtx="1.7.1.116", cc=None)
    assert "needs a CUDA GPU" in engine_runs_here(sidecar())
    machine(monkeypatch, rtx="1.7.1.116", cc=90)
    assert "TensorRT-RTX engines cannot run on this GPU (NVIDIA H200, compute capability 9.0)" in engine_runs_here(sidecar())
    machine(monkeypatch, rtx="1.7.1.116", cc=89, gpu="RTX 4090")
    assert engine_runs_here(sidecar()) is None  # the default set covers 8.9
    assert "built for compute capabilities 8.6, 12.0, not for this GPU's 8.9" in engine_runs_here(sidecar(compute_capabilities=[86, 120]))
    machine(monkeypatch, trt="10.13", cc=89)
    assert engine_runs_here(sidecar(runtime="tensorrt", runtime_version="10.13", compute_capabilities=[89])) is None
    assert "run only on the GPU model they were built for" in engine_runs_here(
        sidecar(runtime="tensorrt", runtime_version="10.13", compute_capabilities=[90]))
    # from the engine's path: its sidecar is read; an old sidecar without "runtime" means TensorRT
    plan = tmp_path / "m.plan"
    data = json.loads(sidecar(runtime="tensorrt", runtime_version="10.13").to_json())
    del data["runtime"], data["compute_capabilities"]
    data["tensorrt_version"] = data.pop("runtime_version")  # and names the version as sidecars did before the rename
    EngineSidecar.path_for(plan).write_text(json.dumps(data))
    assert engine_runs_here(plan) is None
    assert EngineSidecar.from_json(json.dumps(data)).runtime_version == "10.13"
    assert "has no sidecar" in engine_runs_here(tmp_path / "other.plan")
