"""The ``fna`` ONNX domain: operator schemas (with shape inference) for FnaLandmarks and
NystromAttention, registered with the onnx package so the checker, shape inference and
onnxscript know them. The contract is ../shared/ARCHITECTURE.md ("ONNX operator contract")."""

from __future__ import annotations

import onnx
from onnx import TensorProto
from onnx.defs import OpSchema

DOMAIN = "fna"
VERSION = 1
LANDMARKS = "FnaLandmarks"
NYSTROM = "NystromAttention"
PLUGIN_NAMESPACE = "fna"
PLUGIN_VERSION = "1"

_FLOATS = ["tensor(float)", "tensor(float16)", "tensor(bfloat16)"]
_registered = False


def _landmarks_inference(ctx: "onnx.shape_inference.InferenceContext") -> None:
    features = ctx.get_input_type(0)
    m = ctx.get_attribute("num_landmarks")
    out = onnx.helper.make_tensor_type_proto(TensorProto.INT32, None)
    if features is not None and features.tensor_type.HasField("shape") and m is not None:
        batch = features.tensor_type.shape.dim[0]
        out.tensor_type.shape.dim.add().CopyFrom(batch)
        out.tensor_type.shape.dim.add().dim_value = m.i
    ctx.set_output_type(0, out)


def _nystrom_inference(ctx: "onnx.shape_inference.InferenceContext") -> None:
    q = ctx.get_input_type(0)
    v = ctx.get_input_type(2)
    if q is None:
        return
    out = onnx.TypeProto()
    out.tensor_type.elem_type = q.tensor_type.elem_type
    if q.tensor_type.HasField("shape") and v is not None and v.tensor_type.HasField("shape"):
        dims = list(q.tensor_type.shape.dim)[:3] + [v.tensor_type.shape.dim[3]]
        for dim in dims:
            out.tensor_type.shape.dim.add().CopyFrom(dim)
    ctx.set_output_type(0, out)


def _attr(name: str, default, doc: str) -> OpSchema.Attribute:
    return OpSchema.Attribute(name, onnx.helper.make_attribute(name, default), doc)


def _plugin_attributes() -> list:
    return [
        _attr("plugin_namespace", PLUGIN_NAMESPACE, "TensorRT plugin namespace"),
        _attr("plugin_version", PLUGIN_VERSION, "TensorRT plugin version"),
    ]


def landmarks_schema() -> OpSchema:
    schema = OpSchema(
        LANDMARKS,
        DOMAIN,
        VERSION,
        "Landmark token indices for Fast Nystrom Attention: guaranteed prefix/massive tokens first, "
        "then farthest-point sampling (or an even grid) over eligible tokens; excluded tokens fill in last.",
        inputs=[
            OpSchema.FormalParameter("features", "T", "[B, N, D] sampling features"),
            OpSchema.FormalParameter(
                "scores", "S", "[B, N] per-token activation norms", param_option=OpSchema.FormalParameterOption.Optional
            ),
        ],
        outputs=[OpSchema.FormalParameter("idx", "tensor(int32)", "[B, m] landmark indices")],
        type_constraints=[("T", _FLOATS, "feature types"), ("S", _FLOATS, "score types")],
        attributes=[
            OpSchema.Attribute("num_landmarks", OpSchema.AttrType.INT, "m", required=True),
            _attr("num_prefix", 0, "leading tokens always kept"),
            _attr("method", "fps", "fps | grid"),
            _attr("massive_ratio", 0.0, "guarantee tokens with score >= ratio x median (0 = off)"),
            _attr("artifact_ratio", 0.0, "exclude tokens with score >= ratio x median (0 = off)"),
            *_plugin_attributes(),
        ],
    )
    schema.set_type_and_shape_inference_function(_landmarks_inference)
    return schema


def nystrom_schema() -> OpSchema:
    schema = OpSchema(
        NYSTROM,
        DOMAIN,
        VERSION,
        "Nystrom approximation of softmax attention on landmark tokens: "
        "softmax(s q kp^T) pinv(softmax(s qp kp^T)) softmax(s qp k^T) v, pinv by Newton-Schulz in fp32.",
        inputs=[
            OpSchema.FormalParameter("q", "T", "[B, H, N, d]"),
            OpSchema.FormalParameter("k", "T", "[B, H, N, d]"),
            OpSchema.FormalParameter("v", "T", "[B, H, N, dv]"),
            OpSchema.FormalParameter("idx", "tensor(int32)", "[B, m] landmark indices"),
        ],
        outputs=[OpSchema.FormalParameter("out", "T", "[B, H, N, dv]")],
        type_constraints=[("T", _FLOATS, "float types")],
        attributes=[
            _attr("scale", 0.0, "attention scale (0 = head_dim ** -0.5)"),
            _attr("pinv_iters", 6, "Newton-Schulz iterations"),
            *_plugin_attributes(),
        ],
    )
    schema.set_type_and_shape_inference_function(_nystrom_inference)
    return schema


def register_schemas() -> None:
    """Register the fna domain with onnx (idempotent)."""
    global _registered
    if _registered:
        return
    for schema in (landmarks_schema(), nystrom_schema()):
        try:
            onnx.defs.get_schema(schema.name, VERSION, DOMAIN)
        except onnx.defs.SchemaError:
            onnx.defs.register_schema(schema)
    _registered = True
