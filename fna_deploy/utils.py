"""Small shared helpers."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_bytes_atomic(path: "str | os.PathLike[str]", data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename:
    readers see the old file or the new one, never half of one. The file gets the permissions a
    plain ``open(path, "w")`` would (0666 less the umask, usually 0644), not mkstemp's 0600."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent if str(path.parent) else ".")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            os.fchmod(fh.fileno(), 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: "str | os.PathLike[str]", text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_bytes_atomic(path, text.encode())


def current_umask() -> int:
    """The process umask (reading it means setting it; it is put back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
