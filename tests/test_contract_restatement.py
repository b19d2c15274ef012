"""The plugin contract (fna_deploy/contract.py) is the one place its fields are written down.

This scans every module under fna_deploy/ (the contract itself aside) and fails when one restates
by hand what the contract holds: the choices of a string field (such as the landmark methods as
a literal ("fps", "grid")), or a literal list of three or more of an op's field/attribute names
(such as a function body's attribute list). Consumers read them from the contract instead
(contract.LANDMARK_METHODS, contract.attribute_names, contract.op(...).field(...)).

The CUDA kernels' limits (contract.KERNEL_LIMITS) are held to the same rule on both sides: no
Python module assigns one by hand, and no C++ source under plugins/fna/ declares its own
kMax* constant for them or writes the token limit as a literal; they read fna_contract.h's
kMaxKernel* (generated from the contract).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import fna_deploy
from fna_deploy import contract

PACKAGE = Path(fna_deploy.__file__).parent
PLUGIN_SOURCES = PACKAGE.parent / "plugins" / "fna"
LIMIT_NAME = re.compile(r"MAX_(KERNEL_)?(TOKENS|HEAD_DIM|LANDMARKS)")
CPP_LIMIT = re.compile(r"constexpr\s+[\w:]+\s+(kMax(Kernel)?(Tokens|HeadDim|Landmarks))\b|\(\s*1\s*<<\s*20\s*\)|\b1048576\b")


def _number(node: ast.AST):
    """The value of a constant numeric expression (4096, 1 << 20, 2 ** 8), else None."""
    try:
        value = ast.literal_eval(node)
    except ValueError:
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.LShift, ast.Pow, ast.Mult)):
            left, right = _number(node.left), _number(node.right)
            if isinstance(left, int) and isinstance(right, int):
                return {ast.LShift: left << right, ast.Pow: left**right, ast.Mult: left * right}[type(node.op)]
        return None
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def limit_restatements(source: str) -> list[tuple[int, str]]:
    """Assignments of a number to a contract kernel-limit name (MAX_KERNEL_TOKENS...), or of a
    limit's value to a limit-like name (MAX_HEAD_DIM = 256); other bounds (config.MAX_LANDMARKS,
    65536 landmarks a config may ask for) are not the kernels' and pass."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        names = [t.id for t in targets if isinstance(t, ast.Name)] + [t.attr for t in targets if isinstance(t, ast.Attribute)]
        number = _number(value)
        if number is not None and (any(n in contract.KERNEL_LIMITS for n in names)
                                   or (any(LIMIT_NAME.fullmatch(n) for n in names) and number in contract.KERNEL_LIMITS.values())):
            found.append((node.lineno, f"the kernel limit {names[0]} = {_number(value)}"))
    return found


def cpp_limit_restatements(source: str) -> list[tuple[int, str]]:
    return [(source.count("\n", 0, m.start()) + 1, f"the kernel limit {m.group(0)!r}") for m in CPP_LIMIT.finditer(source)]


def restatements(source: str) -> list[tuple[int, str]]:
    choices = [set(f.choices) for o in contract.OPS for f in o.fields if f.choices]
    names = [{f.name for f in o.fields} | set(contract.IDENTITY_ATTRIBUTES) for o in contract.OPS]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            elts = node.elts
        elif isinstance(node, ast.Dict):
            elts = [k for k in node.keys if k is not None]
        else:
            continue
        strings = [e.value for e in elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
        if any(c <= set(strings) for c in choices):
            found.append((node.lineno, f"the choices {sorted(set(strings))} of a contract field"))
        elif not isinstance(node, ast.Dict) and len(strings) >= 3 and len(strings) == len(elts) and any(set(strings) <= n for n in names):
            found.append((node.lineno, f"the field names {strings}"))
    return found


def test_no_module_restates_the_contract():
    found = [f"{path.relative_to(PACKAGE.parent)}:{line}: {what}"
             for path in sorted(PACKAGE.rglob("*.py")) if path.name != "contract.py"
             for line, what in restatements(path.read_text())]
    assert not found, "restated by hand instead of read from fna_deploy.contract:\n" + "\n".join(found)


def test_no_module_restates_a_kernel_limit():
    found = [f"{path.relative_to(PACKAGE.parent)}:{line}: {what}"
             for path in sorted(PACKAGE.rglob("*.py")) if path.name != "contract.py"
             for line, what in limit_restatements(path.read_text())]
    found += [f"{path.relative_to(PACKAGE.parent)}:{line}: {what}"
              for path in sorted(PLUGIN_SOURCES.rglob("*")) if path.suffix in (".h", ".cpp", ".cu", ".cuh")
              and path.name != "fna_contract.h"
              for line, what in cpp_limit_restatements(path.read_text())]
    assert not found, "kernel limits restated by hand instead of read from the contract / fna_contract.h:\n" + "\n".join(found)


def test_the_limit_scan_catches_a_restatement():
    assert limit_restatements("MAX_KERNEL_TOKENS = 1 << 20\n")
    assert limit_restatements("MAX_KERNEL_HEAD_DIM: int = 256\n")
    assert limit_restatements("lib.MAX_LANDMARKS = 4096\n")
    assert not limit_restatements("MAX_LANDMARKS = 65536\n")  # config's own bound, not a kernel limit
    assert not limit_restatements("from .contract import MAX_KERNEL_TOKENS\nMAX_KERNEL_TOKENS = contract.MAX_KERNEL_TOKENS\n")
    assert cpp_limit_restatements("constexpr int kMaxHeadDim = 256;\n")
    assert cpp_limit_restatements("if (N >= (1 << 20)) return;\n")
    assert not cpp_limit_restatements("constexpr int kNystromFusedMaxLandmarks = 256;\nif (N >= contract::kMaxKernelTokens) {}\n")


def test_the_limits_reach_the_kernels_and_the_header():
    from fna_deploy.ops import native_kernels

    assert (native_kernels.MAX_KERNEL_TOKENS, native_kernels.MAX_KERNEL_HEAD_DIM,
            native_kernels.MAX_KERNEL_LANDMARKS) == tuple(contract.KERNEL_LIMITS.values())
    header = (PLUGIN_SOURCES / "fna_contract.h").read_text()
    for name, value in contract.KERNEL_LIMITS.items():  # read as C++ text, not through the renderer
        camel = "".join(p.capitalize() for p in name.lower().split("_"))
        assert re.search(rf"constexpr int64_t k{camel} = {value};", header), name


def test_the_scan_catches_a_restatement():
    assert restatements('METHODS = ("fps", "grid")\n')
    assert restatements('ids = {"fps": 0, "grid": 1}\n')
    assert restatements('attrs = ["num_landmarks", "num_prefix", "method"]\n')
    assert not restatements('options = ("num_landmarks", "layers", "features")\n')  # CLI option names, not the contract


def test_consumers_read_the_contract():
    from fna_deploy import config, native
    from fna_deploy.export.functions import landmarks_function, nystrom_function
    from fna_deploy.ops import landmarks

    methods = contract.op(contract.LANDMARKS).field("method").choices
    assert config.METHODS == landmarks.METHODS == methods and list(native.METHODS) == list(methods)
    assert [a.name if hasattr(a, "name") else a for a in landmarks_function().attribute] == contract.attribute_names(contract.LANDMARKS)
    assert list(nystrom_function().attribute) == contract.attribute_names(contract.NYSTROM)


def test_landmark_attrs_is_the_contract_and_the_op_schema():
    """contract.LandmarkAttrs carries FnaLandmarks' fields in the contract's order with its
    defaults, and that order is the fna::landmarks custom op's (what op_args() relies on)."""
    import dataclasses

    import torch

    from fna_deploy import ops  # noqa: F401  (defines the custom op)

    fields = contract.op(contract.LANDMARKS).fields
    dc = dataclasses.fields(contract.LandmarkAttrs)
    assert [f.name for f in dc] == [f.name for f in fields]
    for d, f in zip(dc, fields):
        assert (d.default is dataclasses.MISSING) == f.required and (f.required or d.default == f.default), f.name
    schema = torch.ops.fna.landmarks.default._schema
    assert [a.name for a in schema.arguments] == ["features", "scores"] + [f.name for f in fields]
    a = contract.LandmarkAttrs(16, 1, 2, 0.5, "grid")
    assert a.op_args() == (16, 1, 2.0, 0.5, "grid") and isinstance(a.op_args()[2], float)
    assert contract.LandmarkAttrs.of(*a.op_args()) == a and contract.LandmarkAttrs.of(a) is a
    assert a.attributes() == {"num_landmarks": 16, "num_prefix": 1, "massive_ratio": 2.0, "artifact_ratio": 0.5, "method": "grid"}
    assert a.method_code == contract.LANDMARK_METHODS.index("grid") == 1
