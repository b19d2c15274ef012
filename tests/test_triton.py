"""Triton model repositories (all three backends, parsed with Triton's own protobuf), the engine
sidecar, refusals, and a live server: export a tiny FNA ViT, serve it with the python backend,
infer with tritonclient and compare with PyTorch."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="needs tritonclient (pip install 'fna-deploy[triton]')")

from fna_deploy import triton as tr  # noqa: E402
from fna_deploy.triton import RepositoryOptions, TensorSpec, write_repository  # noqa: E402
from fna_deploy.trt import EngineSidecar  # noqa: E402  (the schema fna-deploy build writes)
from fna_deploy.trt import TensorSpec as TrtTensor  # noqa: E402


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
        tensorrt_version="10.13", gpu="NVIDIA H100", fp16=True, fp16_strategy="builder-flag",
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


# ---------------------------------------------------------------------------------- configs


def test_python_backend_repository(tmp_path):
    onnx_path = tiny_onnx(tmp_path / "m.onnx")
    report = write_repository(onnx_path, tmp_path / "repo", RepositoryOptions(name="vit", backend="python", preferred_batch_sizes=[2, 4], queue_delay_us=100))
    cfg = parsed(report)
    assert cfg.backend == "python" and not cfg.platform
    assert cfg.max_batch_size == tr.DEFAULT_MAX_BATCH
    assert [(t.name, list(t.dims), t.data_type) for t in cfg.input] == [("images", [3, 8, 8], pb2().TYPE_FP32)]
    assert [(t.name, list(t.dims)) for t in cfg.output] == [("output", [10])]
    assert cfg.instance_group[0].kind == pb2().ModelInstanceGroup.KIND_CPU and cfg.instance_group[0].count == 1
    assert list(cfg.dynamic_batching.preferred_batch_size) == [2, 4] and cfg.dynamic_batching.max_queue_delay_microseconds == 100
    assert list(cfg.version_policy.specific.versions) == [1]
    assert json.loads(cfg.parameters["fna_config"].string_value) == {"num_landmarks": 3}
    assert cfg.parameters["fna_target"].string_value == "portable"
    model_dir = tmp_path / "repo" / "vit"
    assert sorted(p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*") if p.is_file()) == ["1/model.onnx", "1/model.py", "config.pbtxt"]
    compile((model_dir / "1" / "model.py").read_text(), "model.py", "exec")
    assert (model_dir / "1" / "model.onnx").read_bytes() == onnx_path.read_bytes()
    assert "perf_analyzer -m vit" in report.perf_analyzer_command and "--concurrency-range" in report.perf_analyzer_command
    assert not [p for p in (tmp_path / "repo").iterdir() if p.name.startswith(".")]


def test_onnxruntime_backend_with_and_without_tensorrt_accelerator(tmp_path):
    onnx_path = tiny_onnx(tmp_path / "m.onnx")
    plain = write_repository(onnx_path, tmp_path / "repo", RepositoryOptions(name="plain", backend="onnxruntime", max_batch_size=4, instances=2))
    cfg = parsed(plain)
    assert cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == 4 and cfg.default_model_filename == "model.onnx"
    assert cfg.instance_group[0].kind == pb2().ModelInstanceGroup.KIND_GPU and cfg.instance_group[0].count == 2
    assert not cfg.optimization.execution_accelerators.gpu_execution_accelerator

    plugin = tmp_path / "libfna_plugins.so"
    plugin.write_bytes(b"\x7fELF plugin bytes")
    accel = write_repository(onnx_path, tmp_path / "repo", RepositoryOptions(name="trt_ep", backend="onnxruntime", plugin=str(plugin)))
    (acc,) = parsed(accel).optimization.execution_accelerators.gpu_execution_accelerator
    assert acc.name == "tensorrt" and acc.parameters["precision_mode"] == "FP16"
    copied = Path(acc.parameters["trt_extra_plugin_lib_paths"])
    assert copied.is_absolute() and copied == (tmp_path / "repo" / "trt_ep" / "plugins" / plugin.name).resolve()
    assert copied.read_bytes() == plugin.read_bytes()
    assert (tmp_path / "repo" / "plain").is_dir()  # the second model did not disturb the first


def test_tensorrt_backend_from_sidecar(tmp_path):
    plugin = tmp_path / "libfna_plugins.so"
    plugin.write_bytes(b"plugin")
    engine = fake_engine(tmp_path, plugin=plugin)
    report = write_repository(engine, tmp_path / "repo", RepositoryOptions(name="vit_trt", backend="tensorrt", preferred_batch_sizes=[4, 8]))
    cfg = parsed(report)
    assert cfg.platform == "tensorrt_plan" and cfg.default_model_filename == "model.plan"
    assert cfg.max_batch_size == 16  # the profile's max batch
    assert list(cfg.input[0].dims) == [3, 224, 224] and list(cfg.output[0].dims) == [1000]
    assert cfg.instance_group[0].kind == pb2().ModelInstanceGroup.KIND_GPU
    assert list(cfg.dynamic_batching.preferred_batch_size) == [4, 8]
    lib = tmp_path / "repo" / "vit_trt" / "plugins" / "libfna_plugins.so"
    assert lib.read_bytes() == b"plugin" and (tmp_path / "repo" / "vit_trt" / "1" / "model.plan").is_file()
    assert f"--backend-config=tensorrt,plugins={lib.resolve()}" in report.server_command
    assert "--http-address=127.0.0.1" in report.server_command
    assert any(n.startswith("alternative to --backend-config: LD_PRELOAD=") for n in report.notes)
    assert tr.repository_plugins(tmp_path / "repo") == [str(lib.resolve())]
    assert json.loads(cfg.parameters["fna_config"].string_value) == {"num_landmarks": 64}  # for infer --compare
    assert cfg.parameters["fna_fp16"].string_value == "true"


def test_tensorrt_engine_without_plugin(tmp_path):
    report = write_repository(fake_engine(tmp_path), tmp_path / "repo", RepositoryOptions(name="m", backend="tensorrt"))
    assert report.plugin is None and not (tmp_path / "repo" / "m" / "plugins").exists()
    assert "--backend-config=tensorrt" not in report.server_command
    assert any("names no plugin library" in n for n in report.notes)


def test_tensorrt_static_batch_engine(tmp_path):
    engine = fake_engine(tmp_path, batch=2, min_batch=2, opt_batch=2, max_batch=2)
    cfg = parsed(write_repository(engine, tmp_path / "repo", RepositoryOptions(name="static", backend="tensorrt")))
    assert cfg.max_batch_size == 0 and list(cfg.input[0].dims) == [2, 3, 224, 224]
    assert not cfg.HasField("dynamic_batching")


@pytest.mark.parametrize(
    "kwargs, engine_kwargs, message",
    [
        ({"max_batch_size": 32}, {}, "exceeds the engine's profile max batch 16"),
        ({"max_batch_size": 0}, {}, "needs a static-batch engine"),
        ({}, {"min_batch": 2}, "profile starts at batch 2"),
        ({"preferred_batch_sizes": [32]}, {}, "preferred batch size 32 is outside 1..max_batch_size (16)"),
        ({"gpu": False}, {}, "GPU only"),
    ],
)
def test_tensorrt_refusals(tmp_path, kwargs, engine_kwargs, message):
    engine = fake_engine(tmp_path, **engine_kwargs)
    with pytest.raises(ValueError, match=None) as info:
        write_repository(engine, tmp_path / "repo", RepositoryOptions(name="m", backend="tensorrt", **kwargs))
    assert message in str(info.value)
    assert not (tmp_path / "repo" / "m").exists()


def test_tensorrt_needs_its_sidecar_and_plugin(tmp_path):
    engine = tmp_path / "e.plan"
    engine.write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match="sidecar"):
        write_repository(engine, tmp_path / "repo", RepositoryOptions(name="m", backend="tensorrt"))
    engine = fake_engine(tmp_path, plugin=tmp_path / "gone.so", name="f.plan")
    with pytest.raises(FileNotFoundError, match="pass --plugin"):
        write_repository(engine, tmp_path / "repo", RepositoryOptions(name="m", backend="tensorrt"))
    with pytest.raises(ValueError, match="serves an engine"):
        write_repository(tiny_onnx(tmp_path / "m.onnx"), tmp_path / "repo", RepositoryOptions(name="m", backend="tensorrt"))
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").iterdir())


# ---------------------------------------------------------------------------------- sidecar


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


# ---------------------------------------------------------------------------------- protobuf


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


# ---------------------------------------------------------------------------------- refusals


def test_refuses_to_overwrite_without_force(tmp_path):
    onnx_path = tiny_onnx(tmp_path / "m.onnx")
    repo = tmp_path / "repo"
    write_repository(onnx_path, repo, RepositoryOptions(name="vit", backend="python", max_batch_size=4))
    config_path = repo / "vit" / "config.pbtxt"
    before = config_path.read_text()
    with pytest.raises(FileExistsError) as info:
        write_repository(onnx_path, repo, RepositoryOptions(name="vit", backend="python", max_batch_size=2))
    assert info.value.filename == str(repo / "vit") and "--force" in info.value.strerror
    assert config_path.read_text() == before
    (repo / "vit" / "stale.txt").write_text("from the old model")
    write_repository(onnx_path, repo, RepositoryOptions(name="vit", backend="python", max_batch_size=2), force=True)
    assert tr.parse_config(config_path.read_text()).max_batch_size == 2
    assert not (repo / "vit" / "stale.txt").exists()
    assert [p.name for p in repo.iterdir()] == ["vit"]  # no staging or old folders left


@pytest.mark.parametrize("name", ["bad name", "", ".hidden", "a/b", "x" * 129, "-dash", "ü"])
def test_bad_names(tmp_path, name):
    with pytest.raises(ValueError, match="is not valid"):
        write_repository(tiny_onnx(tmp_path / "m.onnx"), tmp_path / "repo", RepositoryOptions(name=name, backend="python"))
    assert not (tmp_path / "repo").exists()


@pytest.mark.parametrize(
    "options, onnx_kwargs, message",
    [
        ({"version": 0}, {}, "version must be an int >= 1"),
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


def test_external_weights_are_copied_and_a_failed_write_leaves_nothing(tmp_path):
    (tmp_path / "a").mkdir()
    onnx_path = tiny_onnx(tmp_path / "a" / "m.onnx", external=True)
    report = write_repository(onnx_path, tmp_path / "repo", RepositoryOptions(name="ext", backend="onnxruntime"))
    assert (Path(report.model_dir) / "1" / "m.onnx.data").read_bytes() == (tmp_path / "a" / "m.onnx.data").read_bytes()
    (tmp_path / "a" / "m.onnx.data").unlink()
    with pytest.raises(FileNotFoundError, match="external weights"):
        write_repository(onnx_path, tmp_path / "repo", RepositoryOptions(name="ext2", backend="onnxruntime"))
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["ext"]
    with pytest.raises(FileNotFoundError, match="external weights"):
        write_repository(onnx_path, tmp_path / "new_repo", RepositoryOptions(name="ext2", backend="onnxruntime"))
    assert not (tmp_path / "new_repo").exists()  # a repository the failed call created is removed again


def test_check_repository(tmp_path):
    repo = tmp_path / "repo"
    write_repository(tiny_onnx(tmp_path / "m.onnx"), repo, RepositoryOptions(name="one", backend="python"))
    assert tr.check_repository(repo) == ["one"]
    (repo / "two").mkdir()
    with pytest.raises(ValueError, match="has no config.pbtxt"):
        tr.check_repository(repo)
    (repo / "two" / "config.pbtxt").write_text('name: "other" backend: "python"')
    with pytest.raises(ValueError, match="Triton needs them equal"):
        tr.check_repository(repo)
    with pytest.raises(FileNotFoundError):
        tr.check_repository(tmp_path / "missing")


def test_probe_reports_a_binary_that_cannot_run(tmp_path):
    broken = tmp_path / "tritonserver"
    broken.write_text("#!/bin/sh\necho 'error while loading shared libraries: libtritonserver.so' >&2\nexit 127\n")
    broken.chmod(0o755)
    reason = tr.probe_tritonserver(tr.ServerBinary(broken, False, {}))
    assert reason == f"{broken} cannot run: error while loading shared libraries: libtritonserver.so"


def test_perf_analyzer_and_url_helpers():
    cmd = tr.perf_analyzer_command("vit", url="127.0.0.1:8000", max_concurrency=8, input_shape=[3, 64, 64])
    assert cmd.startswith("perf_analyzer -m vit -u 127.0.0.1:8000 -i http")
    assert "--concurrency-range 1:8:2" in cmd and "--shape images:3,64,64" in cmd
    assert tr.normalise_url("http://127.0.0.1:8000/") == "127.0.0.1:8000"
    for bad in ("127.0.0.1", "https://h:1", "h:port"):
        with pytest.raises(ValueError):
            tr.normalise_url(bad)


def test_locate_tritonserver(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH: the nvidia-pytriton binary, if installed
    try:
        binary = tr.locate_tritonserver()
    except FileNotFoundError as exc:
        assert "nvidia-pytriton" in str(exc)
        return
    assert binary.bundled and binary.path.is_file() and os.access(binary.path, os.X_OK)
    assert binary.stub is not None and binary.stub.is_file()
    import sysconfig

    assert binary.env["LD_LIBRARY_PATH"].split(":")[0] == sysconfig.get_config_var("LIBDIR")
    assert "nvidia_pytriton.libs" in binary.env["LD_LIBRARY_PATH"] or "external_libs" in binary.env["LD_LIBRARY_PATH"]
    fake = tmp_path / "tritonserver"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert tr.locate_tritonserver().path == fake and not tr.locate_tritonserver().bundled


# ---------------------------------------------------------------------------------- live server


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


@pytest.fixture(scope="module")
def tiny_fna(tmp_path_factory):
    """A depth-2 ViT-Tiny at 32 px (5 tokens) exported with FNA (m=3) in its last block."""
    import torch

    from fna_deploy.config import FNAConfig
    from fna_deploy.export import export_onnx

    from .conftest import tiny_timm

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


@pytest.mark.slow
def test_live_python_backend_matches_pytorch(tiny_fna, live_server):
    import torch

    import tritonclient.http as httpclient

    from fna_deploy.patching import patch, unpatch

    model, config, _ = tiny_fna
    server = live_server
    assert server.is_ready() and server.binary.path.name == "tritonserver"
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        assert client.is_model_ready("tiny")
        served = client.get_model_config("tiny")
        assert served["backend"] == "python" and served["max_batch_size"] == 4
        rng = np.random.default_rng(0)
        for batch in (1, 3):
            x = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
            request = httpclient.InferInput("images", list(x.shape), "FP32")
            request.set_data_from_numpy(x)
            answer = client.infer("tiny", [request]).as_numpy("output")
            with torch.inference_mode():
                patch(model, config)
                try:
                    fna = model(torch.from_numpy(x)).numpy()
                finally:
                    unpatch(model)
                dense = model(torch.from_numpy(x)).numpy()
            assert answer.shape == (batch, 10) and answer.dtype == np.float32
            assert np.abs(answer - fna).max() <= 1e-4, np.abs(answer - fna).max()
            # the server runs FNA, not dense attention: m=3 of 5 tokens changes the answer measurably
            assert np.abs(answer - dense).max() > 1e-3
        # a batch above max_batch_size is refused by Triton, not silently split
        x = np.zeros((5, 3, 32, 32), np.float32)
        request = httpclient.InferInput("images", list(x.shape), "FP32")
        request.set_data_from_numpy(x)
        from tritonclient.utils import InferenceServerException

        with pytest.raises(InferenceServerException, match="batch"):
            client.infer("tiny", [request])
    finally:
        client.close()

    # through the library's own client too
    with tr.TritonHttpClient(f"http://{server.http_url}/") as ours:
        result = ours.infer("tiny", {"images": np.ones((2, 3, 32, 32), np.float64)})  # cast to the served FP32
        assert result.outputs["output"].shape == (2, 10) and result.model_config["name"] == "tiny"
        with pytest.raises(ValueError, match="not ready"):
            ours.model_config("missing")

    ports = (server.http_port, server.grpc_port, server.metrics_port)
    pid = server.process.pid
    assert server.stop() == 0
    assert not server.running
    assert not any(tr.port_in_use(p) for p in ports), "ports still bound after stop"
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # no python backend stub outlived the server


def test_server_refuses_busy_port_and_reports_a_failed_start(tmp_path, tiny_fna):
    import socket

    binary = _server_binary_or_skip()
    repo = tmp_path / "repo"
    write_repository(tiny_fna[2], repo, RepositoryOptions(name="tiny", backend="python"))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(ValueError, match="already in use"):
            tr.TritonServer(repo, http_port=busy.getsockname()[1], binary=binary).start()
    # a model whose ONNX file is gone: model.py's initialize fails, Triton cannot load it and exits
    (repo / "tiny" / "1" / "model.onnx").unlink()
    server = tr.TritonServer(repo, binary=binary, log_path=tmp_path / "server.log")
    try:
        with pytest.raises(tr.ServerError, match="exited with code") as info:
            server.start(timeout=120)
    finally:
        server.stop()
    assert not server.running
    assert "failed to load" in str(info.value)  # the message carries the log's tail
    assert "failed to load" in (tmp_path / "server.log").read_text()
