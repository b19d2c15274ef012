"""Bad attributes and inputs are rejected by the C++ code with one sentence; a missing library
says how to build it."""

from __future__ import annotations

import pytest
import torch

from fna_deploy import native


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"num_landmarks": 0}, "num_landmarks must be >= 1"),
        ({"num_landmarks": 4, "num_prefix": 5}, "do not fit"),
        ({"num_prefix": -1}, "num_prefix must be >= 0"),
        ({"massive_ratio": -2.0}, "massive_ratio"),
        ({"artifact_ratio": float("nan")}, "artifact_ratio"),
        ({"method": "kmeans"}, "method must be"),
        ({"num_landmarks": 1.5}, "num_landmarks must be an int"),
    ],
)
def test_landmark_attrs_rejected(lib, kwargs, message):
    with pytest.raises(ValueError, match=message) as info:
        lib.check_landmark_attrs(**{"num_landmarks": 64, **kwargs})  # num_landmarks is required
    assert "\n" not in str(info.value)


def test_landmark_attrs_accepted(lib):
    lib.check_landmark_attrs(num_landmarks=128, num_prefix=5, massive_ratio=4.0, artifact_ratio=2.0, method="grid")


@pytest.mark.parametrize(
    "kwargs,message",
    [({"pinv_iters": -1}, "pinv_iters"), ({"scale": float("inf")}, "scale"), ({"scale": -0.5}, "scale")],
)
def test_nystrom_attrs_rejected(lib, kwargs, message):
    with pytest.raises(ValueError, match=message):
        lib.check_nystrom_attrs(**kwargs)


def test_select_landmarks_bad_inputs(lib):
    f = torch.randn(2, 10, 4)
    with pytest.raises(ValueError, match="more than the 10 tokens"):
        lib.select_landmarks(f, 11)
    with pytest.raises(ValueError, match="need per-token scores"):
        lib.select_landmarks(f, 4, massive_ratio=2.0)
    with pytest.raises(ValueError, match=r"\[B, N, D\]"):
        lib.select_landmarks(torch.randn(10, 4), 4)
    with pytest.raises(ValueError, match="method"):
        lib.select_landmarks(f, 4, method="kmeans")


def test_nystrom_bad_inputs(lib):
    q = torch.randn(1, 2, 10, 8)
    with pytest.raises(ValueError, match="outside 0..9"):
        lib.nystrom_attention(q, q, q, torch.tensor([[0, 10]]))
    with pytest.raises(ValueError, match="more than the 10 tokens"):
        lib.nystrom_attention(q, q, q, torch.arange(11).view(1, 11))
    with pytest.raises(ValueError, match="pinv_iters"):
        lib.nystrom_attention(q, q, q, torch.tensor([[0, 1]]), pinv_iters=-3)
    with pytest.raises(ValueError, match="do not match"):
        lib.nystrom_attention(q, torch.randn(1, 2, 9, 8), q, torch.tensor([[0, 1]]))


def test_cuda_entry_points_report_not_built(lib):
    assert not lib.built_with_cuda
    with pytest.raises(RuntimeError, match="built without CUDA"):
        lib._check(lib._lib.fna_nystrom_cuda(None, None, None, 0, None, 1, 1, 4, 8, 8, 2, 0.0, 6, None, None, 0, None),
                   RuntimeError)
    with pytest.raises(RuntimeError, match="built without CUDA"):  # bf16 (2) is a known dtype
        lib._check(lib._lib.fna_nystrom_cuda(None, None, None, 2, None, 1, 1, 4, 8, 8, 2, 0.0, 6, None, None, 0, None),
                   RuntimeError)
    with pytest.raises(RuntimeError, match=r"dtype must be 0 \(fp32\), 1 \(fp16\) or 2 \(bf16\), got 7"):
        lib._check(lib._lib.fna_nystrom_cuda(None, None, None, 7, None, 1, 1, 4, 8, 8, 2, 0.0, 6, None, None, 0, None),
                   RuntimeError)


def test_load_without_build_says_how(tmp_path, monkeypatch):
    monkeypatch.setenv("FNA_DEPLOY_PLUGIN_DIR", str(tmp_path / "nothing"))
    assert native.find_library() is None
    with pytest.raises(native.NativeLibraryError, match="fna-deploy plugin build"):
        native.load()
    with pytest.raises(native.NativeLibraryError, match="fna-deploy plugin build"):
        native.load(tmp_path / "missing.so")


def test_load_rejects_a_non_library(tmp_path):
    bogus = tmp_path / "libfna.so"
    bogus.write_text("not a library")
    with pytest.raises(native.NativeLibraryError, match="cannot load"):
        native.load(bogus)


def test_find_library_via_build_info(cpu_build, monkeypatch):
    monkeypatch.setenv("FNA_DEPLOY_PLUGIN_DIR", str(cpu_build.build_dir))
    assert native.find_library() == cpu_build.library
    assert native.find_trt_plugin() is None
    info = native.read_build_info()
    assert info["cuda"] is False and "CPU_ONLY" in info["trt_reason"]


def test_cuda_registration_leaves_cpu_on_the_reference(cpu_build, tmp_path, monkeypatch):
    """register_cuda_kernels only claims the CUDA dispatch key: CPU calls keep the PyTorch
    reference. A CPU-only build never registers (nothing to register)."""
    lib = native.NativeLibrary(cpu_build.library)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert lib.register_cuda_kernels() is False  # built without CUDA
    assert not lib.cuda_registered
