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

