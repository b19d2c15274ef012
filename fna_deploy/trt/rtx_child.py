"""TensorRT-RTX's builder and parser run in child processes (``_rtx_build.py``, ``_parser_probe.py``).

The pip wheel ``tensorrt-rtx`` ships only ``libtensorrt_rtx.so.1``; its ONNX parser dlopens the
unversioned ``libtensorrt_rtx.so`` the first time it meets a plugin node and, not finding it, ends
the process with std::terminate (exit 134). :func:`child_env` gives a child an LD_LIBRARY_PATH
whose first entry is a private folder holding ``libtensorrt_rtx.so``, a symlink to the very file
the wheel loads (a different copy would load a second plugin registry). LD_LIBRARY_PATH is read
when a process starts, hence the child. :func:`run_script` runs one and turns a death by signal
into one sentence.
"""

from __future__ import annotations

from ..errors import FnaDeployError

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable, Optional

UNVERSIONED = {"tensorrt_rtx": "libtensorrt_rtx.so"}


class ChildDied(FnaDeployError, RuntimeError):
    """The child process ended by a signal or without its JSON answer (one sentence)."""


def loaded_library(module: str = "tensorrt_rtx") -> Optional[Path]:
    """The runtime library file ``module`` loads: from this process's memory map when the module is
    imported here, else the wheel's ``<module>_libs`` folder; None when neither has it."""
    stem = UNVERSIONED.get(module)
    if stem is None:
        return None
    try:
        for line in Path("/proc/self/maps").read_text().splitlines():
            path = line.split(maxsplit=5)[-1] if line.count(" ") >= 5 else ""
            if Path(path).name.startswith(stem + ".") and Path(path).is_file():
                return Path(path).resolve()
    except OSError:
        pass
    spec = importlib.util.find_spec(f"{module}_libs")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        found = sorted(Path(folder).glob(stem + ".*"))
        if found:
            return found[0].resolve()
    return None


def child_env(module: str, tmp: "str | Path") -> dict[str, str]:
    """os.environ plus, for tensorrt_rtx, ``<tmp>/libs`` (the unversioned symlink) first on LD_LIBRARY_PATH."""
    env = dict(os.environ)
    library = loaded_library(module)
    if library is None:
        return env
    folder = Path(tmp) / "libs"
    folder.mkdir(exist_ok=True)
    link = folder / UNVERSIONED[module]
    if not link.is_symlink():
        link.symlink_to(library)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(folder), env.get("LD_LIBRARY_PATH", "")) if p)
    return env


def died(returncode: int, what: str, hint: str = "") -> str:
    """One sentence for a child that ended with ``returncode`` and no answer (``hint``: what to do)."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        how = f"was killed by {name} (signal {-returncode})"
    else:
        how = f"exited with status {returncode} without an answer"
    return f"the {what} process {how}; nothing was written" + (f"; {hint}" if hint else "")


def run_script(script: Path, spec: dict, module: str, tmp: "str | Path", what: str, *, timeout: float = 3600.0,
               on_stderr: Optional[Callable[[str], None]] = None, hint: str = "") -> dict:
    """Run ``python SCRIPT SPEC.json`` in a child with :func:`child_env`; return the JSON object of its
    last stdout line. ``on_stderr`` gets each line the child wrote to stderr (runtime logs, fna-trace
    lines of a plugin built with FNA_TRACE_PLUGIN_CALLS). Raises ChildDied with one sentence."""
    spec_path = Path(tmp) / f"{script.stem}.json"
    spec_path.write_text(json.dumps(spec))
    try:
        proc = subprocess.run([sys.executable, str(script), str(spec_path)], capture_output=True, text=True,
                              timeout=timeout, env=child_env(module, tmp))
    except subprocess.TimeoutExpired:
        raise ChildDied(f"the {what} process did not finish within {timeout:.0f} s and was stopped; nothing was written") from None
    if on_stderr is not None:
        for line in proc.stderr.splitlines():
            on_stderr(line)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise ChildDied(died(proc.returncode, what, hint))
    try:
        return json.loads(lines[-1])
    except json.JSONDecodeError:
        raise ChildDied(died(proc.returncode, what, hint)) from None
