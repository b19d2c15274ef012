"""The TensorRT glue compiles against both header sets, without linking: TensorRT 11.1 (what
TensorRT-RTX 1.7 has) and TensorRT 10.16 (what most GPU users run). Headers come from
$TensorRT_RTX_INCLUDE_DIR / $FNA_TENSORRT10_INCLUDE_DIR, else ../shared/third_party/ beside the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import REPO, headers_or_skip


def cuda_include() -> "Path | None":
    """The folder with cuda_runtime_api.h (NvInferRuntimeBase.h includes it): $CUDA_HOME, nvcc's toolkit, /usr/local/cuda."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(str(Path(nvcc).resolve().parent.parent))
    candidates.append("/usr/local/cuda")
    for root in filter(None, candidates):
        for sub in ("include", "targets/x86_64-linux/include", "targets/sbsa-linux/include"):
            if (Path(root) / sub / "cuda_runtime_api.h").is_file():
                return Path(root) / sub
    return None


@pytest.mark.parametrize("trace", [False, True], ids=["plain", "traced"])
@pytest.mark.parametrize("major", ["11", "10"])
def test_glue_compiles_against_the_headers(major, trace, tmp_path):
    headers = headers_or_skip(major)
    compiler = shutil.which("c++") or shutil.which("g++")
    cuda = cuda_include()
    if compiler is None or cuda is None or shutil.which("nm") is None:
        pytest.skip("needs a C++ compiler, nm and the CUDA runtime headers (cuda_runtime_api.h)")
    obj = tmp_path / f"fna_plugins_trt{major}.o"
    # traced: FNA_TRACE_PLUGIN_CALLS's variant (fna_trace.h), as the TensorRT-RTX engine test builds it
    cmd = [compiler, "-std=c++17", "-fPIC", "-fvisibility=hidden", "-Wall", "-Wextra", "-Werror", *(["-DFNA_TRACE_CALLS=1"] if trace else []),
           "-isystem", str(headers), "-isystem", str(cuda), "-I", str(REPO / "plugins" / "fna"),
           "-c", str(REPO / "plugins" / "fna" / "trt" / "fna_plugins.cpp"), "-o", str(obj)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    symbols = subprocess.run(["nm", "--defined-only", str(obj)], capture_output=True, text=True).stdout.split()
    assert "getCreators" in symbols and "setLoggerFinder" in symbols  # the loadLibrary entry points, unmangled
