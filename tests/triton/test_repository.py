"""fna_deploy.triton.repository: repositories for all three backends, refusals, atomic writes, checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="needs tritonclient (pip install 'fna-deploy[triton]')")

from fna_deploy import triton as tr  # noqa: E402
from fna_deploy.triton import RepositoryOptions, write_repository  # noqa: E402
from .conftest import fake_engine, fake_plugin, parsed, pb2, tiny_onnx  # noqa: E402


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
    assert sorted(p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*") if p.is_file()) == [".fna-deploy-model", "1/model.onnx", "1/model.py", "config.pbtxt"]
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

    plugin = fake_plugin(tmp_path / "libfna_plugins.so")
    accel = write_repository(onnx_path, tmp_path / "repo", RepositoryOptions(name="trt_ep", backend="onnxruntime", plugin=str(plugin)))
    (acc,) = parsed(accel).optimization.execution_accelerators.gpu_execution_accelerator
    assert acc.name == "tensorrt" and acc.parameters["precision_mode"] == "FP16"
    copied = Path(acc.parameters["trt_extra_plugin_lib_paths"])
    assert copied.is_absolute() and copied == (tmp_path / "repo" / "trt_ep" / "plugins" / plugin.name).resolve()
    assert copied.read_bytes() == plugin.read_bytes()
    assert (tmp_path / "repo" / "plain").is_dir()  # the second model did not disturb the first


def test_tensorrt_backend_from_sidecar(tmp_path):
    plugin = fake_plugin(tmp_path / "libfna_plugins.so")
    engine = fake_engine(tmp_path, plugin=plugin)
    report = write_repository(engine, tmp_path / "repo", RepositoryOptions(name="vit_trt", backend="tensorrt", preferred_batch_sizes=[4, 8]))
    cfg = parsed(report)
    assert cfg.platform == "tensorrt_plan" and cfg.default_model_filename == "model.plan"
    assert cfg.max_batch_size == 16  # the profile's max batch
    assert list(cfg.input[0].dims) == [3, 224, 224] and list(cfg.output[0].dims) == [1000]
    assert cfg.instance_group[0].kind == pb2().ModelInstanceGroup.KIND_GPU
    assert list(cfg.dynamic_batching.preferred_batch_size) == [4, 8]
    lib = tmp_path / "repo" / "vit_trt" / "plugins" / "libfna_plugins.so"
    assert lib.read_bytes() == plugin.read_bytes() and (tmp_path / "repo" / "vit_trt" / "1" / "model.plan").is_file()
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


def test_perf_analyzer_and_url_helpers():
    cmd = tr.perf_analyzer_command("vit", url="127.0.0.1:8000", max_concurrency=8, input_shape=[3, 64, 64])
    assert cmd.startswith("perf_analyzer -m vit -u 127.0.0.1:8000 -i http")
    assert "--concurrency-range 1:8:2" in cmd and "--shape images:3,64,64" in cmd
    assert tr.normalise_url("http://127.0.0.1:8000/") == "127.0.0.1:8000"
    for bad in ("127.0.0.1", "https://h:1", "h:port"):
        with pytest.raises(ValueError):
            tr.normalise_url(bad)


def test_force_replaces_only_folders_fna_deploy_wrote(tmp_path):
    onnx_path = tiny_onnx(tmp_path / "m.onnx")
    options = RepositoryOptions(name="data", backend="python")
    user = tmp_path / "repo" / "data"
    user.mkdir(parents=True)
    (user / "notes.txt").write_text("the user's own files")
    with pytest.raises(FileExistsError):
        write_repository(onnx_path, tmp_path / "repo", options)
    with pytest.raises(ValueError, match="was not written by fna-deploy .*so --force does not replace it"):
        write_repository(onnx_path, tmp_path / "repo", options, force=True)
    assert (user / "notes.txt").read_text() == "the user's own files"
    report = write_repository(onnx_path, tmp_path / "repo", RepositoryOptions(name="vit", backend="python"))
    assert tr.is_fna_model_folder(report.model_dir) and (Path(report.model_dir) / tr.MARKER).is_file()
    write_repository(onnx_path, tmp_path / "repo", RepositoryOptions(name="vit", backend="python", max_batch_size=2), force=True)
    assert parsed(report).max_batch_size == 2  # its own folder: replaced
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["data", "vit"]  # nothing staged is left


def test_a_failed_write_removes_only_what_it_created(tmp_path, monkeypatch):
    import shutil

    onnx_path = tiny_onnx(tmp_path / "m.onnx")
    repo = tmp_path / "repo"
    real_copy = shutil.copy2

    def copy_then_fail(src, dst, *args, **kwargs):
        (repo / "other").mkdir()  # another process writes its model into the new repository meanwhile
        real_copy(src, dst, *args, **kwargs)
        raise OSError(28, "No space left on device", str(dst))

    monkeypatch.setattr(shutil, "copy2", copy_then_fail)
    with pytest.raises(OSError, match="No space left"):
        write_repository(onnx_path, repo, RepositoryOptions(name="vit", backend="python"))
    assert sorted(p.name for p in repo.iterdir()) == ["other"]  # kept: not ours; our staging folder: gone
    (repo / "other").rmdir()
    with pytest.raises(OSError):
        write_repository(onnx_path, tmp_path / "fresh", RepositoryOptions(name="vit", backend="python"))
    assert not (tmp_path / "fresh").exists()  # created by the failed call and empty: removed


@pytest.mark.parametrize("name", ["abc\n", "a/b", "..", "a b", "", "x" * 129])
def test_names_must_match_in_full(tmp_path, name):
    with pytest.raises(ValueError, match="is not valid"):
        write_repository(tiny_onnx(tmp_path / "m.onnx"), tmp_path / "repo", RepositoryOptions(name=name, backend="python"))
    assert not (tmp_path / "repo").exists()


def test_plugins_must_be_fna_shared_libraries(tmp_path):
    onnx_path = tiny_onnx(tmp_path / "m.onnx")
    text = tmp_path / "libfna_plugins.so"
    text.write_text("#!/bin/sh\nnot a library\n")
    wrong_name = fake_plugin(tmp_path / "libother.so")
    for plugin, message in ((text, "is not a shared library"), (wrong_name, "is not named like an fna plugin library"),
                            (tmp_path, "is not a file"), (tmp_path / "missing.so", "does not exist")):
        with pytest.raises(ValueError, match=message):
            write_repository(onnx_path, tmp_path / "repo", RepositoryOptions(name="m", backend="onnxruntime", plugin=str(plugin)))
    engine = fake_engine(tmp_path, plugin=text, name="s.plan")  # a sidecar naming any file: refused the same way
    with pytest.raises(ValueError, match="the plugin named in s.plan.json, .* is not a shared library"):
        write_repository(engine, tmp_path / "repo", RepositoryOptions(name="s", backend="tensorrt"))
    assert not (tmp_path / "repo").exists()
