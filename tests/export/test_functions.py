"""The ONNX function bodies, run by ONNX Runtime, against the PyTorch reference ops."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from fna_deploy.export.functions import attach_functions, landmarks_function, nystrom_function
from fna_deploy.export.schemas import DOMAIN, register_schemas
from fna_deploy.ops import nystrom_attention, select_landmarks

ort = pytest.importorskip("onnxruntime")

_DT = {torch.float32: TensorProto.FLOAT, torch.float16: TensorProto.FLOAT16}


def _run(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    register_schemas()
    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def landmarks_model(dtype, with_scores: bool, **attrs) -> onnx.ModelProto:
    inputs = [helper.make_tensor_value_info("features", _DT[dtype], ["B", "N", "D"])]
    if with_scores:
        inputs.append(helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["B", "N"]))
    node = helper.make_node("FnaLandmarks", [i.name for i in inputs], ["idx"], domain=DOMAIN, plugin_namespace="fna", plugin_version="1", **attrs)
    graph = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info("idx", TensorProto.INT32, ["B", attrs["num_landmarks"]])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid(DOMAIN, 1)])
    return attach_functions(model)


def nystrom_model(dtype, **attrs) -> onnx.ModelProto:
    t = _DT[dtype]
    inputs = [helper.make_tensor_value_info(n, t, ["B", "H", "N", "d"]) for n in "qkv"]
    inputs.append(helper.make_tensor_value_info("idx", TensorProto.INT32, ["B", "m"]))
    node = helper.make_node("NystromAttention", ["q", "k", "v", "idx"], ["out"], domain=DOMAIN, plugin_namespace="fna", plugin_version="1", **attrs)
    graph = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info("out", t, ["B", "H", "N", "d"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid(DOMAIN, 1)])
    return attach_functions(model)


@settings(max_examples=40, deadline=None)
@given(b=st.integers(1, 3), n=st.integers(2, 40), d=st.integers(1, 8), data=st.data())
def test_landmarks_body_matches_reference(b, n, d, data):
    m = data.draw(st.integers(1, n))
    num_prefix = data.draw(st.integers(0, min(m, n - 1)))
    method = data.draw(st.sampled_from(["fps", "grid"]))
    with_scores = data.draw(st.booleans())
    massive = data.draw(st.sampled_from([0.0, 1.5, 4.0])) if with_scores else 0.0
    artifact = data.draw(st.sampled_from([0.0, 1.3, 2.5])) if with_scores else 0.0
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 9999)))
    x = torch.randn(b, n, d, generator=g)
    scores = torch.rand(b, n, generator=g) * 3 if with_scores else None
    expected = select_landmarks(x, m, num_prefix=num_prefix, scores=scores, massive_ratio=massive, artifact_ratio=artifact, method=method)
    model = landmarks_model(torch.float32, with_scores, num_landmarks=m, num_prefix=num_prefix, method=method, massive_ratio=massive, artifact_ratio=artifact)
    feeds = {"features": x.numpy()}
    if with_scores:
        feeds["scores"] = scores.numpy()
    (idx,) = _run(model, feeds)
    assert idx.dtype == np.int32
    np.testing.assert_array_equal(idx, expected.numpy())


def test_landmarks_body_with_planted_massive_and_artifact_tokens():
    x = torch.randn(2, 50, 16)
    scores = torch.ones(2, 50)
    scores[:, 11] = 100.0
    scores[:, 30] = 20.0
    model = landmarks_model(torch.float16, True, num_landmarks=10, num_prefix=1, method="fps", massive_ratio=50.0, artifact_ratio=10.0)
    (idx,) = _run(model, {"features": x.half().numpy(), "scores": scores.numpy()})
    expected = select_landmarks(x.half(), 10, num_prefix=1, scores=scores, massive_ratio=50.0, artifact_ratio=10.0)
    np.testing.assert_array_equal(idx, expected.numpy())
    assert (idx[:, :2] == [0, 11]).all() and not (idx == 30).any()


@pytest.mark.parametrize("iters", [0, 6])
@pytest.mark.parametrize("scale", [0.0, 0.07])
def test_nystrom_body_matches_reference_fp32(iters, scale):
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 3, 37, 16, generator=g) for _ in range(3))
    idx = select_landmarks(q.mean(1), 9, num_prefix=1)
    expected = nystrom_attention(q, k, v, idx, scale=scale or None, pinv_iters=iters)
    model = nystrom_model(torch.float32, scale=scale, pinv_iters=iters)
    (out,) = _run(model, {"q": q.numpy(), "k": k.numpy(), "v": v.numpy(), "idx": idx.numpy()})
    np.testing.assert_allclose(out, expected.numpy(), rtol=1e-4, atol=1e-5)


def test_nystrom_body_fp16_keeps_pinv_in_fp32():
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(1, 2, 64, 32, generator=g) for _ in range(3))
    idx = select_landmarks(q.mean(1), 16)
    expected = nystrom_attention(q, k, v, idx)
    model = nystrom_model(torch.float16, scale=0.0, pinv_iters=6)
    (out,) = _run(model, {"q": q.half().numpy(), "k": k.half().numpy(), "v": v.half().numpy(), "idx": idx.numpy()})
    assert out.dtype == np.float16
    cos = np.dot(out.astype(np.float64).ravel(), expected.double().numpy().ravel()) / (
        np.linalg.norm(out.astype(np.float64)) * np.linalg.norm(expected.double().numpy())
    )
    assert cos > 0.999
    body = next(f for f in model.functions if f.name == "NystromAttention")
    loop = next(n for n in body.node if n.op_type == "Loop")
    z0 = next(n for n in body.node if n.output[0] == loop.input[2])
    # the Newton-Schulz loop runs on fp32 values: A comes from Cast(to=FLOAT) inputs
    casts = [n for n in body.node if n.op_type == "Cast" and helper.get_attribute_value(n.attribute[0]) == TensorProto.FLOAT]
    assert len(casts) >= 3 and z0.op_type == "Div"


def test_bodies_read_numeric_attributes_by_reference():
    lm = landmarks_function("fps", with_scores=True)
    refs = {a.ref_attr_name for n in lm.node for a in n.attribute if a.ref_attr_name}
    assert refs == {"num_landmarks", "num_prefix", "massive_ratio", "artifact_ratio"}
    ny = nystrom_function()
    assert {a.ref_attr_name for n in ny.node for a in n.attribute if a.ref_attr_name} == {"scale", "pinv_iters"}
    standard = {n.domain for f in (lm, ny) for n in f.node}
    assert standard == {""}


def test_unknown_method_has_no_body():
    with pytest.raises(ValueError, match="no ONNX body for method 'random'"):
        landmarks_function("random")
