"""Triton test helpers: a tiny ONNX classifier, a fake engine with its sidecar, a tiny FNA export and
a live server fixture (python backend, skipped where no tritonserver can start)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from fna_deploy import triton as tr
from fna_deploy.triton import RepositoryOptions, write_repository
from fna_deploy.trt import EngineSidecar
from fna_deploy.trt import TensorSpec as TrtTensor


def fake_plugin(path: Path) -> Path:
    """A real ELF shared library (one of Python's own extension modules) under an fna plugin's name:
    the repository writer checks and copies plugin files, it never loads them."""
    import shutil

    import _ctypes

    shutil.copyfile(_ctypes.__file__, path)
    return path


def tiny_onnx(path: Path, *, batch="N", metadata=None, external: bool = False) -> Path:
    """A real (small) image classifier graph: images [B,3,8,8] -> output [B,10]."""
    weight = np.random.default_rng(0).standard_normal((192, 10)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["images"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["output"])],
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, 10])],
        [onnx.numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    for key, value in (metadata or {"fna_target": "portable", "fna_config": '{"num_landmarks": 3}'}).items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    if external:
        onnx.save_model(model, path, save_as_external_data=True, location=path.name + ".data", size_threshold=0)
    else:
        onnx.save_model(model, path)
    return path


def fake_engine(tmp_path: Path, *, min_batch=1, opt_batch=4, max_batch=16, batch=-1, plugin=None, name="vit.plan") -> Path:
    """An engine file and its sidecar written as fna-deploy build writes it (the bytes are never run here).

    plugin=None writes "None", as build does for an engine built without a plugin library."""
    engine = tmp_path / name
    engine.write_bytes(b"not a real engine: the repository writer only copies it")
    sidecar = EngineSidecar(
        runtime_version="10.13", gpu="NVIDIA H100", fp16=True, fp16_strategy="builder-flag",
        inputs=[TrtTensor("images", "float32", [batch, 3, 224, 224])],
        outputs=[TrtTensor("output", "float32", [batch, 1000])],
        profile={"images": {"min": [min_batch, 3, 224, 224], "opt": [opt_batch, 3, 224, 224], "max": [max_batch, 3, 224, 224]}},
        onnx="vit_fna_trt.onnx", plugin=str(plugin) if plugin else "None", fna_config={"num_landmarks": 64},
    )
    EngineSidecar.path_for(engine).write_text(sidecar.to_json())
    return engine


def parsed(report) -> object:
    return tr.parse_config(Path(report.config_path).read_text())


def pb2():
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2


def _server_binary_or_skip():
    pytest.importorskip("tritonclient.http", reason="needs tritonclient[http]")
    try:
        binary = tr.locate_tritonserver()
    except FileNotFoundError as exc:
        pytest.skip(f"no tritonserver can start here: {exc}")
    reason = tr.probe_tritonserver(binary)
    if reason is not None:
        pytest.skip(f"no tritonserver can start here: {reason}")
    return binary


@pytest.fixture(scope="session")  # one export for every live-server test
def tiny_fna(tmp_path_factory):
    """A depth-2 ViT-Tiny at 32 px (5 tokens) exported with FNA (m=3) in its last block."""
    import torch

    from fna_deploy.config import FNAConfig
    from fna_deploy.export import export_onnx

    from ..conftest import tiny_timm

    torch.manual_seed(0)
    model = tiny_timm(img_size=32, depth=2, num_classes=10)
    config = FNAConfig(num_landmarks=3, layers="1")
    out = tmp_path_factory.mktemp("tiny") / "tiny_fna.onnx"
    report = export_onnx(model, config, out, input_shape=(1, 3, 32, 32), model_spec="timm:vit_tiny_patch16_224", check=False)
    assert report.fna_nodes == {"FnaLandmarks": 1, "NystromAttention": 1}
    return model, config, out


@pytest.fixture
def live_server(tiny_fna, tmp_path):
    binary = _server_binary_or_skip()
    _, _, onnx_path = tiny_fna
    repo = tmp_path / "repo"
    write_repository(onnx_path, repo, RepositoryOptions(name="tiny", backend="python", max_batch_size=4))
    server = tr.TritonServer(repo, binary=binary, log_path=tmp_path / "server.log")
    server.start(timeout=180)
    yield server
    server.stop()  # a finaliser: runs even when the test fails
