"""The plugin contract, checked by a real TensorRT (or TensorRT-RTX) ONNX parser.

``check_contract(MODEL.onnx)`` registers recording creators for FnaLandmarks and NystromAttention
(namespace and version from ``fna_deploy.contract``; each declares the fields the C++ creator
declares) and lets the runtime's own ONNX parser read the model:

- per fna node, the parser looks the creator up by op type, ``plugin_version`` and
  ``plugin_namespace`` and hands it the node's attributes as a PluginFieldCollection: exactly the
  declared names, typed by the ONNX attribute (INT -> INT32, FLOAT -> FLOAT32, STRING -> CHAR).
  The recorder keeps them and returns no plugin, so the parser stops there with "Could not create
  the plugin" (expected; a Python IPluginV3 object would abort the process). Each fna node is
  therefore parsed alone, in a one-node model with the node as it is in the file.
- the whole graph is parsed once more with every fna node replaced by a stand-in of standard ops
  with the same output rank and dtype, so every other node the parser rejects is reported.

The parser runs in a child process (``python -m fna_deploy.trt.contract_check``): a runtime that
aborts cannot take the caller down, and the process that builds engines never sees Python creators.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from .. import contract
from .runtime import LABELS, TensorRTUnavailable, import_runtime, resolve_runtime

EXPECTED_FNA_ERROR = "Could not create the plugin"  # what the parser says when the recorder returns None


@dataclass
class NodeCheck:
    name: str
    op_type: str
    creator_found: bool
    passed: dict[str, dict[str, Any]]  # field -> {"type": "INT32", "value": 8}
    declared: dict[str, dict[str, Any]]  # field -> {"type": "INT32", "required": bool, "default": ...}
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.creator_found and not self.problems


@dataclass
class ContractReport:
    onnx: str
    runtime: str
    runtime_version: str
    nodes: list[NodeCheck]
    rejected: list[dict[str, str]]  # non-fna nodes the parser rejects: node, op_type, error
    graph_parses: bool
    notes: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        out = [f"{n.name} ({n.op_type}): {p}" for n in self.nodes for p in n.problems]
        out += [f"the parser rejects {r['node']} ({r['op_type']}): {r['error']}" for r in self.rejected]
        if not self.graph_parses and not self.rejected:
            out.append("the graph with stand-ins for the fna nodes does not parse (see the parser errors above)")
        return out

    @property
    def ok(self) -> bool:
        return self.graph_parses and not self.problems

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        data["problems"] = self.problems
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ContractReport":
        data = {k: v for k, v in data.items() if k not in ("ok", "problems")}
        data["nodes"] = [NodeCheck(**n) for n in data["nodes"]]
        return cls(**data)


def declared_fields(op: contract.Op) -> dict[str, dict[str, Any]]:
    return {f.name: {"type": f.trt_type, "required": f.required, "default": f.default} for f in op.fields}


def compare_fields(op: contract.Op, node_attributes: dict[str, Any], passed: dict[str, dict[str, Any]]) -> list[str]:
    """Sentences for every disagreement between what the parser passed and what the creator declares."""
    problems = []
    for name in node_attributes:
        if name not in contract.IDENTITY_ATTRIBUTES and op.field(name) is None:
            known = ", ".join(f.name for f in op.fields)
            problems.append(f"attribute {name!r} is not a field of the {op.name} creator, so the parser drops it (fields: {known})")
    values = {}
    for f in op.fields:
        got = passed.get(f.name)
        if got is None:
            if f.required:
                problems.append(f"the required field {f.name} did not reach the creator: the node has no {f.name} attribute")
            continue
        if got["type"] != f.trt_type:
            problems.append(f"{f.name} reached the creator as {got['type']} but the creator declares {f.trt_type} "
                            f"(the ONNX attribute must be {f.onnx_type})")
            continue
        problem = f.problem(got["value"])
        if problem:
            problems.append(problem)
        values[f.name] = got["value"]
    if op.name == contract.LANDMARKS and isinstance(values.get("num_prefix"), int) and isinstance(values.get("num_landmarks"), int):
        if values["num_prefix"] > values["num_landmarks"] >= 1:
            problems.append(f"num_prefix={values['num_prefix']} prefix tokens do not fit in num_landmarks={values['num_landmarks']}")
    return problems


# --------------------------------------------------------------------------- the parent side
def check_contract(onnx_path: "str | Path", runtime: str = "auto", timeout: float = 600.0) -> ContractReport:
    """Parse ``onnx_path`` with the chosen runtime's ONNX parser in a child process and compare."""
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(2, "no such ONNX file", str(onnx_path))
    runtime = resolve_runtime(runtime)
    import_runtime(runtime)  # a clear sentence here when it is missing
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [sys.executable, "-m", "fna_deploy.trt.contract_check", str(onnx_path), runtime],
        capture_output=True, text=True, timeout=timeout, env=env,
    )
    if proc.returncode == 2:
        raise ValueError(proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else f"cannot read {onnx_path} as ONNX")
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"the {LABELS[runtime]} parser process died (exit {proc.returncode}): {tail}")
    return ContractReport.from_dict(json.loads(proc.stdout))


def format_report(report: ContractReport) -> str:
    """A readable table: one row per fna node and field, then the rejected nodes and the verdict."""
    lines = [f"contract check of {report.onnx} with {LABELS[report.runtime]} {report.runtime_version}'s ONNX parser"]
    if report.nodes:
        lines.append(f"{'node':<40} {'op':<17} {'creator':<8} {'field':<15} {'passed':<22} declared")
    for n in report.nodes:
        first = True
        rows = list(dict.fromkeys([*n.declared, *n.passed]))
        for name in rows or ["-"]:
            got = n.passed.get(name)
            dec = n.declared.get(name)
            passed = f"{got['type']} {got['value']!r}" if got else "-"
            declared = (f"{dec['type']}" + (" required" if dec["required"] else f" = {dec['default']!r}")) if dec else "-"
            head = (n.name[-40:], n.op_type, "found" if n.creator_found else "MISSING") if first else ("", "", "")
            lines.append(f"{head[0]:<40} {head[1]:<17} {head[2]:<8} {name:<15} {passed:<22} {declared}")
            first = False
    if not report.nodes:
        lines.append("no fna nodes in this graph")
    for r in report.rejected:
        lines.append(f"rejected: {r['node']} ({r['op_type']}): {r['error']}")
    lines += [f"note: {n}" for n in report.notes]
    lines.append("contract check passed" if report.ok else f"contract check FAILED: {len(report.problems)} problem(s)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- the child side
def _field_value(trt: Any, f: Any) -> tuple[str, Any]:
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


def _recording_creators(trt: Any, records: dict[str, dict]) -> list:
    import numpy as np

    types = {"int32": trt.PluginFieldType.INT32, "float32": trt.PluginFieldType.FLOAT32, "string": trt.PluginFieldType.CHAR}

    class Recorder(trt.IPluginCreatorV3One):
        def __init__(self, op: contract.Op) -> None:
            trt.IPluginCreatorV3One.__init__(self)
            self.name = op.name
            self.plugin_namespace = contract.PLUGIN_NAMESPACE
            self.plugin_version = contract.PLUGIN_VERSION
            self.field_names = trt.PluginFieldCollection(
                [trt.PluginField(f.name, np.array([], dtype=np.int8), types[f.type]) for f in op.fields]
            )

        def create_plugin(self, name, fc, phase):  # noqa: ANN001 - the runtime's signature
            passed = {}
            for i in range(len(fc)):
                kind, value = _field_value(trt, fc[i])
                passed[fc[i].name] = {"type": kind, "value": value}
            records[name] = {"op_type": self.name, "passed": passed}
            return None  # no plugin: the parser stops at this node with EXPECTED_FNA_ERROR

    creators = [Recorder(op) for op in contract.OPS]
    registry = trt.get_plugin_registry()
    for c in creators:
        registry.register_creator(c, contract.PLUGIN_NAMESPACE)
    return creators


def _parse(trt: Any, model: Any, tmp: Path, stem: str) -> list[dict[str, str]]:
    """Parse ``model`` (from a file, so external weights work); the parser's errors."""
    import onnx

    from ..export.graph import EXTERNAL_DATA_THRESHOLD

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


def _tensor_types(model: Any) -> dict[str, Any]:
    import onnx

    from ..export.schemas import register_schemas

    register_schemas()
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:
        inferred = model
    g = inferred.graph
    types = {v.name: v.type for v in [*g.input, *g.value_info, *g.output]}
    for init in g.initializer:
        types.setdefault(init.name, onnx.helper.make_tensor_type_proto(init.data_type, list(init.dims)))
    return types


def _one_node_model(model: Any, node: Any, types: dict[str, Any], op: Optional[contract.Op]) -> Any:
    import onnx
    from onnx import TensorProto, helper

    inputs = []
    for i, name in enumerate(node.input):
        if not name:
            continue
        vtype = types.get(name)
        if vtype is None or not vtype.tensor_type.HasField("shape"):
            rank = len(op.inputs[i].shape) if op and i < len(op.inputs) else 1
            elem = vtype.tensor_type.elem_type if vtype is not None and vtype.tensor_type.elem_type else (
                TensorProto.INT32 if op and i < len(op.inputs) and op.inputs[i].types == "int32" else TensorProto.FLOAT)
            vtype = helper.make_tensor_type_proto(elem, [None] * rank)
        inputs.append(helper.make_value_info(name, vtype))
    outputs = []
    for name in node.output:
        vtype = types.get(name)
        outputs.append(helper.make_value_info(name, vtype) if vtype is not None else helper.make_empty_tensor_value_info(name))
    graph = helper.make_graph([node], "fna_node", inputs, outputs)
    return helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)


def _stand_ins(model: Any) -> Any:
    """A copy of ``model`` whose fna nodes are standard ops with the same output rank and dtype."""
    import onnx
    from onnx import TensorProto, helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes = []
    for node in out.graph.node:
        if node.domain != contract.DOMAIN:
            nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        tag = (node.name or node.output[0]).replace("/", "_")
        if node.op_type == contract.NYSTROM and len(node.input) >= 3:
            nodes.append(helper.make_node("Identity", [node.input[2]], [node.output[0]], name=f"{tag}_standin"))
        elif node.op_type == contract.LANDMARKS and node.input:
            m = attrs.get("num_landmarks")
            m = m if isinstance(m, int) and m >= 1 else 1
            consts = {"starts": [0, 0], "ends": [m, 1], "axes": [1, 2], "sq": [2]}
            for key, value in consts.items():
                nodes.append(helper.make_node("Constant", [], [f"{tag}_{key}"], value=helper.make_tensor(f"{tag}_{key}", TensorProto.INT64, [len(value)], value)))
            nodes.append(helper.make_node("Slice", [node.input[0], f"{tag}_starts", f"{tag}_ends", f"{tag}_axes"], [f"{tag}_sl"]))
            nodes.append(helper.make_node("Squeeze", [f"{tag}_sl", f"{tag}_sq"], [f"{tag}_sq_out"]))
            nodes.append(helper.make_node("Cast", [f"{tag}_sq_out"], [node.output[0]], to=TensorProto.INT32))
        else:
            nodes.append(node)  # an fna op the contract does not know: the parser will reject it
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out


def probe(onnx_path: str, runtime: str) -> ContractReport:
    """The child's work: load, parse every fna node alone and the graph with stand-ins."""
    import onnx

    from . import strip_fna_functions

    trt = import_runtime(runtime)
    model = onnx.load(onnx_path)
    notes = []
    if strip_fna_functions(model) is not None:
        notes.append("a portable export: its fna function bodies were dropped first, as fna-deploy build does")
    records: dict[str, dict] = {}
    _creators = _recording_creators(trt, records)  # noqa: F841 - the registry holds them only while referenced
    types = _tensor_types(model)
    checks = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, node in enumerate(n for n in model.graph.node if n.domain == contract.DOMAIN):
            op = contract.op(node.op_type)
            name = node.name or f"{node.op_type}_{i}"
            if not node.name:
                node.name = name
            records.clear()
            errors = _parse(trt, _one_node_model(model, node, types, op), Path(tmp), f"node{i}")
            record = records.get(name)
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            declared = declared_fields(op) if op else {}
            problems = []
            unexpected = [e["error"] for e in errors if EXPECTED_FNA_ERROR not in e["error"]]
            if record is None:
                identity = {k: (attrs.get(k, b"").decode() if isinstance(attrs.get(k), bytes) else attrs.get(k)) for k in contract.IDENTITY_ATTRIBUTES}
                why = f"{unexpected[0]}" if unexpected else "the parser did not call it"
                problems.append(
                    f"no creator {node.op_type} version {identity['plugin_version']!r} in namespace {identity['plugin_namespace']!r} "
                    f"(the contract registers FnaLandmarks and NystromAttention, version {contract.PLUGIN_VERSION!r}, "
                    f"namespace {contract.PLUGIN_NAMESPACE!r}): {why}"
                )
            else:
                problems += compare_fields(op, attrs, record["passed"])
                problems += [f"the parser reports: {e}" for e in unexpected]
            checks.append(NodeCheck(name, node.op_type, record is not None, record["passed"] if record else {}, declared, problems))
        errors = _parse(trt, _stand_ins(model), Path(tmp), "graph")
    rejected = [e for e in errors if e["op_type"] not in (contract.LANDMARKS, contract.NYSTROM)]
    return ContractReport(onnx_path, runtime, str(trt.__version__), checks, rejected, graph_parses=not errors, notes=notes)


def _main(argv: list[str]) -> int:
    path, runtime = argv
    try:
        import onnx

        onnx.load(path, load_external_data=False)
    except Exception as exc:
        print(f"{path} is not a readable ONNX model ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")
        return 2
    try:
        report = probe(path, runtime)
    except TensorRTUnavailable as exc:
        print(str(exc))
        return 2
    print(json.dumps(report.to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
