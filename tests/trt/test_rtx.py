"""A real TensorRT ONNX parser and builder on any machine: TensorRT for RTX (pip install tensorrt-rtx)
checks the plugin contract of real exports and builds dense engines on the CPU."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch
from click.testing import CliRunner

import fna_deploy as fd
from fna_deploy.cli import cli
from fna_deploy.export import export_onnx
from fna_deploy.trt import EngineSidecar, engine_runs_here, runtime
from fna_deploy.trt.contract_check import check_contract

from ..conftest import tiny_timm

pytest.importorskip("tensorrt_rtx", reason="needs TensorRT for RTX (pip install tensorrt-rtx; in the dev extra)")
CONFIG = fd.FNAConfig(num_landmarks=8, layers="all", massive_ratio=10.0)


def _hf_vit():
    transformers = pytest.importorskip("transformers")
    from fna_deploy.patching.hf import HFVisionModel

    config = transformers.ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                                    image_size=32, patch_size=8)
    return HFVisionModel(transformers.ViTForImageClassification(config).eval())


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """timm fp32/fp16 trt and dense; HF ViT fp32 trt and fp16 portable (vit_tiny-sized, small images)."""
    out = tmp_path_factory.mktemp("rtx")
    torch.manual_seed(0)
    timm_model = tiny_timm(depth=2)
    hf_model = _hf_vit()
    paths = {}
    for name, model, kwargs in [
        ("timm-trt", timm_model, {"target": "trt"}),
        ("timm-trt-fp16", timm_model, {"target": "trt", "fp16": True}),
        ("timm-dense", timm_model, {"target": "dense"}),
        ("hf-trt", hf_model, {"target": "trt"}),
        ("hf-portable-fp16", hf_model, {"target": "portable", "fp16": True}),
    ]:
        paths[name] = out / f"{name}.onnx"
        export_onnx(model, CONFIG, paths[name], check=False, **kwargs)
    return paths


@pytest.mark.parametrize("name", ["timm-trt", "timm-trt-fp16", "hf-trt", "hf-portable-fp16"])
def test_contract_check_passes_for_real_exports(exports, name):
    report = check_contract(exports[name], "tensorrt-rtx")
    assert report.ok, report.problems
    assert report.runtime == "tensorrt-rtx" and report.graph_parses and not report.rejected
    assert [n.op_type for n in report.nodes] == ["FnaLandmarks", "NystromAttention", "NystromAttention"]
    landmarks, attention = report.nodes[0], report.nodes[1]
    assert all(n.creator_found for n in report.nodes)
    # what the real parser handed to the creator, typed by the ONNX attributes
    assert landmarks.passed == {
        "num_landmarks": {"type": "INT32", "value": 8}, "num_prefix": {"type": "INT32", "value": 1},
        "massive_ratio": {"type": "FLOAT32", "value": 10.0}, "artifact_ratio": {"type": "FLOAT32", "value": 0.0},
        "method": {"type": "CHAR", "value": "fps"},
    }
    head_dim = 192 // 3 if name.startswith("timm") else 64 // 4
    assert attention.passed["pinv_iters"] == {"type": "INT32", "value": 6}
    assert attention.passed["scale"]["type"] == "FLOAT32" and attention.passed["scale"]["value"] == pytest.approx(head_dim ** -0.5)
    assert ("portable" in name) == any("portable export" in n for n in report.notes)


def _edit(model: onnx.ModelProto, op_type: str, index: int, name: str, attr: "onnx.AttributeProto | None") -> None:
    node = [n for n in model.graph.node if n.op_type == op_type][index]
    keep = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(keep + ([attr] if attr is not None else []))


def test_hand_edited_attributes_are_each_caught_with_a_sentence(exports, tmp_path):
    model = onnx.load(exports["timm-trt"])
    make = onnx.helper.make_attribute
    _edit(model, "FnaLandmarks", 0, "num_landmarks", make("num_landmarks", -3))  # negative
    _edit(model, "FnaLandmarks", 0, "num_landmark", make("num_landmark", 8))  # unknown name
    _edit(model, "NystromAttention", 0, "pinv_iters", make("pinv_iters", 6.0))  # wrong type (FLOAT for an INT field)
    _edit(model, "NystromAttention", 1, "plugin_version", make("plugin_version", "2"))  # unknown plugin version
    bad = tmp_path / "bad.onnx"
    onnx.save(model, bad)
    report_path = tmp_path / "report.json"
    result = CliRunner().invoke(cli, ["build", str(bad), "--check", "--runtime", "tensorrt-rtx", "--report", str(report_path)])
    assert result.exit_code == 1, result.output
    report = json.loads(report_path.read_text())
    assert not report["ok"]
    problems = report["problems"]
    assert len(problems) == 5, problems
    lm, att0, att1 = "/blocks.0/attn/FnaLandmarks", "/blocks.0/attn/NystromAttention", "/blocks.1/attn/NystromAttention"
    assert any(p.startswith(lm) and "num_landmarks must be >= 1, got -3" in p for p in problems)
    assert any(p.startswith(lm) and "'num_landmark' is not a field of the FnaLandmarks creator" in p for p in problems)
    # the file's idx tensor still has 8 columns: the contract's output rule catches the mismatch too
    assert any(p.startswith(lm) and "output idx [B, num_landmarks] has 8 landmarks in the file but num_landmarks=-3" in p for p in problems)
    assert any(p.startswith(att0) and "pinv_iters reached the creator as FLOAT32 but the creator declares INT32" in p for p in problems)
    assert any(p.startswith(att1) and "no creator NystromAttention version '2' in namespace 'fna'" in p for p in problems)
    nodes = {n["name"]: n for n in report["nodes"]}
    assert nodes[att1]["creator_found"] is False and nodes[lm]["creator_found"] is True
    assert report["graph_parses"] and report["rejected"] == []  # the rest of the graph still parses
    assert "contract check FAILED: 5 problem(s)" in result.output


def test_check_reports_a_non_fna_node_the_parser_rejects(exports, tmp_path):
    model = onnx.load(exports["timm-dense"])
    node = model.graph.node[len(model.graph.node) // 2]
    node.op_type, node.domain = "NoSuchOp", "com.example"
    model.opset_import.append(onnx.helper.make_opsetid("com.example", 1))
    path = tmp_path / "unsupported.onnx"
    onnx.save(model, path)
    report = check_contract(path, "tensorrt-rtx")
    assert not report.ok and not report.graph_parses
    assert [r["op_type"] for r in report.rejected] == ["NoSuchOp"]
    assert any("the parser rejects" in p and "NoSuchOp" in p for p in report.problems)


def test_check_refuses_a_file_that_is_not_onnx(tmp_path):
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"not a protobuf at all \x00\xff")
    result = CliRunner().invoke(cli, ["build", str(path), "--check", "--runtime", "tensorrt-rtx"])
    assert result.exit_code == 2 and "is not an ONNX model" in result.output


def test_dense_engine_with_dynamic_batch_and_its_triton_repository(exports, tmp_path):
    plan = tmp_path / "dense.plan"
    result = CliRunner().invoke(cli, ["build", str(exports["timm-dense"]), "-o", str(plan), "--runtime", "tensorrt-rtx",
                                      "--batch", "1:2:4", "--compute-capabilities", "86,120"])
    assert result.exit_code == 0, result.output
    assert plan.stat().st_size > 1_000_000  # a real engine
    sidecar = EngineSidecar.from_json(EngineSidecar.path_for(plan).read_text())
    assert sidecar.runtime == "tensorrt-rtx" and sidecar.runtime_version == runtime.runtime_version("tensorrt-rtx") and "tensorrt_version" not in json.loads(EngineSidecar.path_for(plan).read_text())
    assert sidecar.compute_capabilities == [86, 120] and sidecar.plugin is None
    assert [(t.name, t.dtype, t.shape) for t in sidecar.inputs] == [("images", "float32", [-1, 3, 64, 64])]
    assert sidecar.profile["images"] == {"min": [1, 3, 64, 64], "opt": [2, 3, 64, 64], "max": [4, 3, 64, 64]}
    assert sidecar.min_batch == 1 and sidecar.max_batch == 4

    reason = engine_runs_here(plan)
    if runtime.local_compute_capability() is None:
        assert reason and "needs a CUDA GPU" in reason

    # Triton's tensorrt backend cannot load a TensorRT-RTX plan: refused in one sentence, nothing written
    repo = tmp_path / "repo"
    repo.mkdir()
    result = CliRunner().invoke(cli, ["triton", str(plan), "-o", str(repo), "--name", "dense_rtx", "--backend", "tensorrt"])
    assert result.exit_code == 2, result.output
    assert "was built with TensorRT-RTX" in result.output and "--runtime tensorrt" in result.output
    assert "serve the portable ONNX export" in result.output and result.output.count("\n") == 1
    assert list(repo.iterdir()) == []


def test_hopper_is_refused_in_one_sentence(exports, tmp_path):
    plan = tmp_path / "h.plan"
    result = CliRunner().invoke(cli, ["build", str(exports["timm-dense"]), "-o", str(plan), "--runtime", "tensorrt-rtx",
                                      "--compute-capabilities", "80,90"])
    assert result.exit_code == 2
    assert "TensorRT-RTX does not build or run engines for compute capability 9.0" in result.output
    assert not plan.exists() and not EngineSidecar.path_for(plan).exists()


def test_fna_export_without_an_rtx_plugin_library_names_what_is_missing(exports, tmp_path, monkeypatch):
    from fna_deploy import native

    monkeypatch.setattr(native, "default_build_dir", lambda: tmp_path / "no-build")
    plan = tmp_path / "fna.plan"
    result = CliRunner().invoke(cli, ["build", str(exports["timm-trt"]), "-o", str(plan), "--runtime", "tensorrt-rtx"])
    assert result.exit_code == 2
    assert "no TensorRT-RTX build of the fna plugin library" in result.output
    assert "fna-deploy plugin build --runtime tensorrt-rtx --tensorrt-include DIR" in result.output
    assert not plan.exists()


def test_child_gets_the_unversioned_name_of_the_very_library_the_wheel_loads(tmp_path):
    """The parser's dlopen("libtensorrt_rtx.so") must find the file this process loaded (another copy
    would load a second plugin registry): a private folder first on the child's LD_LIBRARY_PATH."""
    import os

    from fna_deploy.trt import rtx_child

    runtime.import_runtime("tensorrt-rtx")
    loaded = rtx_child.loaded_library("tensorrt_rtx")
    maps = Path("/proc/self/maps").read_text()
    assert loaded is not None and str(loaded) in maps and loaded.name == "libtensorrt_rtx.so.1"
    env = rtx_child.child_env("tensorrt_rtx", tmp_path)
    first = Path(env["LD_LIBRARY_PATH"].split(os.pathsep)[0])
    assert first == tmp_path / "libs" and (first / "libtensorrt_rtx.so").resolve() == loaded
    assert os.environ.get("LD_LIBRARY_PATH", "") in env["LD_LIBRARY_PATH"]  # what was there stays, after it


def test_a_dying_builder_is_one_sentence_with_its_signal(exports, tmp_path, monkeypatch):
    from fna_deploy.trt import rtx_child

    dying = tmp_path / "dies.py"
    dying.write_text("import os, sys\nprint('terminate called without an active exception', file=sys.stderr)\nos.abort()\n")
    with pytest.raises(rtx_child.ChildDied, match=r"^the test process was killed by SIGABRT \(signal 6\); nothing was written$"):
        rtx_child.run_script(dying, {}, "tensorrt_rtx", tmp_path, "test")

    real = rtx_child.run_script
    monkeypatch.setattr(rtx_child, "run_script", lambda script, *a, **k: real(dying, *a, **k))
    plan = tmp_path / "dies.plan"
    result = CliRunner().invoke(cli, ["build", str(exports["timm-dense"]), "-o", str(plan), "--runtime", "tensorrt-rtx",
                                      "--compute-capabilities", "86"])
    assert result.exit_code == 2
    assert result.output == ("error: the TensorRT-RTX builder process was killed by SIGABRT (signal 6); nothing was written; "
                             "rerun with --verbose to see its log\n")
    assert not plan.exists() and not EngineSidecar.path_for(plan).exists()
