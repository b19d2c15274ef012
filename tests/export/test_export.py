"""export_onnx end to end: targets, families, ORT parity, node attributes, metadata, fp16, errors."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
import torch
from onnx import helper

import fna_deploy as fd
from fna_deploy.export import export_onnx
from fna_deploy.export import check as check_module
from fna_deploy.patching import patch_record

from ..conftest import tiny_timm
from ..patching.test_families import FAMILIES

ort = pytest.importorskip("onnxruntime")

CONFIG = fd.FNAConfig(num_landmarks=8, layers="all")


def _attrs(node) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _ort(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def timm_exports(tmp_path_factory):
    """One small timm model exported in all three targets (shared by the tests below)."""
    torch.manual_seed(0)
    model = tiny_timm(depth=3)
    cfg = fd.FNAConfig(num_landmarks=8, layers="1-2", massive_ratio=10.0)
    out = tmp_path_factory.mktemp("timm")
    reports = {t: export_onnx(model, cfg, out / f"{t}.onnx", target=t, model_spec="timm:vit_tiny") for t in ("portable", "trt", "dense")}
    return model, cfg, reports


def test_all_targets_pass_parity(timm_exports):
    _model, _cfg, reports = timm_exports
    for target, report in reports.items():
        assert report.passed, (target, report.failures)
        assert [p["batch"] for p in report.parity] == [1, 2]
        assert all(p["max_abs"] < 1e-4 for p in report.parity)


def test_portable_has_contract_nodes_and_bodies(timm_exports):
    _model, _cfg, reports = timm_exports
    model = onnx.load(reports["portable"].path)
    onnx.checker.check_model(model, full_check=True)
    assert ("fna", 1) in {(o.domain, o.version) for o in model.opset_import}
    fna_nodes = [n for n in model.graph.node if n.domain == "fna"]
    assert [n.op_type for n in fna_nodes] == ["FnaLandmarks", "NystromAttention", "NystromAttention"]
    assert [n.name for n in fna_nodes] == ["/blocks.1/attn/FnaLandmarks", "/blocks.1/attn/NystromAttention", "/blocks.2/attn/NystromAttention"]
    lm = _attrs(fna_nodes[0])
    assert lm == {
        "num_landmarks": 8, "num_prefix": 1, "method": b"fps", "massive_ratio": 10.0, "artifact_ratio": 0.0,
        "plugin_namespace": b"fna", "plugin_version": b"1",
    }
    assert len(fna_nodes[0].input) == 2  # features and scores
    ny = _attrs(fna_nodes[1])
    assert ny["pinv_iters"] == 6 and ny["scale"] == pytest.approx(64**-0.5) and ny["plugin_namespace"] == b"fna" and ny["plugin_version"] == b"1"
    # idx flows from the one landmark node into every NystromAttention node, as int32
    idx_name = fna_nodes[0].output[0]
    assert all(n.input[3] == idx_name for n in fna_nodes[1:])
    inferred = onnx.shape_inference.infer_shapes(model)
    vi = {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    assert vi[idx_name].type.tensor_type.elem_type == onnx.TensorProto.INT32
    assert {(f.domain, f.name) for f in model.functions} == {("fna", "FnaLandmarks"), ("fna", "NystromAttention")}
    # the dense attention of the patched blocks is gone; block 0 keeps its softmax
    assert sum(n.op_type == "Softmax" for n in model.graph.node) == 1


def test_trt_target_has_plugin_nodes_without_bodies(timm_exports):
    _model, _cfg, reports = timm_exports
    model = onnx.load(reports["trt"].path)
    assert not model.functions
    assert reports["trt"].fna_nodes == {"FnaLandmarks": 1, "NystromAttention": 2}
    assert "function bodies attached in memory" in reports["trt"].check_note
    onnx.checker.check_model(model, full_check=True)  # the fna schemas are registered
    with pytest.raises(Exception):
        _ort(reports["trt"].path)  # ONNX Runtime cannot run plugin-only nodes, as expected


def test_dense_target_is_the_unpatched_model(timm_exports):
    model, _cfg, reports = timm_exports
    onnx_model = onnx.load(reports["dense"].path)
    assert not [n for n in onnx_model.graph.node if n.domain == "fna"]
    assert reports["dense"].config is None
    x = torch.randn(2, 3, 64, 64)
    assert patch_record(model) is None  # export left the model as it found it
    with torch.no_grad():
        expected = model(x).numpy()
    (out,) = _ort(reports["dense"].path).run(None, {"images": x.numpy()})
    np.testing.assert_allclose(out, expected, atol=1e-4)


def test_metadata_and_report(timm_exports, tmp_path):
    _model, cfg, reports = timm_exports
    report = reports["portable"]
    meta = {p.key: p.value for p in onnx.load(report.path).metadata_props}
    assert fd.FNAConfig.from_json(meta["fna_config"]) == cfg
    assert meta["fna_deploy_version"] == fd.__version__ and meta["tokens"] == "17" and meta["model_spec"] == "timm:vit_tiny"
    assert json.loads(meta["fna_layers"]) == [1, 2] and meta["fna_target"] == "portable"
    report.write_json(tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["passed"] is True and data["fna_nodes"] == {"FnaLandmarks": 1, "NystromAttention": 2}
    assert data["file_size"] == report.file_size == os.path.getsize(report.path)
    assert data["parity"][0]["criterion"].startswith("max abs error <=")


def test_dynamic_batch_runs_other_sizes(timm_exports):
    model, cfg, reports = timm_exports
    session = _ort(reports["portable"].path)
    assert session.get_inputs()[0].shape[0] not in (1, 2)  # symbolic
    fd.patch(model, cfg)
    try:
        x = torch.randn(5, 3, 64, 64)
        with torch.no_grad():
            expected = model(x).numpy()
    finally:
        fd.unpatch(model)
    (out,) = session.run(None, {"images": x.numpy()})
    np.testing.assert_allclose(out, expected, atol=1e-4)


def test_static_batch(tmp_path):
    model = tiny_timm(depth=1)
    report = export_onnx(model, fd.FNAConfig(num_landmarks=6, layers="all"), tmp_path / "s.onnx", input_shape=(3, 3, 64, 64), dynamic_batch=False)
    assert report.passed and [p["batch"] for p in report.parity] == [3]
    assert [d.dim_value for d in onnx.load(tmp_path / "s.onnx").graph.input[0].type.tensor_type.shape.dim] == [3, 3, 64, 64]


def test_fp16_export(tmp_path):
    model = tiny_timm(depth=2)
    report = export_onnx(model, fd.FNAConfig(num_landmarks=8, layers="all", method="grid"), tmp_path / "h.onnx", fp16=True)
    assert report.passed and report.fp16
    assert all(p["criterion"] == "cosine >= 0.999" and p["cosine"] >= 0.999 for p in report.parity)
    onnx_model = onnx.load(tmp_path / "h.onnx")
    assert onnx_model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert onnx_model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    weights = [t for t in onnx_model.graph.initializer if len(t.dims) >= 2]
    assert weights and all(t.data_type == onnx.TensorProto.FLOAT16 for t in weights)
    params = sum(p.numel() for p in model.parameters())
    assert report.file_size < 0.6 * params * 4  # about half the fp32 size


EXPORT_FAMILIES = ["hf-vit-cls", "hf-dinov2", "hf-dinov2-reg", "hf-clip", "hf-siglip", "torchvision", "timm-reg4-dinov2"]


@pytest.mark.parametrize("target", ["portable", "trt", "dense"])
@pytest.mark.parametrize("name", EXPORT_FAMILIES)
def test_families_in_every_target(name, target, tmp_path):
    build, _size, _fam, prefix = FAMILIES[name]
    torch.manual_seed(0)
    model = build()
    report = export_onnx(model, fd.FNAConfig(num_landmarks=8, layers="all", massive_ratio=5.0), tmp_path / "m.onnx",
                         target=target, model_spec=name)
    assert report.passed, report.failures  # ORT vs PyTorch at batch 1 and 2 (trt: bodies attached in memory)
    onnx_model = onnx.load(tmp_path / "m.onnx")
    if target == "dense":
        assert report.fna_nodes == {} and not onnx_model.functions
        return
    assert report.fna_nodes == {"FnaLandmarks": 1, "NystromAttention": 2}
    assert bool(onnx_model.functions) == (target == "portable")
    lm = next(n for n in onnx_model.graph.node if n.op_type == "FnaLandmarks")
    assert _attrs(lm)["num_prefix"] == prefix


def test_exported_program_with_fna_ops(tmp_path):
    model = fd.patch(tiny_timm(depth=2), fd.FNAConfig(num_landmarks=8))
    torch.export.save(torch.export.export(model, (torch.randn(1, 3, 64, 64),)), tmp_path / "m.pt2")
    loaded = fd.load_model(tmp_path / "m.pt2")
    report = export_onnx(loaded, None, tmp_path / "m.onnx", dynamic_batch=False)
    assert report.passed and report.fna_nodes == {"FnaLandmarks": 1, "NystromAttention": 1}
    with pytest.raises(ValueError, match="already holds FNA ops"):
        export_onnx(loaded, None, tmp_path / "d.onnx", target="dense", dynamic_batch=False)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"target": "tensorrt"}, "target must be one of portable, trt, dense"),
        ({"opset": 17}, "opset must be an int from 18"),
        ({"input_shape": (3, 64)}, "input_shape must be"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        export_onnx(tiny_timm(depth=1), CONFIG, tmp_path / "x.onnx", **kwargs)
    assert not list(tmp_path.iterdir())


def test_bad_paths_and_sizes(tmp_path):
    model = tiny_timm(depth=1)
    with pytest.raises(ValueError, match="should end in .onnx"):
        export_onnx(model, CONFIG, tmp_path / "x.txt")
    with pytest.raises(FileNotFoundError, match="output directory does not exist"):
        export_onnx(model, CONFIG, tmp_path / "missing" / "x.onnx")
    with pytest.raises(ValueError, match="18 landmarks is more than the 17 tokens at 64x64"):
        export_onnx(model, fd.FNAConfig(num_landmarks=18), tmp_path / "x.onnx")
    assert not list(tmp_path.iterdir())


def test_failure_while_writing_leaves_nothing(tmp_path, monkeypatch):
    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(onnx, "save_model", broken_save)
    with pytest.raises(OSError, match="disk full"):
        export_onnx(tiny_timm(depth=1), CONFIG, tmp_path / "x.onnx", check=False)
    assert not list(tmp_path.iterdir())  # no model, no staging folder


def test_failed_parity_is_reported_and_the_file_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(check_module, "FP32_TOL", 0.0)
    report = export_onnx(tiny_timm(depth=1), CONFIG, tmp_path / "x.onnx")
    assert not report.passed
    assert "output 'output' at batch 1: max abs error" in report.failures[0]
    assert (tmp_path / "x.onnx").exists()


def test_external_data(tmp_path):
    model = tiny_timm(depth=1)
    report = export_onnx(model, fd.FNAConfig(num_landmarks=6, layers="all"), tmp_path / "m.onnx", external_data=True)
    assert report.passed  # ONNX Runtime read the weights from m.onnx.data
    assert [os.path.basename(f) for f in report.files] == ["m.onnx", "m.onnx.data"]
    assert os.path.getsize(tmp_path / "m.onnx") < 0.1 * os.path.getsize(tmp_path / "m.onnx.data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.data"]  # no staging left
    # writing the same path without external data removes the stale weights file
    export_onnx(model, fd.FNAConfig(num_landmarks=6, layers="all"), tmp_path / "m.onnx", external_data=False, check=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
