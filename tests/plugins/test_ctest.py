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


needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH")


@pytest.fixture(scope="module")
def sm90_build(tmp_path_factory):
    """CI has nvcc but no GPU: compile the kernels, the C API library and the kernel test for
    sm_90 once (a single architecture keeps this under a minute on two cores)."""
    start = time.monotonic()
    result = native.build(tmp_path_factory.mktemp("fna_sm90"), cuda_arch="90", targets=["fna", "fna_test_kernels"])
    print(f"nvcc build for sm_90: {time.monotonic() - start:.0f} s")
    return result


@pytest.mark.slow
@needs_nvcc
def test_cuda_kernels_compile_for_one_arch(sm90_build):
    import torch

    from fna_deploy.ops import select_landmarks

    assert sm90_build.cuda and sm90_build.cuda_architectures == "90"
    assert (sm90_build.build_dir / "bin" / "fna_test_kernels").is_file()
    lib = native.NativeLibrary(sm90_build.library)
    assert lib.built_with_cuda
    f = torch.randn(1, 30, 4)  # the CPU reference is in the CUDA build too
    assert torch.equal(lib.select_landmarks(f, 8), select_landmarks(f, 8))


@pytest.mark.slow
@needs_nvcc
def test_cuda_kernels_register_for_the_custom_ops(sm90_build, monkeypatch):
    """With a CUDA build the kernels become the CUDA implementation of both custom ops (the
    registration itself needs no GPU); CPU calls stay on the PyTorch reference."""
    import torch

    from fna_deploy.ops import select_landmarks

    lib = native.NativeLibrary(sm90_build.library)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert lib.register_cuda_kernels()
    for op in ("fna::landmarks", "fna::nystrom_attention"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(op, "CUDA"), op
    f = torch.randn(2, 40, 8)
    assert torch.equal(select_landmarks(f, 10), lib.select_landmarks(f, 10))


@pytest.mark.slow
def test_cuda_kernels_on_the_cpu_emulator(tmp_path):
    """The CUDA kernels' own test (test_kernels.cpp: kernels vs the C++ reference, identical
    landmark indices, Nystrom rel err <= 1e-4 / 1e-2 for fp16) run through the CPU emulator in
    plugins/cpp_tests/emu: no GPU needed, only g++ and the CUDA headers."""
    import subprocess
    import sys

    if not _cuda_headers_present():
        pytest.skip("CUDA headers (cuda_fp16.h) not found")
    root = native.source_dir()
    proc = subprocess.run([sys.executable, str(root / "plugins" / "cpp_tests" / "emulate_kernels.py"), "--build", str(tmp_path)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "running on the CPU emulator" in proc.stdout and " 0 failures" in proc.stdout


def _cuda_headers_present() -> bool:
    import importlib.util

    path = native.source_dir() / "plugins" / "cpp_tests" / "emulate_kernels.py"
    spec = importlib.util.spec_from_file_location("emulate_kernels", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.cuda_include() is not None
