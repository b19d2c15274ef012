"""Small shared helpers."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_bytes_atomic(path: "str | os.PathLike[str]", data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename:
    readers see the old file or the new one, never half of one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent if str(path.parent) else ".")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: "str | os.PathLike[str]", text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_bytes_atomic(path, text.encode())
