"""Regenerate plugins/fna/fna_contract.h from fna_deploy/contract.py (run from the repository root).

    python scripts/gen_contract_header.py          # write the header
    python scripts/gen_contract_header.py --check  # exit 1 when the committed header is stale
"""

from __future__ import annotations

import sys
from pathlib import Path

import importlib.util

ROOT = Path(__file__).resolve().parents[1]


def _module(name: str):
    """fna_deploy/<name>.py by path, as a module of a stand-in package (so its relative imports of
    other standard-library-only modules, such as utils -> errors, resolve): importing the package
    itself would load torch (seconds) for no reason."""
    import types

    if "_fna" not in sys.modules:
        package = types.ModuleType("_fna")
        package.__path__ = [str(ROOT / "fna_deploy")]  # type: ignore[attr-defined]
        sys.modules["_fna"] = package
    spec = importlib.util.spec_from_file_location(f"_fna.{name}", ROOT / "fna_deploy" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


_contract = _module("contract")
HEADER_PATH, render_cpp_header = _contract.HEADER_PATH, _contract.render_cpp_header
write_text_atomic = _module("utils").write_text_atomic


def main(argv: list[str]) -> int:
    path = ROOT / HEADER_PATH
    text = render_cpp_header()
    if "--check" in argv:
        if not path.is_file() or path.read_text() != text:
            print(f"{HEADER_PATH} is stale; run 'python scripts/gen_contract_header.py'", file=sys.stderr)
            return 1
        return 0
    write_text_atomic(path, text)
    print(f"wrote {HEADER_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
