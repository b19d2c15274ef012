"""Small shared helpers."""

from __future__ import annotations

from .errors import FnaDeployError

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Optional


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


# --- one staging/lock mechanism for every writer of files or folders -----------------------------
# Every writer stages its files in a hidden folder beside the target (``.NAME.staging.PID.XXXX``) and
# swaps them into place while holding the target folder's lock, so the check "does the target exist"
# and the rename are one step for every process: of concurrent writers exactly one wins, the others
# get a sentence. Staging folders whose process is gone (SIGKILL) are removed by the next writer.

LOCK_TIMEOUT_S = 60.0


class WriterBusy(FnaDeployError, ValueError):
    """Another process held the folder's writer lock for longer than the timeout."""


@contextlib.contextmanager
def folder_lock(folder: "str | os.PathLike[str]", *, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold an exclusive advisory lock (flock) on ``folder`` itself: no lock file is left behind, and
    the kernel drops the lock when the process dies, so a killed writer never blocks the next one."""
    import fcntl
    import time

    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise WriterBusy(f"another fna-deploy run has been writing into {str(folder)!r} for over {timeout_s:.0f} s; "
                                     "wait for it to finish, then rerun") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def staging_dir(parent: "str | os.PathLike[str]", name: str) -> Path:
    """A new hidden staging folder for ``name`` in ``parent``, tagged with this process's id."""
    return Path(tempfile.mkdtemp(prefix=f".{name}.staging.{os.getpid()}.", dir=parent))


_STAGING = re.compile(r"^\.(?P<name>.+)\.(?:staging|old)\.(?:(?P<pid>\d+)\.)?[A-Za-z0-9_]+$")
STALE_UNTAGGED_S = 3600.0  # a staging folder without a process id (older fna-deploy) is stale after an hour


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def clean_stale_staging(parent: "str | os.PathLike[str]", name: str) -> list[Path]:
    """Remove ``.NAME.staging.*`` / ``.NAME.old.*`` folders in ``parent`` left by writers that died
    (their process is gone, or, untagged, older than an hour). Call it holding ``folder_lock(parent)``.
    Returns what was removed."""
    import shutil
    import time

    removed = []
    for entry in Path(parent).iterdir():
        match = _STAGING.match(entry.name)
        if not match or match.group("name") != name or entry.is_symlink() or not entry.is_dir():
            continue
        pid = match.group("pid")
        if pid is not None:
            stale = int(pid) != os.getpid() and not _process_alive(int(pid))
        else:
            stale = time.time() - entry.stat().st_mtime > STALE_UNTAGGED_S
        if stale:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def replace_folder_atomic(target: "str | os.PathLike[str]", populate: "Callable[[Path], None]", *,
                          check: "Optional[Callable[[Path], None]]" = None) -> Path:
    """Fill a staging folder beside ``target`` with ``populate(staging)`` and swap it into place under
    the parent folder's writer lock: readers see the old folder or the new one, never half of one; a
    failure leaves ``target`` as it was. ``check(target)``, called holding the lock, decides whether
    an existing ``target`` may be replaced (it raises to refuse): of concurrent writers of one name
    exactly one passes it."""
    import shutil

    target = Path(target)
    parent = target.parent
    staging = staging_dir(parent, target.name)
    try:
        os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp makes 0700; a server may run as another user
        populate(staging)
        old = None
        with folder_lock(parent):
            clean_stale_staging(parent, target.name)
            if check is not None:
                check(target)
            if target.exists():  # the old folder is moved aside first and removed after the rename
                old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.{os.getpid()}.", dir=parent))
                os.replace(target, old / target.name)
            try:
                os.replace(staging, target)
            except BaseException:
                if old is not None:
                    os.replace(old / target.name, target)
                raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target
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
