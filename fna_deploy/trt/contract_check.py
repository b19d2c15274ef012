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

The parser runs in a child process (``_parser_probe.py``, a plain script: no torch, no
fna_deploy import, so it starts in about a second; ``rtx_child`` gives it TensorRT-RTX's
unversioned library name): a runtime that aborts cannot take the caller down, and the process that builds engines never sees Python creators. This module compares what
the child recorded with the contract and formats the report.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import contract
from .rtx_child import run_script
from .runtime import LABELS, import_runtime, resolve_runtime

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


FLOAT_TYPES = ("FLOAT", "FLOAT16", "BFLOAT16")


def compare_io(op: contract.Op, node_attributes: dict[str, Any], inputs: list, outputs: list) -> list[str]:
    """Sentences where the node's tensor types in the file (rank, dtype, num_landmarks) break the
    contract's input/output rules. ``inputs``/``outputs``: [elem type, dims] or None (unknown)."""
    problems = []
    q_type = inputs[0][0] if inputs and inputs[0] else None
    for tensors, got_list, kind in ((op.inputs, inputs, "input"), (op.outputs, outputs, "output")):
        for tensor, got in zip(tensors, got_list):
            if got is None:
                continue
            elem, dims = got
            where = f"{kind} {tensor.name} [{', '.join(tensor.shape)}]"
            if dims is not None and len(dims) != len(tensor.shape):
                problems.append(f"{where} has rank {len(dims)} in the file")
            if tensor.types == "int32" and elem != "INT32":
                problems.append(f"{where} must be INT32, the file says {elem}")
            elif tensor.types == "float" and elem not in FLOAT_TYPES:
                problems.append(f"{where} must be FLOAT, FLOAT16 or BFLOAT16, the file says {elem}")
            elif tensor.types == "like:q" and q_type and elem != q_type:
                problems.append(f"{where} must have q's type {q_type}, the file says {elem}")
            m = node_attributes.get("num_landmarks")
            if (tensor.shape[-1] == "num_landmarks" and dims and len(dims) == len(tensor.shape) and isinstance(dims[-1], int)
                    and dims[-1] > 0 and isinstance(m, int) and dims[-1] != m):
                problems.append(f"{where} has {dims[-1]} landmarks in the file but num_landmarks={m}")
    return problems


# --------------------------------------------------------------------------- the parent side
def _spec(onnx_path: Path, runtime: str) -> dict[str, Any]:
    from .runtime import MODULES

    return {
        "onnx": str(onnx_path), "module": MODULES[runtime], "domain": contract.DOMAIN,
        "namespace": contract.PLUGIN_NAMESPACE, "version": contract.PLUGIN_VERSION,
        "ops": [{"name": o.name, "fields": [{"name": f.name, "type": f.type} for f in o.fields],
                 "inputs": [{"types": t.types, "rank": len(t.shape)} for t in o.inputs]} for o in contract.OPS],
    }


def _node_check(node: dict[str, Any]) -> NodeCheck:
    op = contract.op(node["op_type"])
    attrs = {k: v[1] for k, v in node["attributes"].items()}
    passed = node["passed"]
    unexpected = [e["error"] for e in node["errors"] if EXPECTED_FNA_ERROR not in e["error"]]
    problems = []
    if passed is None:
        why = unexpected[0] if unexpected else "the parser did not call a creator"
        problems.append(
            f"no creator {node['op_type']} version {attrs.get('plugin_version')!r} in namespace {attrs.get('plugin_namespace')!r} "
            f"(the plugins are FnaLandmarks and NystromAttention, version {contract.PLUGIN_VERSION!r}, namespace "
            f"{contract.PLUGIN_NAMESPACE!r}): {why}"
        )
    else:
        problems += compare_fields(op, attrs, passed)
        problems += compare_io(op, attrs, node.get("inputs", []), node.get("outputs", []))
        problems += [f"the parser reports: {e}" for e in unexpected]
    return NodeCheck(node["name"], node["op_type"], passed is not None, passed or {}, declared_fields(op) if op else {}, problems)


def check_contract(onnx_path: "str | Path", runtime: str = "auto", timeout: float = 600.0) -> ContractReport:
    """Parse ``onnx_path`` with the chosen runtime's ONNX parser in a child process and compare
    what reached the creators with the contract. A portable export loses its fna function bodies
    first (as ``build_engine`` does). Raises ValueError for a file that is not ONNX and
    TensorRTUnavailable when the runtime is missing."""
    import onnx

    from . import strip_fna_functions

    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(2, "no such ONNX file", str(onnx_path))
    runtime = resolve_runtime(runtime)
    trt = import_runtime(runtime)
    try:
        header = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:
        raise ValueError(f"{onnx_path} is not a readable ONNX model ({type(exc).__name__})") from None
    notes = []
    with tempfile.TemporaryDirectory() as tmp:
        source = onnx_path
        if any(f.domain == contract.DOMAIN for f in header.functions):
            from ..export.graph import EXTERNAL_DATA_THRESHOLD

            model = strip_fna_functions(onnx.load(str(onnx_path)))
            source = Path(tmp) / "stripped.onnx"
            onnx.save_model(model, source, save_as_external_data=model.ByteSize() > EXTERNAL_DATA_THRESHOLD)
            notes.append("a portable export: its fna function bodies were dropped first, as fna-deploy build does")
        spec = _spec(source, runtime)
        result = run_script(Path(__file__).with_name("_parser_probe.py"), spec, spec["module"], tmp,
                            f"{LABELS[runtime]} parser", timeout=timeout)
    if "bad_input" in result:
        raise ValueError(result["bad_input"])
    rejected = [e for e in result["graph_errors"] if e["op_type"] not in (contract.LANDMARKS, contract.NYSTROM)]
    return ContractReport(str(onnx_path), runtime, result["version"] or str(trt.__version__),
                          [_node_check(n) for n in result["nodes"]], rejected,
                          graph_parses=not result["graph_errors"], notes=notes)


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


