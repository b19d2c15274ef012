"""The plugin contract (fna_deploy/contract.py) is the one place its fields are written down.

This scans every module under fna_deploy/ (the contract itself aside) and fails when one restates
by hand what the contract holds: the choices of a string field (such as the landmark methods as
a literal ("fps", "grid")), or a literal list of three or more of an op's field/attribute names
(such as a function body's attribute list). Consumers read them from the contract instead
(contract.LANDMARK_METHODS, contract.attribute_names, contract.op(...).field(...)).
"""

from __future__ import annotations

import ast
from pathlib import Path

import fna_deploy
from fna_deploy import contract

PACKAGE = Path(fna_deploy.__file__).parent


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
