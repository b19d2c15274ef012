"""The TensorRT plugin library registers both creators (needs TensorRT and a CUDA build)."""

from __future__ import annotations

import ctypes

import pytest

from fna_deploy import native

pytestmark = pytest.mark.trt

trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed")


def test_plugin_creators_registered():
    path = native.find_trt_plugin()
    if path is None:
        pytest.skip("libfna_trt_plugin.so is not built (fna-deploy plugin build with TensorRT present)")
    ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)  # static registration runs on load
    registry = trt.get_plugin_registry()
    for name, fields in (("FnaLandmarks", {"num_landmarks", "num_prefix", "method", "massive_ratio", "artifact_ratio"}),
                         ("NystromAttention", {"scale", "pinv_iters"})):
        creator = registry.get_creator(name, "1", "fna")
        assert creator is not None, name
        got = {f.name for f in creator.field_names}
        assert fields <= got, (name, got)
