"""The one plugin contract table (fna_deploy.contract) against the sides that read it: the ONNX
schemas and the generated C++ header. The compiled C++ side (libfna's fna_contract_json and its
attribute checks) is compared in tests/plugins/test_contract_native.py."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from onnx.defs import OpSchema

from fna_deploy import contract
from fna_deploy.export.schemas import register_schemas

ROOT = Path(__file__).resolve().parents[1]
ATTR_TYPES = {"int32": OpSchema.AttrType.INT, "float32": OpSchema.AttrType.FLOAT, "string": OpSchema.AttrType.STRING}


def test_committed_header_is_generated_from_the_table():
    committed = (ROOT / contract.HEADER_PATH).read_text()
    assert committed == contract.render_cpp_header(), "run 'python scripts/gen_contract_header.py' and commit the header"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_contract_header.py"), "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_header_field_rows_match_the_table():
    """Read the committed header as C++ text (an independent parse, not the renderer)."""
    text = (ROOT / contract.HEADER_PATH).read_text()
    assert re.search(r'kNamespace = "(\w+)"', text).group(1) == contract.PLUGIN_NAMESPACE
    assert re.search(r'kVersion = "(\w+)"', text).group(1) == contract.PLUGIN_VERSION
    rows = re.findall(r'\{"(\w+)", FieldType::k(\w+), (true|false), ([-\d.e]+), "([^"]*)", ([^,]+), ([^,]+), "([^"]*)"\}', text)
    expected = [f for o in contract.OPS for f in o.fields]
    assert [r[0] for r in rows] == [f.name for f in expected]
    for (name, ctype, required, default, default_s, lo, hi, choices), f in zip(rows, expected):
        assert ctype.lower() == f.type
        assert (required == "true") == f.required
        if f.type == "string":
            assert default_s == (f.default or "") and choices.split("|") == list(f.choices)
        elif not f.required:
            assert float(default) == f.default
        assert (lo == "kUnbounded") == (f.minimum is None) and (lo == "kUnbounded" or float(lo) == f.minimum)
        assert (hi == "kUnbounded") == (f.maximum is None) and (hi == "kUnbounded" or float(hi) == f.maximum)


@pytest.mark.parametrize("spec", contract.OPS, ids=lambda o: o.name)
def test_onnx_schema_matches_the_table(spec):
    register_schemas()
    schema = onnx.defs.get_schema(spec.name, contract.DOMAIN_VERSION, contract.DOMAIN)
    attrs = schema.attributes
    assert set(attrs) == {f.name for f in spec.fields} | set(contract.IDENTITY_ATTRIBUTES)
    for f in spec.fields:
        a = attrs[f.name]
        assert a.type == ATTR_TYPES[f.type] and a.required == f.required
        if not f.required:
            value = onnx.helper.get_attribute_value(a.default_value)
            if f.type == "string":
                assert value.decode() == f.default
            else:
                assert value == pytest.approx(f.default)
    assert onnx.helper.get_attribute_value(attrs["plugin_version"].default_value).decode() == contract.PLUGIN_VERSION
    assert onnx.helper.get_attribute_value(attrs["plugin_namespace"].default_value).decode() == contract.PLUGIN_NAMESPACE
    assert [i.name for i in schema.inputs] == [t.name for t in spec.inputs]
    assert [i.option == OpSchema.FormalParameterOption.Optional for i in schema.inputs] == [t.optional for t in spec.inputs]
    assert [o.name for o in schema.outputs] == [t.name for t in spec.outputs]
    for formal, tensor in zip([*schema.inputs, *schema.outputs], [*spec.inputs, *spec.outputs]):
        assert (formal.type_str == "tensor(int32)") == (tensor.types == "int32")


def test_onnx_shape_inference_follows_the_output_rules():
    """idx is [B, num_landmarks] int32; out has q's dtype and [B, H, N, dv]."""
    register_schemas()
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("FnaLandmarks", ["f"], ["idx"], domain="fna", num_landmarks=5),
        helper.make_node("NystromAttention", ["q", "k", "v", "idx"], ["out"], domain="fna"),
    ]
    graph = helper.make_graph(nodes, "g", [
        helper.make_tensor_value_info("f", TensorProto.FLOAT16, ["B", 9, 4]),
        helper.make_tensor_value_info("q", TensorProto.FLOAT16, ["B", 2, 9, 4]),
        helper.make_tensor_value_info("k", TensorProto.FLOAT16, ["B", 2, 9, 4]),
        helper.make_tensor_value_info("v", TensorProto.FLOAT16, ["B", 2, 9, 3]),
    ], [helper.make_tensor_value_info("out", TensorProto.UNDEFINED, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid("fna", 1)])
    inferred = {v.name: v.type.tensor_type for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    inferred.update({v.name: v.type.tensor_type for v in onnx.shape_inference.infer_shapes(model).graph.output})
    idx, out = inferred["idx"], inferred["out"]
    assert idx.elem_type == TensorProto.INT32 and [d.dim_param or d.dim_value for d in idx.shape.dim] == ["B", 5]
    assert out.elem_type == TensorProto.FLOAT16 and [d.dim_param or d.dim_value for d in out.shape.dim] == ["B", 2, 9, 3]


@pytest.mark.parametrize("op_name, field, value, expect", [
    ("FnaLandmarks", "num_landmarks", -3, "num_landmarks must be >= 1, got -3"),
    ("FnaLandmarks", "method", "random", "method must be one of fps, grid"),
    ("FnaLandmarks", "massive_ratio", float("inf"), "must be a finite number"),
    ("NystromAttention", "pinv_iters", 101, "pinv_iters must be <= 100"),
    ("NystromAttention", "scale", -0.5, "scale must be >= 0"),
])
def test_field_validity(op_name, field, value, expect):
    f = contract.op(op_name).field(field)
    assert expect in f.problem(value)
    assert f.problem(f.default if f.default is not None else 8) is None


def test_contract_check_compares_the_node_tensors_with_the_output_rules():
    from fna_deploy.trt.contract_check import compare_io

    lm, ny = contract.op("FnaLandmarks"), contract.op("NystromAttention")
    good_lm = compare_io(lm, {"num_landmarks": 8}, [["FLOAT16", ["batch", 17, 64]], None], [["INT32", ["batch", 8]]])
    assert good_lm == []
    bad_lm = compare_io(lm, {"num_landmarks": 8}, [["INT64", ["batch", 17, 64]]], [["INT64", ["batch", 9, 1]]])
    assert any("input features [B, N, D] must be FLOAT, FLOAT16 or BFLOAT16, the file says INT64" in p for p in bad_lm)
    assert any("output idx [B, num_landmarks] has rank 3" in p for p in bad_lm)
    assert any("output idx [B, num_landmarks] must be INT32, the file says INT64" in p for p in bad_lm)
    assert compare_io(lm, {"num_landmarks": 8}, [None], [["INT32", ["batch", 9]]]) == [
        "output idx [B, num_landmarks] has 9 landmarks in the file but num_landmarks=8"]
    q = ["FLOAT16", ["batch", 3, 17, 64]]
    assert compare_io(ny, {}, [q, q, q, ["INT32", ["batch", 8]]], [q]) == []
    assert compare_io(ny, {}, [q, q, q, ["INT32", ["batch", 8]]], [["FLOAT", ["batch", 3, 17, 64]]]) == [
        "output out [B, H, N, dv] must have q's type FLOAT16, the file says FLOAT"]
