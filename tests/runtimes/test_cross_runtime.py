"""The portable export in runtimes that are not ONNX Runtime: OpenVINO and onnx.reference.

Every comparison here is against the PyTorch reference (the fna custom ops, or the patched model),
never through ONNX Runtime; ONNX Runtime appears only as a third runtime held to the same answer.
"""

from __future__ import annotations

import io
import json

import numpy as np
import onnx
import onnxruntime as ort
import openvino as ov
import pytest
import torch
from click.testing import CliRunner
from onnx.reference import ReferenceEvaluator
from safetensors.torch import save_file

import fna_deploy as fd
from fna_deploy.bench import OPENVINO_FUNCTIONS, run_bench
from fna_deploy.cli import cli
from fna_deploy.export import export_onnx
from fna_deploy.export.functions import inline_functions
from fna_deploy.ops import landmarks_op, nystrom_op
from fna_deploy.runtimes import openvino as ov_runtime

from ..conftest import tiny_timm
from ..export.test_functions import landmarks_model, nystrom_model

RUNTIMES = ("onnxruntime", "openvino", "onnx.reference")


def run_in(runtime: str, model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    """One inference of an in-memory model; OpenVINO gets the functions inlined (it has no rule for them)."""
    if runtime == "onnxruntime":
        return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    if runtime == "onnx.reference":
        return ReferenceEvaluator(model).run(None, feeds)
    compiled = ov.Core().compile_model(ov.Core().read_model(io.BytesIO(inline_functions(model).SerializeToString())), "CPU",
                                       {"INFERENCE_PRECISION_HINT": "f32"})
    return ov_runtime.run(compiled, feeds)


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("tokens", [37, 197])  # 197: past onnx.reference's 64-entry GatherElements limit
def test_fps_indices_from_the_onnx_loop_equal_the_pytorch_op(runtime, tokens):
    g = torch.Generator().manual_seed(tokens)
    x = torch.randn(2, tokens, 24, generator=g)
    expected = landmarks_op(x, None, 12, 1, 0.0, 0.0, "fps")
    model = landmarks_model(torch.float32, False, num_landmarks=12, num_prefix=1, method="fps", massive_ratio=0.0, artifact_ratio=0.0)
    (idx,) = run_in(runtime, model, {"features": x.numpy()})
    # an FPS Loop that runs no iteration leaves the first tokens in index order: not what FPS picks
    assert not np.array_equal(expected.numpy()[0], np.arange(12))
    np.testing.assert_array_equal(np.asarray(idx).astype(np.int64), expected.numpy())


@pytest.mark.parametrize("runtime", ["openvino", "onnx.reference"])
def test_nystrom_body_beyond_64_tokens_matches_the_pytorch_op(runtime):
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, 3, 197, 16, generator=g) for _ in range(3))
    idx = landmarks_op(q.mean(1), None, 16, 1, 0.0, 0.0, "fps")
    expected = nystrom_op(q, k, v, idx, 0.0, 6)
    (out,) = run_in(runtime, nystrom_model(torch.float32, scale=0.0, pinv_iters=6),
                    {"q": q.numpy(), "k": k.numpy(), "v": v.numpy(), "idx": idx.numpy()})
    np.testing.assert_allclose(out, expected.numpy(), rtol=1e-4, atol=1e-5)


def test_every_loop_has_an_explicit_true_condition():
    model = nystrom_model(torch.float32, scale=0.0, pinv_iters=6)
    model.functions.extend(landmarks_model(torch.float32, False, num_landmarks=4, num_prefix=1, method="fps",
                                           massive_ratio=0.0, artifact_ratio=0.0).functions)
    loops = [(f, n) for f in model.functions for n in f.node if n.op_type == "Loop"]
    assert len(loops) == 2
    for function, loop in loops:
        cond = next(n for n in function.node if loop.input[1] in n.output)
        assert cond.op_type == "Constant" and bool(onnx.numpy_helper.to_array(cond.attribute[0].t)) is True


# ------------------------------------------------------------------ whole models against PyTorch


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A 2-block ViT at 96 px (37 tokens), its weights on disk, and portable / inlined exports."""
    root = tmp_path_factory.mktemp("cross")
    torch.manual_seed(0)
    model = tiny_timm(depth=2, img_size=96)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(root / "w.safetensors"))
    cfg = fd.FNAConfig(num_landmarks=8, layers=[1])
    export_onnx(model, cfg, root / "portable.onnx", check=False)
    export_onnx(model, cfg, root / "inlined.onnx", inline=True, external_data=True, check=False)
    export_onnx(model, cfg, root / "inlined_fp16.onnx", inline=True, fp16=True, check=False)
    export_onnx(model, cfg, root / "trt.onnx", target="trt", check=False)
    reference = fd.patch(model, cfg)
    x = np.random.default_rng(0).standard_normal((1, 3, 96, 96), dtype=np.float32)
    import fna_deploy.patching.base as base

    selected, original = [], base.select_landmarks
    base.select_landmarks = lambda *a, **kw: selected.append(original(*a, **kw)) or selected[-1]  # the PyTorch op's indices
    try:
        with torch.no_grad():
            expected = reference(torch.from_numpy(x)).numpy()
    finally:
        base.select_landmarks = original
    (idx,) = selected
    return root, x, expected, idx.numpy()


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_landmark_indices_inside_the_exported_model_equal_pytorchs(small, runtime):
    root, x, _expected, idx = small
    model = onnx.load(str(root / "portable.onnx"))
    (node,) = [n for n in model.graph.node if n.op_type == "FnaLandmarks"]
    model.graph.output.append(onnx.helper.make_tensor_value_info(node.output[0], onnx.TensorProto.INT32, None))
    got = run_in(runtime, model, {"images": x})[1]
    assert idx.shape == (1, 8) and not np.array_equal(idx[0], np.arange(8))  # FPS picked, not the first tokens
    np.testing.assert_array_equal(np.asarray(got).astype(np.int64), idx)


def test_inlined_export_keeps_external_data_and_has_no_fna_nodes(small):
    root, _x, _expected, _idx = small
    assert (root / "inlined.onnx.data").is_file()
    model = onnx.load(str(root / "inlined.onnx"), load_external_data=False)
    assert not model.functions and not any(n.domain == "fna" for n in model.graph.node)
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["fna_functions"] == "inlined" and json.loads(meta["fna_config"])["num_landmarks"] == 8
    onnx.checker.check_model(str(root / "inlined.onnx"), full_check=True)


@pytest.mark.parametrize("name, precision_check", [("inlined.onnx", "fp32"), ("inlined_fp16.onnx", "fp16")])
def test_openvino_runs_the_inlined_export_like_pytorch(small, name, precision_check):
    root, x, expected, _idx = small
    compiled, details = ov_runtime.compile_onnx(root / name)
    assert details == {**details, "precision": "f32", "inlined_in_memory": False}
    (out,) = ov_runtime.run(compiled, {"images": x})
    if precision_check == "fp32":
        np.testing.assert_allclose(out, expected, atol=1e-4, rtol=1e-3)
    else:  # fp16 weights and activations: the export check's criterion
        assert _cosine(out, expected) >= 0.999 and np.abs(out - expected).max() < 0.05


def test_openvino_inlines_a_portable_export_in_memory(small):
    root, x, expected, _idx = small
    compiled, details = ov_runtime.compile_onnx(root / "portable.onnx")
    assert details["inlined_in_memory"] is True
    np.testing.assert_allclose(ov_runtime.run(compiled, {"images": x})[0], expected, atol=1e-4, rtol=1e-3)


def test_onnx_reference_runs_the_portable_export_like_pytorch(small):
    root, x, expected, _idx = small
    (out,) = ReferenceEvaluator(onnx.load(str(root / "portable.onnx"))).run(None, {"images": x})
    np.testing.assert_allclose(out, expected, atol=1e-4, rtol=1e-3)


def test_a_trt_export_gets_the_bodies_in_memory(small):
    from fna_deploy.runtimes import onnx_reference

    root, x, expected, _idx = small
    assert not onnx.load(str(root / "trt.onnx")).functions
    compiled, details = ov_runtime.compile_onnx(root / "trt.onnx")
    assert details["inlined_in_memory"] is True
    np.testing.assert_allclose(ov_runtime.run(compiled, {"images": x})[0], expected, atol=1e-4, rtol=1e-3)
    np.testing.assert_allclose(onnx_reference.load(root / "trt.onnx").run(None, {"images": x})[0], expected, atol=1e-4, rtol=1e-3)


# ------------------------------------------------------------------ the CLI and bench


def _depth2(monkeypatch):
    import timm

    original = timm.create_model
    monkeypatch.setattr(timm, "create_model", lambda name, **kw: original(name, **{**kw, "depth": 2}))


def _verify(root, onnx_name, *extra):
    args = ["verify", str(root / "w.safetensors"), "--arch", "timm:vit_tiny_patch16_224", "--onnx", str(root / onnx_name), "-q", *extra]
    return CliRunner().invoke(cli, args)


def test_verify_passes_in_three_runtimes_on_a_portable_export(small, tmp_path, monkeypatch):
    root = small[0]
    _depth2(monkeypatch)
    result = _verify(root, "portable.onnx", "--backends", "onnxrt,openvino,onnx-reference", "--random", "1",
                     "--report", str(tmp_path / "v.json"))
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "v.json").read_text())
    assert data["runners"] == ["torch-fna", "torch-dense", "onnxrt", "openvino", "onnx-reference"] and data["passed"]
    pairs = {p["other"]: p for p in data["pairs"]}
    assert all(pairs[r]["gating"] and pairs[r]["max_abs"] < 1e-4 for r in ("onnxrt", "openvino", "onnx-reference"))
    assert "precision f32" in data["notes"]["openvino"] and "inlined_in_memory True" in data["notes"]["openvino"]


def test_verify_names_openvino_bf16_and_judges_it(small, monkeypatch):
    _depth2(monkeypatch)
    result = _verify(small[0], "inlined.onnx", "--backends", "openvino", "--openvino-precision", "bf16", "--random", "1")
    # bf16 loses ~1e-2: it fails the fp32 tolerance, under its own name
    assert result.exit_code == 1 and "error: openvino-bf16 differs from torch-fna" in result.output
    assert "precision bf16" in result.output


@pytest.mark.parametrize("args, message", [
    (["--backends", "openvino"], "add --onnx FILE.onnx"),
    (["--onnx", "x.onnx", "--backends", "tvm"], "unknown backend 'tvm'"),
    (["--onnx", "x.onnx", "--openvino-precision", "bf16"], "add --backends openvino"),
])
def test_verify_backends_bad_input(args, message):
    result = CliRunner().invoke(cli, ["verify", "timm:vit_tiny_patch16_224", *args])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_bench_openvino_precision_without_openvino_is_refused():
    result = CliRunner().invoke(cli, ["bench", "timm:vit_tiny_patch16_224", "--backends", "onnxrt", "--openvino-precision", "bf16"])
    assert result.exit_code == 2 and "add openvino to --backends" in result.output


def test_export_inline_functions_cli(small, tmp_path, monkeypatch):
    root = small[0]
    _depth2(monkeypatch)
    base = ["export", str(root / "w.safetensors"), "--arch", "timm:vit_tiny_patch16_224", "--resolution", "64", "--landmarks", "4",
            "--layers", "1", "-q"]
    result = CliRunner().invoke(cli, [*base, "--target", "trt", "--inline-functions", "-o", str(tmp_path / "t.onnx")])
    assert result.exit_code == 2 and "--inline-functions" in result.output and not (tmp_path / "t.onnx").exists()
    result = CliRunner().invoke(cli, [*base, "--inline-functions", "-o", str(tmp_path / "i.onnx")])
    assert result.exit_code == 0, result.output
    assert "inlined" in result.output
    model = onnx.load(str(tmp_path / "i.onnx"))
    assert not model.functions and {"Loop", "GatherND"} <= {n.op_type for n in model.graph.node}


def test_bench_openvino_backend(small):
    def load(res):
        torch.manual_seed(0)
        return tiny_timm(depth=2, img_size=res)

    report = run_bench(load, model_label="tiny", resolutions=[64], landmarks=[8], layers=[1], backends=["openvino"], iters=2,
                       threads=1)
    rows = [m for m in report.measurements if m.backend == "openvino"]
    assert {m.variant for m in rows} == {"dense", "fna"} and all(m.dtype == "fp32" and m.median_ms > 0 for m in rows)
    (speedup,) = report.speedups
    assert speedup.fna_ops == OPENVINO_FUNCTIONS and speedup.cosine > 0.99
    assert "| openvino | 64 |" in report.markdown() and report.machine["openvino"]
