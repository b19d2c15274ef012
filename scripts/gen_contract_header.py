"""Regenerate plugins/fna/fna_contract.h from fna_deploy/contract.py (run from the repository root).

    python scripts/gen_contract_header.py          # write the header
    python scripts/gen_contract_header.py --check  # exit 1 when the committed header is stale
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fna_deploy.contract import HEADER_PATH, render_cpp_header  # noqa: E402
from fna_deploy.utils import write_text_atomic  # noqa: E402


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
