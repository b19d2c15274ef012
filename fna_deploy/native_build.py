"""Building plugins/ with CMake: ``fna-deploy plugin build`` calls :func:`build` (re-exported by
``fna_deploy.native``, which says where builds live)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from .native import LIBRARY_NAME, NativeLibraryError, default_build_dir, find_library, find_trt_plugin, read_build_info, source_dir


@dataclass
class BuildResult:
    build_dir: Path
    library: Path
    cuda: bool
    cuda_reason: str
    cuda_architectures: str
    trt_plugin: Optional[Path]
    trt_reason: str
    info: dict[str, Any] = field(default_factory=dict)
    trt_rtx_plugin: Optional[Path] = None
    trt_rtx_reason: str = ""

    def plugin(self, runtime: str) -> tuple[Optional[Path], str]:
        """(library, why not built) for ``runtime`` ("tensorrt" or "tensorrt-rtx")."""
        if runtime == "tensorrt-rtx":
            return self.trt_rtx_plugin, self.trt_rtx_reason
        return self.trt_plugin, self.trt_reason


def build(
    build_dir: "Path | str | None" = None,
    *,
    cuda_arch: Optional[str] = None,
    cpu_only: bool = False,
    tensorrt_root: "Path | str | None" = None,
    tensorrt_include: "Path | str | None" = None,
    runtime: Optional[str] = None,
    trace_calls: bool = False,
    targets: Optional[list[str]] = None,
    jobs: Optional[int] = None,
    log: Optional[Callable[[str], None]] = None,
    verbose: bool = False,
) -> BuildResult:
    """Configure and build plugins/ with CMake; return what was built.

    ``cuda_arch``: CMAKE_CUDA_ARCHITECTURES, e.g. "90" or "80;86" (commas accepted); default
    "80;86;89;90". ``cpu_only``: skip nvcc (CPU reference only). ``tensorrt_include``: a folder
    with NvInferRuntime.h for ``runtime`` ("tensorrt": TensorRT_INCLUDE_DIR, "tensorrt-rtx":
    TensorRT_RTX_INCLUDE_DIR; TensorRT-RTX's library comes from its pip wheel). ``trace_calls``:
    the plugin logs each method once (FNA_TRACE_PLUGIN_CALLS). ``targets``: CMake targets to
    build (default: all). ``verbose``: every compiler command and output line goes to ``log``.
    Raises NativeLibraryError / ValueError with one sentence on failure.
    """
    src = source_dir()
    if src is None:
        raise NativeLibraryError(
            "the plugin sources (CMakeLists.txt, plugins/) are not part of this installation; "
            "build from a source checkout of fna-deploy"
        )
    cmake = shutil.which("cmake")
    if cmake is None:
        raise NativeLibraryError("cmake was not found on PATH; install it (e.g. pip install cmake) and retry")
    if cuda_arch is not None:
        cuda_arch = ";".join(a.strip() for a in cuda_arch.replace(",", ";").split(";") if a.strip())
        if not cuda_arch or not all(a.replace("-real", "").replace("-virtual", "").rstrip("af").isdigit() for a in cuda_arch.split(";")):
            raise ValueError(f"--cuda-arch must be a list of CUDA architectures such as 90 or 80,86,90, got {cuda_arch!r}")
    out = Path(build_dir or default_build_dir()).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise ValueError(f"build directory {out} exists and is not a directory")
    say = log or (lambda _msg: None)

    args = [cmake, "-S", str(src), "-B", str(out), "-DCMAKE_BUILD_TYPE=Release"]
    args.append(f"-DFNA_CPU_ONLY={'ON' if cpu_only else 'OFF'}")
    if cuda_arch:
        args.append(f"-DCMAKE_CUDA_ARCHITECTURES={cuda_arch}")
    args.append(f"-DPython3_EXECUTABLE={sys.executable}")  # finds the tensorrt(-rtx) wheel's library
    args.append(f"-DFNA_TRACE_PLUGIN_CALLS={'ON' if trace_calls else 'OFF'}")
    if tensorrt_root:
        root_var = "TensorRT_RTX_ROOT" if runtime == "tensorrt-rtx" else "TensorRT_ROOT"
        args.append(f"-D{root_var}={Path(tensorrt_root).expanduser().resolve()}")
    if tensorrt_include:
        include = check_tensorrt_include(tensorrt_include)
        include_var = "TensorRT_RTX_INCLUDE_DIR" if runtime == "tensorrt-rtx" else "TensorRT_INCLUDE_DIR"
        args.append(f"-D{include_var}={include}")
    say(f"configuring {out}")
    _run(args, "CMake configure", say, verbose)
    build_args = [cmake, "--build", str(out), "-j", str(jobs or os.cpu_count() or 2)]
    for target in targets or []:
        build_args += ["--target", target]
    if verbose:
        build_args.append("--verbose")
    say("building (the CUDA kernels take a minute or two per architecture)")
    _run(build_args, "the build", say, verbose)

    info = read_build_info(out)
    library = find_library(out)
    if info is None or library is None:
        raise NativeLibraryError(f"the build finished but {LIBRARY_NAME} is not in {out}; see the CMake output above")
    trt = find_trt_plugin(out) if info.get("trt_plugin") else None
    rtx = find_trt_plugin(out, runtime="tensorrt-rtx") if info.get("trt_rtx_plugin") else None
    return BuildResult(
        build_dir=out,
        library=library,
        cuda=bool(info.get("cuda")),
        cuda_reason=info.get("cuda_reason", ""),
        cuda_architectures=info.get("cuda_architectures", ""),
        trt_plugin=trt,
        trt_reason=info.get("trt_reason", "") if trt is None else "",
        info=info,
        trt_rtx_plugin=rtx,
        trt_rtx_reason=info.get("trt_rtx_reason", "") if rtx is None else "",
    )


def check_tensorrt_include(path: "Path | str", flag: str = "--tensorrt-include") -> Path:
    """A folder holding the TensorRT headers (NvInferRuntime.h), resolved, or ValueError in one sentence."""
    folder = Path(path).expanduser().resolve()
    if not (folder / "NvInferRuntime.h").is_file():
        raise ValueError(f"{flag} {str(path)!r} has no NvInferRuntime.h; name the folder that holds the TensorRT headers "
                         "(the include/ folder of a TensorRT SDK, or of github.com/NVIDIA/TensorRT at v11.1 for TensorRT-RTX)")
    return folder


def _run(args: list[str], what: str, say: Callable[[str], None], every_line: bool = False) -> None:
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        tail = (tail + [line])[-200:]
        if every_line or line.startswith("[") or "fna:" in line or "error" in line.lower():
            say(line)
    if proc.wait() != 0:
        errors = [l for l in tail if "error:" in l.lower()] or [l for l in tail if "error" in l.lower()]
        detail = (errors[:1] or tail[-1:] or ["(no output)"])[0].strip()
        raise NativeLibraryError(f"{what} failed (exit {proc.returncode}): {detail}")


