"""fna_deploy.triton.tensors: the engine sidecar as fna-deploy build writes it, and its refusals."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="needs tritonclient (pip install 'fna-deploy[triton]')")

from fna_deploy import triton as tr  # noqa: E402
from fna_deploy.triton import TensorSpec  # noqa: E402
from fna_deploy.trt import EngineSidecar  # noqa: E402
from .conftest import fake_engine  # noqa: E402


def test_sidecar_from_build_and_refusals(tmp_path):
    engine = fake_engine(tmp_path, plugin=tmp_path / "lib.so")
    path = tr.sidecar_path(engine)
    assert path.name == "vit.plan.json" and path == EngineSidecar.path_for(engine)
    io = tr.load_sidecar(engine)
    assert (io.min_batch, io.opt_batch, io.max_batch) == (1, 4, 16) and io.dynamic_batch and io.fp16
    assert io.inputs == [TensorSpec("images", "float32", [-1, 3, 224, 224])] and io.plugin == str(tmp_path / "lib.so")
    assert io.fna_config == {"num_landmarks": 64}
    assert tr.engine_io(EngineSidecar.from_json(path.read_text())) == io
    assert tr.load_sidecar(fake_engine(tmp_path, name="noplugin.plan")).plugin is None  # build's "None"
    data = json.loads(path.read_text())
    images = data["profile"]["images"]
    bad = [
        ({**data, "profile": {"images": {**images, "min": [8, 3, 224, 224]}}}, "min <= opt <= max"),
        ({**data, "profile": {"images": {"min": [1, 3, 112, 224], "opt": [4, 3, 112, 224], "max": [8, 3, 112, 224]}}}, "disagrees with its static dims"),
        ({**data, "profile": {"images": {"min": [1, 3, 224, 224]}}}, "needs min, opt and max shapes"),
        ({**data, "profile": {}}, "has dynamic dims but no profile"),
        ({k: v for k, v in data.items() if k != "profile"}, "missing field(s) profile"),
        ({**data, "inputs": [{"name": "images", "dtype": "complex64", "shape": [-1]}]}, "unsupported dtype"),
        ({**data, "inputs": [{"name": "images", "dtype": "float32", "shape": [0, 3]}]}, "positive ints or -1"),
        ({**data, "inputs": [{"name": "images", "dtype": "float32"}]}, "needs exactly name, dtype and shape"),
        ({**data, "outputs": []}, "'outputs' must be a non-empty list"),
        ({**data, "plugin": 3}, "'plugin' must be a path or null"),
        ([1, 2], "expected a JSON object"),
    ]
    for payload, message in bad:
        with pytest.raises(ValueError) as info:
            tr.engine_io(payload)
        assert message in str(info.value)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        tr.load_sidecar(engine)
