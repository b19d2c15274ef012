"""The C++ tests (ctest) of the session's CPU build, and an nvcc compile check of the kernels."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from fna_deploy import native


def test_ctest_passes(cpu_build):
    proc = subprocess.run(["ctest", "--test-dir", str(cpu_build.build_dir), "--output-on-failure"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "logic ...." in proc.stdout and "reference ...." in proc.stdout
    # the kernel test is skipped (exit 77) in a CPU-only build, never "passed" silently
    assert "kernels ...." in proc.stdout and "Skipped" in proc.stdout


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH")
def test_cuda_kernels_compile_for_one_arch(tmp_path):
    """CI has nvcc but no GPU: compile the kernels, the C API library and the kernel test for
    sm_90 (a single architecture keeps this to about a minute on two cores)."""
    start = time.monotonic()
    result = native.build(tmp_path / "cuda", cuda_arch="90", targets=["fna", "fna_test_kernels"])
    elapsed = time.monotonic() - start
    assert result.cuda and result.cuda_architectures == "90"
    lib = native.NativeLibrary(result.library)
    assert lib.built_with_cuda
    # the CPU reference is in the CUDA build too
    import torch

    f = torch.randn(1, 30, 4)
    from fna_deploy.ops import select_landmarks

    assert torch.equal(lib.select_landmarks(f, 8), select_landmarks(f, 8))
    print(f"nvcc build for sm_90: {elapsed:.0f} s")
