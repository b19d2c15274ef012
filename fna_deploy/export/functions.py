"""ONNX local-function bodies for the fna ops, built from standard operators only.

With these bodies attached, ONNX Runtime and onnx.reference run an fna export as is (they expand
local functions); OpenVINO does not, and runs it once ``inline_functions`` has expanded them;
TensorRT instead maps the same nodes onto the plugins. The bodies follow the
PyTorch reference line for line (fna_deploy/ops), including the rank formulation of landmark
selection, so both produce the same indices:

* FnaLandmarks: masks -> ranks -> FPS as a Loop of ``num_landmarks - num_prefix`` steps (ArgMax,
  ScatterElements) or the grid rule -> TopK of the m lowest ranks -> int32.
* NystromAttention: gathers with GatherND (batch dims), the m x m system and its Newton-Schulz loop
  in fp32 (Casts around it whatever the I/O type), the two landmark softmax products in the I/O type.

The bodies keep to the most widely implemented form of each op: every Loop gets an explicit
``Constant(true)`` condition (onnx.reference reads an omitted one as false and runs no iteration),
and token gathers are GatherND with batch dims (onnx.reference's GatherElements fails at rank >= 3
beyond 64 entries on the gather axis). In ONNX Runtime both changes leave the output bit-identical
and the speed unchanged within noise (docs/export.md has the measurement).

Numeric attributes are read through attribute references (``ref_attr_name``), so editing a node's
attributes changes what the body computes. A body is specialised on the two things that change
its structure: the selection method and whether the optional ``scores`` input is present.
"""

from __future__ import annotations

from typing import Optional

import onnx
from onnx import FunctionProto, TensorProto, helper

from ..contract import LANDMARK_METHODS, attribute_names
from .schemas import DOMAIN, LANDMARKS, NYSTROM

# the oldest standard opset the bodies are valid in; they are stamped with the model's own
BODY_OPSET = 18
FLOAT = TensorProto.FLOAT
INT64 = TensorProto.INT64
INT32 = TensorProto.INT32
BOOL = TensorProto.BOOL


class _Builder:
    """Collects nodes with unique value names (a tiny helper, not an IR)."""

    def __init__(self, prefix: str) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.prefix = prefix
        self.count = 0

    def name(self, hint: str) -> str:
        self.count += 1
        return f"{self.prefix}{hint}_{self.count}"

    def op(self, op_type: str, inputs: list[str], hint: str = "", outputs: int = 1, **attrs) -> "str | list[str]":
        outs = [self.name(hint or op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, **attrs))
        return outs[0] if outputs == 1 else outs

    def const(self, value, dtype: int = INT64, hint: str = "c") -> str:
        values = value if isinstance(value, (list, tuple)) else [value]
        dims = [len(values)] if isinstance(value, (list, tuple)) else []
        tensor = helper.make_tensor(self.name(hint) + "_t", dtype, dims, values)
        return self.op("Constant", [], hint, value=tensor)

    def attr_const(self, attr: str, kind: str) -> str:
        """A scalar Constant whose value is the function attribute ``attr`` (value_int / value_float)."""
        out = self.name(attr)
        node = helper.make_node("Constant", [], [out])
        ref = onnx.AttributeProto()
        ref.name = f"value_{kind}"
        ref.ref_attr_name = attr
        ref.type = onnx.AttributeProto.INT if kind == "int" else onnx.AttributeProto.FLOAT
        node.attribute.append(ref)
        self.nodes.append(node)
        return out


def _function(name: str, inputs: list[str], outputs: list[str], attributes: list[str], b: _Builder, doc: str, opset: int) -> FunctionProto:
    if opset < BODY_OPSET:
        raise ValueError(f"the fna function bodies need ONNX opset >= {BODY_OPSET}, got {opset}")
    return helper.make_function(
        DOMAIN,
        name,
        inputs,
        outputs,
        b.nodes,
        opset_imports=[helper.make_opsetid("", opset)],
        attributes=attributes,
        doc_string=doc,
    )


def landmarks_function(method: str = "fps", with_scores: bool = False, opset: int = BODY_OPSET) -> FunctionProto:
    if method not in LANDMARK_METHODS:
        raise ValueError(f"FnaLandmarks: no ONNX body for method {method!r}; use {' or '.join(LANDMARK_METHODS)}")
    b = _Builder("lm_")
    f = b.op("Cast", ["features"], "f", to=FLOAT)
    shape = b.op("Shape", [f], "shape")
    batch = b.op("Slice", [shape, b.const([0]), b.const([1])], "B")  # [1]
    tokens = b.op("Slice", [shape, b.const([1]), b.const([2])], "N")  # [1]
    bn = b.op("Concat", [batch, tokens], "BN", axis=0)
    n_scalar = b.op("Squeeze", [tokens, b.const([0])], "n")
    m = b.attr_const("num_landmarks", "int")
    prefix_n = b.attr_const("num_prefix", "int")
    arange = b.op("Range", [b.const(0), n_scalar, b.const(1)], "arange")  # [N]
    prefix = b.op("Expand", [b.op("Less", [arange, prefix_n], "is_prefix"), bn], "prefix")  # [B,N]

    if with_scores:
        s = b.op("Cast", ["scores"], "s", to=FLOAT)
        rest = b.op("Slice", [s, b.op("Unsqueeze", [prefix_n, b.const([0])]), b.const([2**62]), b.const([1])], "rest")
        n_rest = b.op("Sub", [n_scalar, prefix_n], "n_rest")
        kth = b.op("Add", [b.op("Div", [b.op("Sub", [n_rest, b.const(1)]), b.const(2)]), b.const(1)], "kth")
        low_values = b.op("TopK", [rest, b.op("Unsqueeze", [kth, b.const([0])])], "low", outputs=2, axis=1, largest=0, sorted=1)[0]
        med = b.op("Gather", [low_values, b.op("Sub", [kth, b.const(1)])], "median", axis=1)  # [B]
        med = b.op("Unsqueeze", [med, b.const([1])], "median_b1")
        zero = b.const(0.0, FLOAT)
        mr = b.attr_const("massive_ratio", "float")
        ar = b.attr_const("artifact_ratio", "float")
        massive = b.op(
            "And", [b.op("Greater", [mr, zero]), b.op("GreaterOrEqual", [s, b.op("Mul", [mr, med])])], "massive"
        )
        guaranteed = b.op("Or", [prefix, massive], "guaranteed")
        artifact = b.op(
            "And",
            [
                b.op("And", [b.op("Greater", [ar, zero]), b.op("GreaterOrEqual", [s, b.op("Mul", [ar, med])])]),
                b.op("Not", [guaranteed]),
            ],
            "artifact",
        )
    else:
        guaranteed = prefix
        artifact = b.op("And", [prefix, b.op("Not", [prefix])], "artifact")  # all false
    eligible = b.op("And", [b.op("Not", [guaranteed]), b.op("Not", [artifact])], "eligible")

    def count_and_pos(mask: str, hint: str) -> tuple[str, str]:
        as_int = b.op("Cast", [mask], hint + "_i", to=INT64)
        total = b.op("ReduceSum", [as_int, b.const([1])], hint + "_count", keepdims=1)  # [B,1]
        pos = b.op("Sub", [b.op("CumSum", [as_int, b.const(1)]), b.const(1)], hint + "_pos")
        return total, pos

    n_g, pos_g = count_and_pos(guaranteed, "g")
    n_e, pos_e = count_and_pos(eligible, "e")
    _n_a, pos_a = count_and_pos(artifact, "a")
    rank = b.op("Add", [b.op("Mul", [b.const(2), n_scalar]), arange], "rank_unpicked")
    rank = b.op("Expand", [rank, bn], "rank0")
    rank = b.op("Where", [guaranteed, pos_g, rank], "rank1")
    rank = b.op("Where", [artifact, b.op("Add", [b.op("Add", [n_g, n_e]), pos_a]), rank], "rank2")

    if method == "grid":
        k = b.op("Max", [b.op("Sub", [m, n_g]), b.const(0)], "k")  # [B,1]
        e = b.op("Max", [n_e, b.const(1)], "e")
        j = b.op("Div", [b.op("Sub", [b.op("Add", [b.op("Mul", [pos_e, k]), e]), b.const(1)]), e], "j")
        back = b.op("Div", [b.op("Mul", [j, n_e]), b.op("Max", [k, b.const(1)])], "j_back")
        picked = b.op(
            "And", [b.op("And", [eligible, b.op("Less", [j, k])]), b.op("Equal", [back, pos_e])], "picked"
        )
        rank = b.op("Where", [picked, b.op("Add", [n_g, pos_e]), rank], "rank_grid")
    else:
        inf = b.const(float("inf"), FLOAT)
        ninf = b.const(float("-inf"), FLOAT)
        min_dist = b.op("Where", [eligible, inf, ninf], "min_dist0")
        steps = b.op("Sub", [m, prefix_n], "steps")
        b1 = b.op("Concat", [batch, b.const([1])], "B1", axis=0)
        # loop body: (iteration, cond, rank, min_dist) -> (cond, rank, min_dist)
        lb = _Builder("fps_")
        it, cond_in, rank_in, dist_in = "fps_iter", "fps_cond_in", "fps_rank_in", "fps_dist_in"
        pick = lb.op("ArgMax", [dist_in], "pick", axis=1, keepdims=1, select_last_index=0)  # [B,1]
        valid = lb.op("Greater", [n_e, it], "valid")
        current = lb.op("GatherElements", [rank_in, pick], "current", axis=1)
        value = lb.op("Where", [valid, lb.op("Add", [n_g, it]), current], "value")
        rank_out = lb.op("ScatterElements", [rank_in, pick, value], "rank_out", axis=1)
        # GatherND with a batch dim: the reference evaluator's GatherElements fails at rank 3 beyond 64 tokens
        point = lb.op("GatherND", [f, lb.op("Unsqueeze", [pick, lb.const([2])])], "point", batch_dims=1)  # [B,1,D]
        diff = lb.op("Sub", [f, point], "diff")
        dist = lb.op("ReduceSum", [lb.op("Mul", [diff, diff]), lb.const([2])], "dist", keepdims=0)
        dist_out = lb.op("Min", [dist_in, dist], "dist_min")
        dist_out = lb.op("ScatterElements", [dist_out, pick, lb.op("Expand", [ninf, b1])], "dist_out", axis=1)
        cond_out = lb.op("Identity", [cond_in], "cond_out")
        body = helper.make_graph(
            lb.nodes,
            "fps_step",
            [
                helper.make_tensor_value_info(it, INT64, []),
                helper.make_tensor_value_info(cond_in, BOOL, []),
                helper.make_tensor_value_info(rank_in, INT64, None),
                helper.make_tensor_value_info(dist_in, FLOAT, None),
            ],
            [
                helper.make_tensor_value_info(cond_out, BOOL, []),
                helper.make_tensor_value_info(rank_out, INT64, None),
                helper.make_tensor_value_info(dist_out, FLOAT, None),
            ],
        )
        rank, _dist = b.op("Loop", [steps, b.const(True, BOOL, "true"), rank, min_dist], "fps", outputs=2, body=body)

    order = b.op("TopK", [rank, b.op("Unsqueeze", [m, b.const([0])])], "order", outputs=2, axis=1, largest=0, sorted=1)[1]
    b.nodes.append(helper.make_node("Cast", [order], ["idx"], to=INT32))
    inputs = ["features", "scores"] if with_scores else ["features"]
    attributes = attribute_names(LANDMARKS)
    return _function(LANDMARKS, inputs, ["idx"], attributes, b, f"FnaLandmarks body (method={method}, scores={with_scores})", opset)


def nystrom_function(opset: int = BODY_OPSET) -> FunctionProto:
    b = _Builder("ny_")
    perm = [0, 1, 3, 2]
    idx = b.op("Cast", ["idx"], "idx64", to=INT64)
    q_shape = b.op("Shape", ["q"], "q_shape")
    bh = b.op("Slice", [q_shape, b.const([0]), b.const([2])], "BH")
    d = b.op("Slice", [q_shape, b.const([3]), b.const([4])], "d")
    dv = b.op("Slice", [b.op("Shape", ["v"]), b.const([3]), b.const([4])], "dv")
    m = b.op("Slice", [b.op("Shape", ["idx"]), b.const([1]), b.const([2])], "m")
    index = b.op("Unsqueeze", [idx, b.const([1, 3])], "idx_b1m1")  # [B,1,m,1]
    index = b.op("Expand", [index, b.op("Concat", [bh, m, b.const([1])], axis=0)], "idx_bhm1")
    qp = b.op("GatherND", ["q", index], "qp", batch_dims=2)  # [B,H,m,d]
    kp = b.op("GatherND", ["k", index], "kp", batch_dims=2)
    # scale: the attribute, or head_dim ** -0.5 when it is 0
    scale_attr = b.attr_const("scale", "float")
    default = b.op("Reciprocal", [b.op("Sqrt", [b.op("Cast", [b.op("Squeeze", [d, b.const([0])])], to=FLOAT)])], "default_scale")
    scale = b.op("Where", [b.op("Greater", [scale_attr, b.const(0.0, FLOAT)]), scale_attr, default], "scale")
    scale_t = b.op("CastLike", [scale, "q"], "scale_t")
    # A = softmax(s qp kp^T) and its pseudo-inverse, in fp32
    qp32 = b.op("Cast", [qp], "qp32", to=FLOAT)
    kp32 = b.op("Cast", [kp], "kp32", to=FLOAT)
    a = b.op("Softmax", [b.op("MatMul", [b.op("Mul", [qp32, scale]), b.op("Transpose", [kp32], perm=perm)])], "A", axis=-1)
    col_max = b.op(
        "ReduceMax", [b.op("ReduceSum", [a, b.const([-2])], keepdims=1), b.const([-1])], "col_sum_max", keepdims=1
    )
    z0 = b.op("Div", [b.op("Transpose", [a], perm=perm), col_max], "Z0")
    eye = b.op("EyeLike", [b.op("ConstantOfShape", [b.op("Concat", [m, m], axis=0)], value=helper.make_tensor("zero", FLOAT, [1], [0.0]))], "I")
    lb = _Builder("ns_")
    it, cond_in, z_in = "ns_iter", "ns_cond_in", "ns_z_in"
    az = lb.op("MatMul", [a, z_in], "AZ")
    inner = lb.op("Sub", [lb.op("Mul", [eye, lb.const(7.0, FLOAT)]), az], "t7")
    inner = lb.op("Sub", [lb.op("Mul", [eye, lb.const(15.0, FLOAT)]), lb.op("MatMul", [az, inner])], "t15")
    inner = lb.op("Sub", [lb.op("Mul", [eye, lb.const(13.0, FLOAT)]), lb.op("MatMul", [az, inner])], "t13")
    z_out = lb.op("Mul", [lb.op("MatMul", [z_in, inner]), lb.const(0.25, FLOAT)], "Z")
    cond_out = lb.op("Identity", [cond_in], "cond_out")
    body = helper.make_graph(
        lb.nodes,
        "newton_schulz_step",
        [
            helper.make_tensor_value_info(it, INT64, []),
            helper.make_tensor_value_info(cond_in, BOOL, []),
            helper.make_tensor_value_info(z_in, FLOAT, None),
        ],
        [helper.make_tensor_value_info(cond_out, BOOL, []), helper.make_tensor_value_info(z_out, FLOAT, None)],
    )
    iters = b.attr_const("pinv_iters", "int")
    z = b.op("Loop", [iters, b.const(True, BOOL, "true"), z0], "Z", body=body)
    # Bv = softmax(s qp k^T) v and out = softmax(s q kp^T) (Z Bv), in the I/O type
    bv = b.op(
        "MatMul",
        [b.op("Softmax", [b.op("MatMul", [b.op("Mul", [qp, scale_t]), b.op("Transpose", ["k"], perm=perm)])], axis=-1), "v"],
        "Bv",
    )
    w = b.op("CastLike", [b.op("MatMul", [z, b.op("Cast", [bv], to=FLOAT)]), "q"], "W")
    probs = b.op("Softmax", [b.op("MatMul", [b.op("Mul", ["q", scale_t]), b.op("Transpose", [kp], perm=perm)])], "P", axis=-1)
    b.nodes.append(helper.make_node("MatMul", [probs, w], ["out"]))
    _ = dv  # v may have its own head width; MatMul carries it through
    attributes = attribute_names(NYSTROM)
    return _function(NYSTROM, ["q", "k", "v", "idx"], ["out"], attributes, b, "NystromAttention body", opset)


def functions_for(model: onnx.ModelProto) -> list[FunctionProto]:
    """The function bodies a model's fna nodes need (one per op type; the landmark body is
    specialised on the method and scores input, which must agree across the model's nodes)."""
    variants: set[tuple[str, bool]] = set()
    has_nystrom = False
    for node in _all_nodes(model.graph):
        if node.domain != DOMAIN:
            continue
        if node.op_type == LANDMARKS:
            method = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "method"), b"fps")
            method = method.decode() if isinstance(method, bytes) else method
            variants.add((method, len(node.input) > 1 and node.input[1] != ""))
        elif node.op_type == NYSTROM:
            has_nystrom = True
    if len(variants) > 1:
        raise ValueError(
            f"the model's FnaLandmarks nodes differ in method or scores input ({sorted(variants)}); "
            "a portable export needs one kind"
        )
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), BODY_OPSET)
    functions = [landmarks_function(*variants.pop(), opset=opset)] if variants else []
    if has_nystrom:
        functions.append(nystrom_function(opset=opset))
    return functions


def _all_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(attr.g)


def attach_functions(model: onnx.ModelProto, functions: Optional[list[FunctionProto]] = None) -> onnx.ModelProto:
    """Add (or replace) the fna function bodies in ``model``, in place."""
    functions = functions if functions is not None else functions_for(model)
    keep = [f for f in model.functions if f.domain != DOMAIN]
    del model.functions[:]
    model.functions.extend(keep + functions)
    return model


def inline_functions(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with every model-local function (the fna bodies) expanded into the graph, for
    runtimes that do not run local functions (OpenVINO). Metadata, weights and any external-data
    references are kept; the result has no fna nodes, so TensorRT's plugins no longer apply."""
    from onnx import inliner

    return inliner.inline_local_functions(model)


def with_bodies(model: onnx.ModelProto) -> tuple[onnx.ModelProto, bool]:
    """(``model`` runnable without the plugins, whether bodies were attached): a trt-target export
    (fna nodes without bodies) gets the portable bodies, in place; any other model is returned as is."""
    has_fna = any(n.domain == DOMAIN for n in _all_nodes(model.graph))
    if not has_fna or any(f.domain == DOMAIN for f in model.functions):
        return model, False
    return attach_functions(model), True
