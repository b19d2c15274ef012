"""The one validation pass of an ONNX input (fna_deploy.export.validate), and the commands that
share it (build --check, verify --onnx, triton): hostile files get one sentence and exit 2."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from fna_deploy.cli import cli
from fna_deploy.export.validate import MAX_SUBGRAPH_DEPTH, InvalidOnnx, validate_onnx
from fna_deploy.triton import RepositoryOptions, write_repository

from ..triton.conftest import tiny_onnx


def fna_onnx(path: Path, *, fna_opset: int = 1, opset: int = 20, dims=("N", 16, 8), **attrs) -> Path:
    """features [B,16,8] -> fna::FnaLandmarks -> idx [B,4]: the smallest graph with an fna node."""
    attributes = {"num_landmarks": 4, "num_prefix": 1, "method": "fps", "plugin_namespace": "fna", "plugin_version": "1"}
    attributes.update(attrs)
    node = helper.make_node("FnaLandmarks", ["features"], ["idx"], domain="fna", name="lm", **attributes)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("features", TensorProto.FLOAT, list(dims))],
                              [helper.make_tensor_value_info("idx", TensorProto.INT32, [dims[0], 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("fna", fna_opset)])
    onnx.save(model, path)
    return path


def _cli(*args: str):
    return CliRunner().invoke(cli, list(args))


def _one_line_error(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "unexpected" not in lines[0] and "report it" not in lines[0], lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_a_well_formed_fna_graph_passes(tmp_path):
    checked = validate_onnx(fna_onnx(tmp_path / "ok.onnx"))
    assert checked.opset == 20 and checked.external_data == [] and len(checked.model.graph.node) == 1


@pytest.mark.parametrize("kwargs, message", [
    ({"fna_opset": 99}, "declares fna opset 99"),
    ({"opset": 7}, "declares ONNX opset 7"),
    ({"dims": ("N", 2**40, 8)}, "has a dimension of 1099511627776"),
    ({"dims": ("N", -5, 8)}, "has a dimension of -5"),
    ({"num_landmarks": -3}, "num_landmarks must be >= 1, got -3"),
    ({"num_landmarks": 2**62}, "outside int32"),
    ({"num_prefix": 9}, "num_prefix 9 exceeds num_landmarks 4"),
    ({"method": "random"}, "method must be one of fps, grid"),
    ({"massive_ratio": float("nan")}, "massive_ratio must be a finite number"),
    ({"num_landmark": 4}, "has attribute 'num_landmark'"),
])
def test_hostile_graphs_are_refused_with_a_sentence(tmp_path, kwargs, message):
    path = fna_onnx(tmp_path / "bad.onnx", **kwargs)
    with pytest.raises(InvalidOnnx, match=message.replace("(", r"\(")):
        validate_onnx(path, "--onnx")
    with pytest.raises(InvalidOnnx):  # triton refuses to write a repository from it
        write_repository(path, tmp_path / "repo", RepositoryOptions(name="m", backend="python"))
    assert not (tmp_path / "repo").exists()


def test_verify_refuses_bad_attributes_before_loading_the_model(tmp_path):
    path = fna_onnx(tmp_path / "bad.onnx", num_landmarks=2**62)
    start = time.monotonic()
    result = _cli("verify", "timm:vit_tiny_patch16_224", "--onnx", str(path), "-q")
    _one_line_error(result, "--onnx", str(path), "outside int32")
    assert time.monotonic() - start < 10


def test_build_check_refuses_fna_opset_99(tmp_path):
    path = fna_onnx(tmp_path / "bad.onnx", fna_opset=99)
    _one_line_error(_cli("build", str(path), "--check", "--runtime", "tensorrt-rtx"), "MODEL.onnx", "declares fna opset 99")


def _with_external(tmp_path: Path, location: str) -> Path:
    (tmp_path / "a").mkdir(exist_ok=True)
    path = tiny_onnx(tmp_path / "a" / "m.onnx", external=True)
    model = onnx.load(str(path), load_external_data=False)
    for entry in model.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = location
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("location, message", [
    ("../../etc/passwd", "is not a file name inside the model's folder"),
    ("/etc/passwd", "is not a file name inside the model's folder"),
    ("w.data", "is a symbolic link"),
])
def test_external_data_must_be_real_files_inside_the_folder(tmp_path, location, message):
    path = _with_external(tmp_path, location)
    os.symlink("/etc/passwd", tmp_path / "a" / "w.data")
    for args in (["build", str(path), "--check", "--runtime", "tensorrt-rtx"],
                 ["triton", str(path), "-o", str(tmp_path / "repo"), "--backend", "python"]):
        _one_line_error(_cli(*args), str(path), message)
    assert not (tmp_path / "repo").exists()  # nothing copied


def test_external_data_bounds_are_checked(tmp_path):
    path = _with_external(tmp_path, "m.onnx.data")
    model = onnx.load(str(path), load_external_data=False)
    for entry in model.graph.initializer[0].external_data:
        if entry.key == "length":
            entry.value = str(10**9)
    onnx.save(model, path)
    with pytest.raises(InvalidOnnx, match="points past the end of the file"):
        validate_onnx(path)


def _nested_if(depth: int) -> onnx.ModelProto:
    cond = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    body = helper.make_graph([helper.make_node("Constant", [], ["y"], value=onnx.numpy_helper.from_array(np.zeros(1, np.float32)))],
                             "leaf", [], [out])
    leaf = body
    for level in range(depth):  # nested in the then branches only: the file grows linearly with depth
        node = helper.make_node("If", ["c"], ["y"], then_branch=body, else_branch=leaf)
        body = helper.make_graph([node], f"level{level}", [], [out])
    return helper.make_model(helper.make_graph(list(body.node), "main", [cond], [out]), opset_imports=[helper.make_opsetid("", 20)])


def test_deeply_nested_subgraphs_are_refused_fast(tmp_path):
    path = tmp_path / "nested.onnx"
    onnx.save(_nested_if(MAX_SUBGRAPH_DEPTH + 4), path)
    start = time.monotonic()
    _one_line_error(_cli("build", str(path), "--check", "--runtime", "tensorrt-rtx"), "nests subgraphs")
    assert time.monotonic() - start < 10
    onnx.save(_nested_if(3), path)
    assert validate_onnx(path).opset == 20  # a few levels are fine


def test_bad_fna_metadata_is_refused(tmp_path):
    path = tiny_onnx(tmp_path / "m.onnx", metadata={"fna_config": '{"num_landmarks": -1}'})
    _one_line_error(_cli("triton", str(path), "-o", str(tmp_path / "repo"), "--backend", "python"), "fna_config metadata is invalid")
    path = tiny_onnx(tmp_path / "m2.onnx", metadata={"input_shape": "[1, 3, 1e99]"})
    with pytest.raises(InvalidOnnx, match="input_shape metadata"):
        validate_onnx(path)
