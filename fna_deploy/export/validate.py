"""One validation pass of an ONNX file given as input (build, build --check, verify, triton, bench).

Hostile or damaged files are refused here, with one sentence naming the file, before any parser,
runtime or copy touches them:

- it parses as ONNX (weights not loaded) and holds a graph;
- its IR version and opsets are ones this toolchain reads: the default domain within
  ``MIN_OPSET..onnx's newest``, the ``fna`` domain exactly the contract's version;
- it is not a bomb: subgraphs (If/Loop/Scan bodies, function bodies) nested at most
  ``MAX_SUBGRAPH_DEPTH`` deep and at most ``MAX_NODES`` nodes in all (deeply nested ``If`` nodes
  made parsers run for minutes);
- graph input/output dims are positive and at most ``MAX_DIM`` (a 2^40 dim would be accepted
  now and fail at serve time);
- every fna node's attributes have the contract's types and bounds (int32 range included);
- external data lives inside the model's folder: a relative path, no ``..``, no symlink on the
  way, a regular file, offset and length within it;
- the fna metadata (``fna_config``, ``input_shape``), when present, parses.

:func:`validate_onnx` returns what the callers need (model without weights, metadata, external
data files), so nobody parses the file twice.
"""

from __future__ import annotations

from ..errors import FnaDeployError

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import onnx

from .. import contract

MIN_OPSET = 18  # the fna function bodies need it (export refuses less)
MAX_SUBGRAPH_DEPTH = 16
MAX_NODES = 1_000_000
MAX_DIM = 2**31 - 1  # int32, what TensorRT and Triton shapes hold
INT32 = (-(2**31), 2**31 - 1)


@dataclass
class ValidatedOnnx:
    path: Path
    model: onnx.ModelProto  # without external weights
    metadata: dict[str, str]
    opset: int
    external_data: list[str] = field(default_factory=list)  # file names relative to the model's folder


class InvalidOnnx(FnaDeployError, ValueError):
    """The file is not an ONNX model this toolchain accepts (the message names it)."""


def _subgraphs(node: onnx.NodeProto):
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            yield from attr.graphs


def _walk(model: onnx.ModelProto, label: str):
    """Every (node, graph) of the model, subgraphs and function bodies included, bounded in depth
    and count (iterative: no recursion to exhaust)."""
    stack = [(model.graph.node, 0)] + [(f.node, 1) for f in model.functions]
    count = 0
    while stack:
        nodes, depth = stack.pop()
        if depth > MAX_SUBGRAPH_DEPTH:
            raise InvalidOnnx(f"{label} nests subgraphs (If/Loop/Scan bodies) more than {MAX_SUBGRAPH_DEPTH} deep; "
                              "an fna export has at most 2 levels, so it is refused")
        for node in nodes:
            count += 1
            if count > MAX_NODES:
                raise InvalidOnnx(f"{label} holds more than {MAX_NODES:,} nodes; it is refused as too large to check")
            yield node
            for graph in _subgraphs(node):
                stack.append((graph.node, depth + 1))


def _tensors(model: onnx.ModelProto):
    """Every TensorProto that can carry external data: initializers (subgraphs too) and tensor attributes."""
    graphs = [model.graph]
    seen_nodes = []
    while graphs:
        graph = graphs.pop()
        yield from graph.initializer
        for node in graph.node:
            seen_nodes.append(node)
            graphs.extend(_subgraphs(node))
    for function in model.functions:
        seen_nodes.extend(function.node)
    for node in seen_nodes:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                yield attr.t
            elif attr.type == onnx.AttributeProto.TENSORS:
                yield from attr.tensors


def _check_opsets(model: onnx.ModelProto, label: str) -> int:
    newest = onnx.defs.onnx_opset_version()
    if model.ir_version > onnx.IR_VERSION:
        raise InvalidOnnx(f"{label} has IR version {model.ir_version}, newer than this onnx package reads ({onnx.IR_VERSION}); "
                          "re-export it with fna-deploy export")
    opset = None
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            opset = entry.version
            if not MIN_OPSET <= entry.version <= newest:
                raise InvalidOnnx(f"{label} declares ONNX opset {entry.version}; fna-deploy reads opsets {MIN_OPSET} to {newest} "
                                  "(re-export with --opset in that range)")
        elif entry.domain == contract.DOMAIN and entry.version != contract.DOMAIN_VERSION:
            raise InvalidOnnx(f"{label} declares fna opset {entry.version}; the fna plugins implement version "
                              f"{contract.DOMAIN_VERSION} only (re-export it with this fna-deploy)")
    if opset is None:
        raise InvalidOnnx(f"{label} imports no ONNX opset; re-export it with fna-deploy export")
    return opset


def _check_dims(model: onnx.ModelProto, label: str) -> None:
    for value in list(model.graph.input) + list(model.graph.output):
        if not value.type.HasField("tensor_type"):
            continue
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_value") and not 0 < dim.dim_value <= MAX_DIM:
                raise InvalidOnnx(f"{label}: tensor {value.name!r} has a dimension of {dim.dim_value}; dims must be "
                                  f"1 to {MAX_DIM} (or symbolic)")


def _check_fna_node(node: onnx.NodeProto, label: str) -> None:
    op = contract.op(node.op_type)
    where = f"{label}: fna node {node.name or node.op_type!r}"
    if op is None:
        raise InvalidOnnx(f"{where} has op type {node.op_type!r}, which the fna domain does not define "
                          f"({', '.join(o.name for o in contract.OPS)})")
    values = {}
    for attr in node.attribute:
        if attr.name in contract.IDENTITY_ATTRIBUTES:
            continue
        spec = op.field(attr.name)
        if spec is None:
            raise InvalidOnnx(f"{where} has attribute {attr.name!r}, which {op.name} does not take")
        if onnx.AttributeProto.AttributeType.Name(attr.type) != spec.onnx_type:
            raise InvalidOnnx(f"{where}: attribute {attr.name!r} must be an ONNX {spec.onnx_type}")
        value = onnx.helper.get_attribute_value(attr)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if spec.type == "int32" and not INT32[0] <= value <= INT32[1]:
            raise InvalidOnnx(f"{where}: attribute {attr.name!r} is {value}, outside int32")
        problem = spec.problem(value)
        if problem:
            raise InvalidOnnx(f"{where}: {problem}")
        values[attr.name] = value
    missing = [f.name for f in op.fields if f.required and f.name not in values]
    if missing:
        raise InvalidOnnx(f"{where} lacks the required attribute(s) {', '.join(missing)}")
    if op.name == contract.LANDMARKS and values.get("num_prefix", 0) > values["num_landmarks"]:
        raise InvalidOnnx(f"{where}: num_prefix {values['num_prefix']} exceeds num_landmarks {values['num_landmarks']}")


def _check_external(model: onnx.ModelProto, path: Path, label: str) -> list[str]:
    folder = path.parent.resolve()
    names: dict[str, int] = {}
    for tensor in _tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in tensor.external_data}
        location = info.get("location", "")
        where = f"{label}: the external data {location!r} of tensor {tensor.name!r}"
        parts = Path(location).parts
        if not location or Path(location).is_absolute() or ".." in parts or "\\" in location or "\x00" in location:
            raise InvalidOnnx(f"{where} is not a file name inside the model's folder; re-export the model with its weights beside it")
        probe = folder
        for part in parts:  # no symlink anywhere on the way: a link could point out of the folder
            probe = probe / part
            if probe.is_symlink():
                raise InvalidOnnx(f"{where} is a symbolic link; external weights must be real files in the model's folder")
        try:
            st = os.stat(probe, follow_symlinks=False)
        except FileNotFoundError:
            raise FileNotFoundError(2, "external weights of the ONNX model are missing", str(probe)) from None
        if not stat.S_ISREG(st.st_mode):
            raise InvalidOnnx(f"{where} is not a regular file")
        try:
            offset, length = int(info.get("offset", 0)), int(info.get("length", -1))
        except ValueError:
            raise InvalidOnnx(f"{where} has a non-numeric offset or length") from None
        if offset < 0 or offset > st.st_size or (length >= 0 and offset + length > st.st_size):
            raise InvalidOnnx(f"{where} points past the end of the file ({st.st_size} bytes)")
        names[location] = 1
    return sorted(names)


def _check_metadata(metadata: dict[str, str], label: str) -> None:
    if metadata.get("fna_config"):
        from ..config import FNAConfig

        try:
            FNAConfig.from_json(metadata["fna_config"])
        except (ValueError, TypeError) as exc:
            raise InvalidOnnx(f"{label}: its fna_config metadata is invalid ({exc}); re-export the model") from None
    if metadata.get("input_shape"):
        try:
            shape = json.loads(metadata["input_shape"])
        except ValueError:
            shape = None
        if not (isinstance(shape, list) and shape and all(isinstance(d, int) and not isinstance(d, bool) and 0 < d <= MAX_DIM
                                                          for d in shape)):
            raise InvalidOnnx(f"{label}: its input_shape metadata {metadata['input_shape'][:60]!r} is not a list of positive dims; "
                              "re-export the model")


def image_input(checked: ValidatedOnnx) -> tuple[str, list[int]]:
    """The name and dims (-1: symbolic) of the model's one graph input that is not an initializer;
    InvalidOnnx unless it is a 4-d image input [B, C, H, W] as fna-deploy exports it."""
    weights = {t.name for t in checked.model.graph.initializer}
    inputs = [i for i in checked.model.graph.input if i.name not in weights]
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in inputs[0].type.tensor_type.shape.dim] if inputs else []
    if len(inputs) != 1 or len(dims) != 4:
        raise InvalidOnnx(f"{str(checked.path)!r} does not take one image input [B,C,H,W] as fna-deploy exports do")
    return inputs[0].name, dims


def validate_onnx(path: "str | os.PathLike[str]", flag: Optional[str] = None, *, attributes: bool = True) -> ValidatedOnnx:
    """Read and check the ONNX file at ``path`` (see the module doc); ``flag`` names it in messages
    (e.g. ``--onnx``). ``attributes=False`` leaves the fna attributes to the caller (``build --check``
    reports every attribute problem through the real parser instead of stopping at the first).
    Raises :class:`InvalidOnnx` (a ValueError) or FileNotFoundError."""
    from .graph import read_metadata

    path = Path(path)
    label = f"{flag} {str(path)!r}" if flag else repr(str(path))
    if not path.is_file():
        raise FileNotFoundError(2, "ONNX model not found", str(path))
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf decode errors have many types (recursion limit included)
        raise InvalidOnnx(f"{label} is not an ONNX model ({type(exc).__name__}); give a .onnx written by 'fna-deploy export'") from None
    if not model.graph.node:
        raise InvalidOnnx(f"{label} holds no ONNX graph; give a .onnx written by 'fna-deploy export'")
    opset = _check_opsets(model, label)
    for node in _walk(model, label):
        if attributes and node.domain == contract.DOMAIN:
            _check_fna_node(node, label)
    _check_dims(model, label)
    external = _check_external(model, path, label)
    metadata = read_metadata(model)
    _check_metadata(metadata, label)
    return ValidatedOnnx(path, model, metadata, opset, external)
