"""Convert an fp32 fna ONNX model to fp16, for builders that only take strongly typed networks.

TensorRT 11 dropped the FP16 builder flag: precision comes from the tensor types in the ONNX.
This pass rewrites the main graph to fp16 and keeps what must stay fp32:

* graph inputs/outputs stay fp32 (a Cast at each end) unless ``keep_io_types=False``;
* token-norm reductions (ReduceL2 / ReduceSumSquare: the massive-token scores) run in fp32, since
  residual norms of attention-sink tokens overflow fp16;
* the fna function bodies are not touched: the pseudo-inverse inside NystromAttention is computed
  in fp32 whatever the I/O type (the bodies Cast around it; the TensorRT plugin does the same);
* Resize scales stay fp32 (the operator requires it).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .schemas import DOMAIN

F32, F16 = TensorProto.FLOAT, TensorProto.FLOAT16
_FP32_REDUCTIONS = ("ReduceL2", "ReduceSumSquare")
_FP16_MAX = float(np.finfo(np.float16).max)


def _to_fp16_tensor(tensor: onnx.TensorProto) -> onnx.TensorProto:
    array = numpy_helper.to_array(tensor).astype(np.float32)
    converted = numpy_helper.from_array(np.clip(array, -_FP16_MAX, _FP16_MAX).astype(np.float16), tensor.name)
    return converted


def is_fp16(model: onnx.ModelProto) -> bool:
    """Whether the model's weights are already fp16 (an fp16 export or a converted model)."""
    weights = [t for t in model.graph.initializer if len(t.dims) >= 2]
    return bool(weights) and all(t.data_type == F16 for t in weights)


def convert_to_fp16(model: onnx.ModelProto, *, keep_io_types: bool = True) -> onnx.ModelProto:
    """Return an fp16 copy of ``model`` (see the module docstring for what stays fp32)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    if any(t.data_type == F16 for t in graph.initializer if len(t.dims) >= 2):
        raise ValueError("the model already has fp16 weights; convert an fp32 export")

    keep_fp32: set[str] = set()
    for node in graph.node:
        if node.op_type == "Resize" and len(node.input) > 2 and node.input[2]:
            keep_fp32.add(node.input[2])

    for i, init in enumerate(graph.initializer):
        if init.data_type == F32 and init.name not in keep_fp32:
            graph.initializer[i].CopyFrom(_to_fp16_tensor(init))

    new_nodes: list[onnx.NodeProto] = []
    reduction_outputs: set[str] = set()
    for node in graph.node:
        if node.domain == "" and node.op_type == "Cast":
            for attr in node.attribute:
                if attr.name == "to" and attr.i == F32:
                    attr.i = F16
        elif node.domain == "" and node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type == F32:
                    attr.t.CopyFrom(_to_fp16_tensor(attr.t))
                elif attr.name == "value_float":
                    node.attribute.remove(attr)
                    node.attribute.append(helper.make_attribute("value", numpy_helper.from_array(np.array(attr.f, np.float16))))
                    break
                elif attr.name == "value_floats":
                    floats = list(attr.floats)
                    node.attribute.remove(attr)
                    node.attribute.append(helper.make_attribute("value", numpy_helper.from_array(np.array(floats, np.float16))))
                    break
        elif node.domain == "" and node.op_type in ("ConstantOfShape", "EyeLike"):
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type == F32:
                    attr.t.CopyFrom(_to_fp16_tensor(attr.t))
                if attr.name == "dtype" and attr.i == F32:
                    attr.i = F16
        if node.domain == "" and node.op_type in _FP32_REDUCTIONS:
            cast_in = f"{node.input[0]}__fp32"
            new_nodes.append(helper.make_node("Cast", [node.input[0]], [cast_in], to=F32, name=f"{node.name or node.output[0]}/to_fp32"))
            node.input[0] = cast_in
            reduction_outputs.add(node.output[0])
        new_nodes.append(node)

    # consumers of an fp32 reduction other than the fna landmark scores get an fp16 copy
    consumers_to_fix = [
        (n, i) for n in new_nodes for i, name in enumerate(n.input)
        if name in reduction_outputs and not (n.domain == DOMAIN and n.op_type == "FnaLandmarks" and i == 1)
    ]
    casted: dict[str, str] = {}
    for node, i in consumers_to_fix:
        name = node.input[i]
        if name not in casted:
            casted[name] = f"{name}__fp16"
            producer = next(k for k, n in enumerate(new_nodes) if name in n.output)
            new_nodes.insert(producer + 1, helper.make_node("Cast", [name], [casted[name]], to=F16))
        node.input[i] = casted[name]

    for vi in graph.value_info:
        if vi.type.tensor_type.elem_type == F32 and vi.name not in reduction_outputs:
            vi.type.tensor_type.elem_type = F16

    head: list[onnx.NodeProto] = []
    tail: list[onnx.NodeProto] = []
    for vi in graph.input:
        if vi.type.tensor_type.elem_type != F32:
            continue
        if keep_io_types:
            internal = f"{vi.name}__fp16"
            for node in new_nodes:
                for i, name in enumerate(node.input):
                    if name == vi.name:
                        node.input[i] = internal
            head.append(helper.make_node("Cast", [vi.name], [internal], to=F16, name=f"{vi.name}/to_fp16"))
        else:
            vi.type.tensor_type.elem_type = F16
    for vi in graph.output:
        if vi.type.tensor_type.elem_type != F32 or vi.name in reduction_outputs:
            continue
        if keep_io_types:
            internal = f"{vi.name}__fp16"
            for node in new_nodes:
                for i, name in enumerate(node.output):
                    if name == vi.name:
                        node.output[i] = internal
                for i, name in enumerate(node.input):
                    if name == vi.name:
                        node.input[i] = internal
            tail.append(helper.make_node("Cast", [internal], [vi.name], to=F32, name=f"{vi.name}/to_fp32"))
        else:
            vi.type.tensor_type.elem_type = F16
    del graph.node[:]
    graph.node.extend(head + new_nodes + tail)
    return out
