"""Small shared helpers."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional


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


DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str) -> str:
    """``auto`` -> cuda when PyTorch sees a GPU, else cpu; ``cuda`` without a GPU is a ValueError
    (one sentence; the CLI turns it into exit 2). The one meaning of ``--device`` everywhere."""
    import torch

    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: PyTorch sees no CUDA GPU here; use --device cpu (or auto)")
    return device


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity; all of os.cpu_count() where unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def choose_threads(threads: Optional[int] = None) -> tuple[int, Optional[str]]:
    """The CPU threads to time with, and a warning when the machine is too busy for clean timings.

    Default: the free cores, those of the affinity mask minus the 1-minute load average (at
    least 1), so the timed threads do not queue behind other work. The warning comes when the
    load plus the threads used exceeds the cores: other processes then share those cores."""
    cores = usable_cores()
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = 0.0
    chosen = threads if threads else max(1, min(cores, int(cores - load + 0.5)))
    warning = None
    if load + chosen > cores + 0.5:
        warning = (f"the machine is busy (load {load:.1f} on {cores} usable cores) and bench uses {chosen} thread(s): "
                   "timings will be inflated; rerun when it is idle" + (", or with fewer --threads" if chosen > 1 else ""))
    return chosen, warning
