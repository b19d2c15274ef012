"""TensorRT glue without TensorRT: the fp16 strategy switch, profiles, sidecar, fp16 ONNX conversion,
and the clear errors. Engine building itself needs TensorRT and a GPU (marked trt/gpu)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

import fna_deploy as fd
from fna_deploy.cli import cli
from fna_deploy.export import export_onnx
from fna_deploy.export.fp16 import convert_to_fp16, is_fp16
from fna_deploy.export.schemas import register_schemas
from fna_deploy.trt import EngineSidecar, TensorSpec, fp16_strategy, parse_batch, parse_shapes, tensorrt_version

from ..conftest import tiny_timm

ort = pytest.importorskip("onnxruntime")
HAS_TRT = tensorrt_version() is not None and torch.cuda.is_available()


@pytest.mark.parametrize(
    "version, fp16, strategy",
    [("10.13.3.9", True, "builder-flag"), ("10.0.1", True, "builder-flag"), ("11.0.0", True, "convert-onnx"), ("12.1", True, "convert-onnx"), ("11.0.0", False, "fp32")],
)
def test_fp16_strategy_by_version(version, fp16, strategy):
    assert fp16_strategy(version, fp16) == strategy


def test_fp16_strategy_rejects_garbage():
    with pytest.raises(ValueError, match="cannot read a TensorRT version"):
        fp16_strategy("beta", True)


@pytest.mark.parametrize("spec, expected", [("1:4:8", (1, 4, 8)), ("2", (2, 2, 2))])
def test_parse_batch(spec, expected):
    assert parse_batch(spec) == expected


@pytest.mark.parametrize("spec", ["4:1:8", "0:1:1", "a:b:c", "1:2"])
def test_parse_batch_errors(spec):
    with pytest.raises(ValueError, match="--batch"):
        parse_batch(spec)


def test_parse_shapes():
    shapes = parse_shapes(["images:1,3,64,64x4,3,64,64x8,3,64,64"])
    assert shapes == {"images": ([1, 3, 64, 64], [4, 3, 64, 64], [8, 3, 64, 64])}
    for bad in ["images:1,3x2,3", "images:4,3x2,3x8,3", ":1x1x1", "images:ax1x1"]:
        with pytest.raises(ValueError, match="--shapes"):
            parse_shapes([bad])


def test_sidecar_round_trip():
    sidecar = EngineSidecar(
        runtime_version="10.13", gpu="NVIDIA H100", fp16=True, fp16_strategy="builder-flag",
        inputs=[TensorSpec("images", "float32", [-1, 3, 224, 224])], outputs=[TensorSpec("output", "float32", [-1, 1000])],
        profile={"images": {"min": [1, 3, 224, 224], "opt": [4, 3, 224, 224], "max": [8, 3, 224, 224]}},
        onnx="m.onnx", fna_config=fd.FNAConfig().to_dict(),
    )
    again = EngineSidecar.from_json(sidecar.to_json())
    assert again == sidecar and again.max_batch == 8 and again.min_batch == 1
    assert str(EngineSidecar.path_for("a/m.plan")) == "a/m.plan.json"


@pytest.fixture(scope="module")
def fp32_export(tmp_path_factory):
    torch.manual_seed(0)
    model = tiny_timm(depth=2)
    path = tmp_path_factory.mktemp("fp16") / "m.onnx"
    export_onnx(model, fd.FNAConfig(num_landmarks=8, layers="all", massive_ratio=10.0), path, check=False)
    return model, path


def test_fp16_conversion_runs_in_onnxruntime(fp32_export):
    register_schemas()
    _model, path = fp32_export
    fp32 = onnx.load(path)
    half = convert_to_fp16(fp32)
    onnx.checker.check_model(half, full_check=True)
    assert is_fp16(half) and not is_fp16(fp32)
    assert half.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # I/O stay fp32
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64), dtype=np.float32)
    run = lambda m: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]  # noqa: E731
    a, b = run(fp32), run(half)
    cosine = float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b))
    assert b.dtype == np.float32 and cosine > 0.999


def test_fp16_conversion_keeps_pinv_and_norms_in_fp32(fp32_export):
    _model, path = fp32_export
    half = convert_to_fp16(onnx.load(path))
    # the function bodies are untouched: A and Newton-Schulz still run on Cast(to=FLOAT) values
    original = {f.name: f.SerializeToString() for f in onnx.load(path).functions}
    assert {f.name: f.SerializeToString() for f in half.functions} == original
    # the token norms (massive-token scores) are computed from an fp32 cast
    producers = {o: n for n in half.graph.node for o in n.output}
    landmarks = next(n for n in half.graph.node if n.op_type == "FnaLandmarks")
    norm = producers[landmarks.input[1]]
    assert norm.op_type == "ReduceL2"
    cast = producers[norm.input[0]]
    assert cast.op_type == "Cast" and cast.attribute[0].i == onnx.TensorProto.FLOAT
    with pytest.raises(ValueError, match="already has fp16 weights"):
        convert_to_fp16(half)


def test_fp16_conversion_without_io_casts(fp32_export):
    _model, path = fp32_export
    half = convert_to_fp16(onnx.load(path), keep_io_types=False)
    assert half.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    x = np.random.default_rng(1).standard_normal((1, 3, 64, 64)).astype(np.float16)
    out = ort.InferenceSession(half.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    assert out.dtype == np.float16 and np.isfinite(out).all()


@pytest.mark.skipif(HAS_TRT, reason="checks the message shown when TensorRT or a GPU is missing")
def test_build_without_tensorrt_says_so_and_writes_nothing(fp32_export, tmp_path):
    _model, path = fp32_export
    plan = tmp_path / "m.plan"
    result = CliRunner().invoke(cli, ["build", str(path), "-o", str(plan), "--fp16", "--runtime", "tensorrt"])
    assert result.exit_code == 2
    assert "error: TensorRT is not installed" in result.output or "needs a CUDA GPU" in result.output
    assert "Traceback" not in result.output
    assert not list(tmp_path.iterdir())


def test_build_bad_input(tmp_path):
    result = CliRunner().invoke(cli, ["build", str(tmp_path / "none.onnx")])
    assert result.exit_code == 2 and "does not exist; export one with" in result.output
    (tmp_path / "m.onnx").write_bytes(b"x")
    result = CliRunner().invoke(cli, ["build", str(tmp_path / "m.onnx"), "--batch", "8:1:1"])
    assert result.exit_code == 2 and "need 1 <= MIN <= OPT <= MAX" in result.output


@pytest.mark.trt
@pytest.mark.gpu
@pytest.mark.skipif(not HAS_TRT, reason="needs TensorRT and a CUDA GPU (not on this machine)")
def test_build_engine_and_verify(fp32_export, tmp_path):
    from fna_deploy.trt import build_engine

    model, path = fp32_export
    sidecar = build_engine(path, tmp_path / "m.plan", fp16=True, batch=(1, 2, 4))
    assert (tmp_path / "m.plan").stat().st_size > 0 and sidecar.max_batch == 4


def test_portable_exports_lose_their_bodies_before_parsing(fp32_export):
    from fna_deploy.trt import strip_fna_functions

    _model, path = fp32_export
    portable = onnx.load(path)
    assert {f.name for f in portable.functions} == {"FnaLandmarks", "NystromAttention"}
    stripped = strip_fna_functions(portable)
    assert stripped is not None and not stripped.functions
    assert [n.op_type for n in stripped.graph.node if n.domain == "fna"] == ["FnaLandmarks", "NystromAttention", "NystromAttention"]
    assert strip_fna_functions(stripped) is None  # nothing left to strip
