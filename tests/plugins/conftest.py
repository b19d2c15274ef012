"""Fixtures for the native library tests: one CPU-reference build per session (~20 s on two
cores), and a CUDA build for the local GPU only when a GPU is present."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from fna_deploy import native


def has_cuda_device() -> bool:
    return torch.cuda.is_available() and torch.cuda.device_count() > 0


@pytest.fixture(scope="session")
def cpu_build(tmp_path_factory) -> native.BuildResult:
    if shutil.which("cmake") is None:
        pytest.fail("cmake is needed to build plugins/ (pip install cmake)")
    out = tmp_path_factory.mktemp("fna_cpu_build")
    return native.build(out, cpu_only=True)


@pytest.fixture(scope="session")
def lib(cpu_build) -> native.NativeLibrary:
    return native.load(cpu_build.library, register_cuda=False)


@pytest.fixture(scope="session")
def cuda_build(tmp_path_factory) -> native.BuildResult:
    """The CUDA build for this machine's GPU (FNA_TEST_CUDA_BUILD reuses an existing build dir)."""
    if not has_cuda_device():
        pytest.skip("no CUDA device visible to torch")
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc is not on PATH")
    existing = os.environ.get("FNA_TEST_CUDA_BUILD")
    if existing and native.find_library(existing):
        info = native.read_build_info(existing)
        if info and info.get("cuda"):  # built already (scripts/device_check.sh): use as is
            return native.BuildResult(
                build_dir=Path(existing), library=native.find_library(existing), cuda=True, cuda_reason="",
                cuda_architectures=info.get("cuda_architectures", ""), trt_plugin=native.find_trt_plugin(existing),
                trt_reason=info.get("trt_reason", ""), info=info)
    major, minor = torch.cuda.get_device_capability()
    out = Path(existing) if existing else tmp_path_factory.mktemp("fna_cuda_build")
    return native.build(out, cuda_arch=f"{major}{minor}")



# ---- TensorRT headers (a third-party SDK: never part of the project) and the TensorRT-RTX plugin
REPO = Path(__file__).resolve().parents[2]
HEADERS = {  # env var, then the machine's copy beside the checkout (CI: a copy of shared/ next to the clone)
    "11": ("TensorRT_RTX_INCLUDE_DIR", REPO.parent / "shared" / "third_party" / "tensorrt-11.1" / "include"),
    "10": ("FNA_TENSORRT10_INCLUDE_DIR", REPO.parent / "shared" / "third_party" / "tensorrt-10.16" / "include"),
}


def tensorrt_headers(major: str) -> "Path | None":
    """Folder with TensorRT ``major``.x headers (NvInferRuntime.h): $TensorRT_RTX_INCLUDE_DIR (11) /
    $FNA_TENSORRT10_INCLUDE_DIR (10), else ../shared/third_party/tensorrt-11.1|10.16/include; None if neither."""
    env, fallback = HEADERS[major]
    for candidate in (os.environ.get(env), fallback):
        if candidate and (Path(candidate) / "NvInferRuntime.h").is_file():
            return Path(candidate)
    return None


def headers_or_skip(major: str) -> Path:
    found = tensorrt_headers(major)
    if found is None:
        env, fallback = HEADERS[major]
        pytest.skip(f"no TensorRT {major}.x headers: set {env} to a folder with NvInferRuntime.h ({fallback} is absent)")
    return found


RTX_ARCH = "86"  # one architecture keeps the CUDA compile short (about 25 s on two cores)


@pytest.fixture(scope="session")
def rtx_plugin_build(tmp_path_factory) -> native.BuildResult:
    """The TensorRT-RTX plugin library, built once per session for sm_86 with FNA_TRACE_PLUGIN_CALLS
    (each plugin method prints one fna-trace: line the first time the real builder calls it), plus
    the C++ glue and registry tests. Needs nvcc, cmake, tensorrt_rtx and TensorRT 11.x headers."""
    pytest.importorskip("tensorrt_rtx", reason="needs TensorRT for RTX (pip install tensorrt-rtx; in the dev extra)")
    headers = headers_or_skip("11")
    for tool in ("cmake", "nvcc"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not on PATH (the plugin library needs the CUDA kernels)")
    import time

    out = tmp_path_factory.mktemp("fna_rtx_build")
    start = time.perf_counter()
    result = native.build(out, cuda_arch=RTX_ARCH, runtime="tensorrt-rtx", tensorrt_include=headers, trace_calls=True,
                          targets=["fna", "fna_trt_rtx_plugin", "fna_test_trt_rtx_glue", "fna_test_trt_rtx_registry"])
    result.info["seconds"] = round(time.perf_counter() - start, 1)
    if result.trt_rtx_plugin is None:
        pytest.fail(f"the TensorRT-RTX plugin did not build: {result.trt_rtx_reason}")
    return result
