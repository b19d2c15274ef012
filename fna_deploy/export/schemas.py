"""The ``fna`` ONNX domain: operator schemas (with shape inference) for FnaLandmarks and
NystromAttention, registered with the onnx package so the checker, shape inference and
onnxscript know them. Names, inputs, outputs and attributes come from ``fna_deploy.contract``,
the one table the C++ plugin creators and the TensorRT contract check read too."""

from __future__ import annotations

import onnx
from onnx import TensorProto
from onnx.defs import OpSchema

from .. import contract
from ..contract import DOMAIN, LANDMARKS, NYSTROM, PLUGIN_NAMESPACE, PLUGIN_VERSION

VERSION = contract.DOMAIN_VERSION

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


_ATTR_TYPES = {"int32": OpSchema.AttrType.INT, "float32": OpSchema.AttrType.FLOAT, "string": OpSchema.AttrType.STRING}


def _attr(name: str, default, doc: str) -> OpSchema.Attribute:
    return OpSchema.Attribute(name, onnx.helper.make_attribute(name, default), doc)


def _field_attribute(field: contract.Field) -> OpSchema.Attribute:
    if field.required:
        return OpSchema.Attribute(field.name, _ATTR_TYPES[field.type], field.doc, required=True)
    return _attr(field.name, field.default, field.doc)


def _tensor_type(tensor: contract.Tensor, type_var: str) -> str:
    return "tensor(int32)" if tensor.types == "int32" else type_var


def _schema(spec: contract.Op, type_constraints: list, type_vars: dict) -> OpSchema:
    option = OpSchema.FormalParameterOption
    return OpSchema(
        spec.name,
        DOMAIN,
        VERSION,
        spec.doc,
        inputs=[
            OpSchema.FormalParameter(t.name, _tensor_type(t, type_vars.get(t.name, "T")), f"[{', '.join(t.shape)}] {t.doc}",
                                     param_option=option.Optional if t.optional else option.Single)
            for t in spec.inputs
        ],
        outputs=[OpSchema.FormalParameter(t.name, _tensor_type(t, "T"), f"[{', '.join(t.shape)}] {t.doc}") for t in spec.outputs],
        type_constraints=type_constraints,
        attributes=[
            *(_field_attribute(f) for f in spec.fields),
            _attr("plugin_namespace", PLUGIN_NAMESPACE, "TensorRT plugin namespace"),
            _attr("plugin_version", PLUGIN_VERSION, "TensorRT plugin version"),
        ],
    )


def landmarks_schema() -> OpSchema:
    schema = _schema(contract.op(LANDMARKS), [("T", _FLOATS, "feature types"), ("S", _FLOATS, "score types")], {"scores": "S"})
    schema.set_type_and_shape_inference_function(_landmarks_inference)
    return schema


def nystrom_schema() -> OpSchema:
    schema = _schema(contract.op(NYSTROM), [("T", _FLOATS, "float types")], {})
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
