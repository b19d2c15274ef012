"""Child process of the contract check (``contract_check.py``): run as a plain script, so it needs
only the standard library, numpy, onnx and the runtime module (no torch, no fna_deploy import).

    python _parser_probe.py SPEC.json     # prints one JSON object on stdout

SPEC: {"onnx": path, "module": "tensorrt_rtx", "domain": "fna", "namespace": "fna", "version": "1",
       "ops": [{"name", "fields": [{"name", "type"}], "inputs": [{"types", "rank"}]}]}

For every node of the fna domain it parses a one-node model holding that node as it is, with
recording creators registered (they keep the PluginFieldCollection the parser hands them and
return no plugin, so the parser stops with "Could not create the plugin"; a Python IPluginV3 would
abort the process). Then it parses the whole graph with every fna node replaced by standard ops of
the same output rank and dtype, so every other node the parser rejects shows up.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

EXTERNAL_DATA_THRESHOLD = 1 << 30


def field_value(f: Any) -> tuple[str, Any]:
    import numpy as np

    kind = f.type.name if hasattr(f.type, "name") else str(f.type).split(".")[-1]
    raw = bytes(memoryview(f.data).cast("B")) if f.data is not None else b""
    if kind == "CHAR":
        return kind, raw.split(b"\0", 1)[0].decode(errors="replace")
    dtypes = {"INT32": np.int32, "INT64": np.int64, "INT8": np.int8, "INT16": np.int16, "FLOAT32": np.float32,
              "FLOAT64": np.float64, "FLOAT16": np.float16}
    if kind not in dtypes:
        return kind, raw.hex()
    values = np.frombuffer(raw, dtype=dtypes[kind]).tolist()
    return kind, values[0] if len(values) == 1 else values


def register_recorders(trt: Any, spec: dict, records: dict) -> list:
    import numpy as np

    types = {"int32": trt.PluginFieldType.INT32, "float32": trt.PluginFieldType.FLOAT32, "string": trt.PluginFieldType.CHAR}

    class Recorder(trt.IPluginCreatorV3One):
        def __init__(self, op: dict) -> None:
            trt.IPluginCreatorV3One.__init__(self)
            self.name = op["name"]
            self.plugin_namespace = spec["namespace"]
            self.plugin_version = spec["version"]
            self.field_names = trt.PluginFieldCollection(
                [trt.PluginField(f["name"], np.array([], dtype=np.int8), types[f["type"]]) for f in op["fields"]]
            )

        def create_plugin(self, name, fc, phase):  # noqa: ANN001 - the runtime's signature
            passed = {}
            for i in range(len(fc)):
                kind, value = field_value(fc[i])
                passed[fc[i].name] = {"type": kind, "value": value}
            records[name] = passed
            return None

    creators = [Recorder(op) for op in spec["ops"]]
    registry = trt.get_plugin_registry()
    for c in creators:
        registry.register_creator(c, spec["namespace"])
    return creators


def parse(trt: Any, model: Any, tmp: Path, stem: str) -> list[dict[str, str]]:
    import onnx

    path = tmp / f"{stem}.onnx"
    onnx.save_model(model, path, save_as_external_data=model.ByteSize() > EXTERNAL_DATA_THRESHOLD, location=f"{stem}.data")
    logger = trt.Logger(trt.Logger.INTERNAL_ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    ok = parser.parse_from_file(str(path))
    errors = []
    for i in range(parser.num_errors):
        e = parser.get_error(i)
        errors.append({"node": e.node_name() or f"node {e.node()}", "op_type": e.node_operator(), "error": e.desc()})
    if not ok and not errors:
        errors.append({"node": "?", "op_type": "?", "error": "the parser failed without saying why"})
    return errors


def tensor_types(model: Any) -> dict[str, Any]:
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:
        inferred = model
    g = inferred.graph
    types = {v.name: v.type for v in [*g.input, *g.value_info, *g.output]}
    for init in g.initializer:
        types.setdefault(init.name, onnx.helper.make_tensor_type_proto(init.data_type, list(init.dims)))
    return types


def describe(vtype: Any) -> "list | None":
    """[elem type name, dims (int or symbol, None when no shape)] of a tensor type, None if unknown."""
    from onnx import TensorProto

    if vtype is None or not vtype.HasField("tensor_type") or not vtype.tensor_type.elem_type:
        return None
    t = vtype.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim] if t.HasField("shape") else None
    return [TensorProto.DataType.Name(t.elem_type), dims]


def one_node_model(model: Any, node: Any, types: dict, op: "dict | None") -> Any:
    from onnx import TensorProto, helper

    inputs = []
    for i, name in enumerate(node.input):
        if not name:
            continue
        vtype = types.get(name)
        if vtype is None or not vtype.tensor_type.HasField("shape") or not vtype.tensor_type.elem_type:
            want = op["inputs"][i] if op and i < len(op["inputs"]) else {"types": "float", "rank": 1}
            elem = TensorProto.INT32 if want["types"] == "int32" else TensorProto.FLOAT
            if vtype is not None and vtype.tensor_type.elem_type:
                elem = vtype.tensor_type.elem_type
            vtype = helper.make_tensor_type_proto(elem, [None] * want["rank"])
        inputs.append(helper.make_value_info(name, vtype))
    outputs = [helper.make_value_info(n, types[n]) if n in types else helper.make_empty_tensor_value_info(n) for n in node.output]
    graph = helper.make_graph([node], "fna_node", inputs, outputs)
    return helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)


def stand_ins(model: Any, spec: dict) -> Any:
    """A copy of ``model`` whose known fna nodes are standard ops with the same output rank and dtype:
    NystromAttention -> Identity(v) (out is [B,H,N,dv] in v's dtype, which is q's),
    FnaLandmarks -> Cast(Squeeze(Slice(features[:, :m, :1])), int32) ([B, m] int32)."""
    import onnx
    from onnx import TensorProto, helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes = []
    for node in out.graph.node:
        if node.domain != spec["domain"]:
            nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        tag = (node.name or node.output[0]).replace("/", "_")
        if node.op_type == "NystromAttention" and len(node.input) >= 3:
            nodes.append(helper.make_node("Identity", [node.input[2]], [node.output[0]], name=f"{tag}_standin"))
        elif node.op_type == "FnaLandmarks" and node.input:
            m = attrs.get("num_landmarks")
            m = m if isinstance(m, int) and m >= 1 else 1
            for key, value in {"starts": [0, 0], "ends": [m, 1], "axes": [1, 2], "sq": [2]}.items():
                nodes.append(helper.make_node("Constant", [], [f"{tag}_{key}"],
                                              value=helper.make_tensor(f"{tag}_{key}", TensorProto.INT64, [len(value)], value)))
            nodes.append(helper.make_node("Slice", [node.input[0], f"{tag}_starts", f"{tag}_ends", f"{tag}_axes"], [f"{tag}_sl"]))
            nodes.append(helper.make_node("Squeeze", [f"{tag}_sl", f"{tag}_sq"], [f"{tag}_sqo"]))
            nodes.append(helper.make_node("Cast", [f"{tag}_sqo"], [node.output[0]], to=TensorProto.INT32))
        else:
            nodes.append(node)  # an fna op the contract does not know: the parser rejects it
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out


def probe(spec: dict) -> dict:
    import importlib

    import onnx

    trt = importlib.import_module(spec["module"])
    model = onnx.load(spec["onnx"])
    records: dict = {}
    creators = register_recorders(trt, spec, records)
    ops = {op["name"]: op for op in spec["ops"]}
    types = tensor_types(model)
    nodes = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, node in enumerate(n for n in model.graph.node if n.domain == spec["domain"]):
            node.name = node.name or f"{node.op_type}_{i}"
            records.clear()
            errors = parse(trt, one_node_model(model, node, types, ops.get(node.op_type)), Path(tmp), f"node{i}")
            attributes = {}
            for a in node.attribute:
                value = onnx.helper.get_attribute_value(a)
                attributes[a.name] = [onnx.AttributeProto.AttributeType.Name(a.type),
                                      value.decode(errors="replace") if isinstance(value, bytes) else value if isinstance(value, (int, float, str)) else repr(value)]
            nodes.append({"name": node.name, "op_type": node.op_type, "attributes": attributes,
                          "passed": records.get(node.name), "errors": errors,
                          "inputs": [describe(types.get(n)) if n else None for n in node.input],
                          "outputs": [describe(types.get(n)) for n in node.output]})
        graph_errors = parse(trt, stand_ins(model, spec), Path(tmp), "graph")
    del creators
    return {"version": str(trt.__version__), "nodes": nodes, "graph_errors": graph_errors}


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text())
    try:
        import onnx

        onnx.load(spec["onnx"], load_external_data=False)
    except Exception as exc:
        print(json.dumps({"bad_input": f"{spec['onnx']} is not a readable ONNX model ({type(exc).__name__})"}))
        return 0
    print(json.dumps(probe(spec)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
