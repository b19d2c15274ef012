"""fna_deploy.triton.config: config.pbtxt parsed back with Triton's own protobuf; bad names and options."""

from __future__ import annotations

import pytest

pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="needs tritonclient (pip install 'fna-deploy[triton]')")

from fna_deploy import triton as tr  # noqa: E402
from fna_deploy.triton import RepositoryOptions, TensorSpec, write_repository  # noqa: E402
from .conftest import parsed, pb2, tiny_onnx  # noqa: E402


def test_protobuf_round_trip_and_rejections(tmp_path):
    inputs = [TensorSpec("images", "float16", [-1, 3, 32, 32])]
    outputs = [TensorSpec("output", "float16", [-1, 10])]
    config = tr.build_config(RepositoryOptions(name="m", backend="onnxruntime", max_batch_size=4), inputs, outputs)
    text = tr.render_config(config)
    assert tr.parse_config(text) == config
    assert "data_type: TYPE_FP16" in text
    with pytest.raises(ValueError, match="does not parse as a Triton ModelConfig"):
        tr.parse_config(text + "\nmax_batch: 3\n")  # not a ModelConfig field
    with pytest.raises(ValueError, match="does not parse"):
        tr.parse_config('name: "m" input { data_type: TYPE_NOT_A_TYPE }')
    cfg = pb2().ModelConfig()
    cfg.CopyFrom(config)
    cfg.max_batch_size = 0  # dynamic batching without batching
    with pytest.raises(ValueError, match="dynamic batching needs max_batch_size"):
        tr.check_config(cfg)
    cfg.CopyFrom(config)
    cfg.platform = ""
    with pytest.raises(ValueError, match="exactly one of platform and backend"):
        tr.check_config(cfg)
    cfg.CopyFrom(config)
    cfg.input[0].dims[0] = 0
    with pytest.raises(ValueError, match="dims must be positive or -1"):
        tr.check_config(cfg)
    with pytest.raises(ValueError, match="profile max batch 2"):
        tr.check_config(config, profile=(1, 1, 2))
    with pytest.raises(ValueError, match="do not match the model's"):
        tr.check_config(config, inputs=[TensorSpec("pixels", "float32", [-1, 3])])


@pytest.mark.parametrize("name", ["bad name", "", ".hidden", "a/b", "x" * 129, "-dash", "ü"])
def test_bad_names(tmp_path, name):
    with pytest.raises(ValueError, match="is not valid"):
        write_repository(tiny_onnx(tmp_path / "m.onnx"), tmp_path / "repo", RepositoryOptions(name=name, backend="python"))
    assert not (tmp_path / "repo").exists()


@pytest.mark.parametrize(
    "options, onnx_kwargs, message",
    [
        ({"version": 0}, {}, "version must be an int from 1 to 2^63-1"),
        ({"max_batch_size": 4}, {"batch": 1}, "static batch dimension"),
        ({"max_batch_size": 0}, {}, "max_batch_size 0 means no batching"),
        ({"max_batch_size": -1}, {}, "max_batch_size must be an int >= 0"),
        ({"max_batch_size": 4, "preferred_batch_sizes": [8]}, {}, "outside 1..max_batch_size (4)"),
        ({"dynamic_batching": True}, {"batch": 1}, "dynamic batching needs max_batch_size >= 1"),
        ({"dynamic_batching": False, "queue_delay_us": 5}, {}, "queue delay needs dynamic batching"),
        ({"instances": 0}, {}, "instances must be an int >= 1"),
        ({"plugin": "lib.so"}, {}, "takes no plugin"),
        ({}, {"metadata": {"fna_target": "trt"}}, "trt-target export"),
    ],
)
def test_bad_options(tmp_path, options, onnx_kwargs, message):
    with pytest.raises(ValueError) as info:
        write_repository(tiny_onnx(tmp_path / "m.onnx", **onnx_kwargs), tmp_path / "repo", RepositoryOptions(name="m", backend="python", **options))
    assert message in str(info.value)
    assert not (tmp_path / "repo" / "m").exists()


def test_static_batch_onnx_gets_max_batch_zero(tmp_path):
    cfg = parsed(write_repository(tiny_onnx(tmp_path / "m.onnx", batch=1), tmp_path / "repo", RepositoryOptions(name="m", backend="python")))
    assert cfg.max_batch_size == 0 and list(cfg.input[0].dims) == [1, 3, 8, 8] and not cfg.HasField("dynamic_batching")
