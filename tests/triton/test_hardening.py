"""serve and infer against the bundled tritonserver (CPU, 127.0.0.1): a missing backend is refused
before start, a model that does not load gives the server's own cause line fast, a repository
path with a space serves, nothing is left in the temporary folder, and a bounded load run gets
every answer right with 0 errors."""

from __future__ import annotations

import glob
import json
import os
import tempfile

import pytest
from click.testing import CliRunner

pytest.importorskip("tritonclient.http", reason="needs tritonclient[http]")

from fna_deploy import triton as tr  # noqa: E402
from fna_deploy.cli import cli  # noqa: E402
from fna_deploy.triton import RepositoryOptions, write_repository  # noqa: E402
from fna_deploy.triton.load import run_load  # noqa: E402

from .conftest import _server_binary_or_skip, tiny_onnx  # noqa: E402


@pytest.fixture
def own_tmp(tmp_path, monkeypatch):
    """A temporary folder for this test alone, to see what the server leaves behind."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def test_cause_line_picks_the_models_load_error():
    log = "\n".join([
        "I1127 08:00:00.000000 1 server.cc:1] starting",
        "E1127 08:00:01.000000 1 model_lifecycle.cc:654] failed to load 'vit' version 1: Invalid argument: unable to find "
        "backend library for backend 'onnxruntime'",
        "E1127 08:00:01.100000 1 server.cc:2] Failed to load all models",
    ])
    assert tr.cause_line(log).startswith("failed to load 'vit' version 1: Invalid argument: unable to find backend")
    assert tr.cause_line("I1127 08:00:00.000000 1 x.cc:1] fine") is None
    assert tr.cause_line("E1127 08:00:00.000000 1 x.cc:1] CudaDriverHelper has not been initialized.") is None  # CPU noise


def test_serve_refuses_a_backend_the_server_lacks(tmp_path, own_tmp):
    binary = _server_binary_or_skip()
    if "onnxruntime" in tr.server_backends(binary):
        pytest.skip("this tritonserver has the onnxruntime backend")
    write_repository(tiny_onnx(tmp_path / "m.onnx"), tmp_path / "repo", RepositoryOptions(name="vit", backend="onnxruntime"))
    result = CliRunner().invoke(cli, ["serve", str(tmp_path / "repo"), "--http-port", "1"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: model 'vit' needs the onnxruntime backend, but ")
    assert "--backend python" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert list(own_tmp.iterdir()) == []


def test_a_model_that_does_not_load_fails_fast_with_the_servers_cause(tmp_path, own_tmp):
    binary = _server_binary_or_skip()
    repo = tmp_path / "my repo"  # a space in the path, too
    report = write_repository(tiny_onnx(tmp_path / "m.onnx"), repo, RepositoryOptions(name="broken", backend="python"))
    (tmp_path / "my repo" / "broken" / "1" / "model.onnx").write_bytes(b"not an onnx model")
    server = tr.TritonServer(repo, binary=binary)
    with pytest.raises(tr.ServerError) as info:
        server.start(timeout=120)
    assert info.value.cause and "broken" in info.value.cause, str(info.value)
    assert [p.name for p in own_tmp.iterdir()] == [server.log_path.name]  # only the failed server's log, kept on purpose
    assert report.name == "broken"


def test_a_repository_path_with_a_space_serves_and_load_mode_checks_every_answer(tiny_fna, tmp_path, own_tmp):
    import numpy as np
    import torch

    binary = _server_binary_or_skip()
    model, config, onnx_path = tiny_fna
    repo = tmp_path / "my repo"
    write_repository(onnx_path, repo, RepositoryOptions(name="tiny", backend="python", max_batch_size=4))
    torch.save(model, tmp_path / "tiny.pt")
    with tr.TritonServer(repo, binary=binary) as server:
        # the library: a bounded run against an independent reference (PyTorch with the served config)
        import fna_deploy as fd

        pixels = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
        import copy

        reference = fd.patch(copy.deepcopy(model), config)(torch.from_numpy(pixels)).detach().numpy()  # the fixture is shared

        def check(answer):
            return None if np.abs(answer - reference).max() <= 1e-4 * max(1.0, np.abs(reference).max()) else "differs"

        report = run_load(server.http_url, "tiny", {"images": pixels}, check, concurrency=3, duration=2.0, max_requests=60)
        assert report.errors == 0 and report.mismatches == 0 and report.passed, report
        assert 0 < report.requests <= 60 and report.p50_ms <= report.p90_ms <= report.p99_ms
        wrong = run_load(server.http_url, "tiny", {"images": pixels}, lambda a: "always wrong", concurrency=2, duration=1.0, max_requests=4)
        assert wrong.mismatches == wrong.requests == 4 and not wrong.passed  # the check is really applied

        # the CLI: infer's load mode against --compare, JSON with --report
        out = tmp_path / "load.json"
        result = CliRunner().invoke(cli, ["infer", server.http_url, "tiny", "--random", "2", "--compare", str(tmp_path / "tiny.pt"),
                                          "--allow-pickle", "--concurrency", "2", "--duration", "2", "--requests", "40",
                                          "--report", str(out)])
        assert result.exit_code == 0, result.output
        load = json.loads(out.read_text())["load"]
        assert load["errors"] == 0 and load["mismatches"] == 0 and 0 < load["requests"] <= 40 and load["passed"]
        assert load["reference"].startswith("PyTorch") and load["p99_ms"] >= load["p50_ms"] > 0
        assert load["distinct_inputs"] == 8 and "of each of 8 distinct inputs" in load["reference"]
        alone = CliRunner().invoke(cli, ["infer", server.http_url, "tiny", "--random", "1", "--concurrency", "3", "--requests", "24",
                                         "--report", str(out)])
        assert alone.exit_code == 0, alone.output  # no --compare: each input's answer asked alone first, then under load
        load = json.loads(out.read_text())["load"]
        assert load["mismatches"] == 0 and load["requests"] == 24 and load["reference"].startswith("the server's lone answer")
        bad = CliRunner().invoke(cli, ["infer", server.http_url, "nope", "--concurrency", "2", "--duration", "1"])
        assert bad.exit_code == 2 and bad.stderr.startswith("error: model 'nope' is not ready")
    assert list(own_tmp.iterdir()) == []  # stopped: the server's work folder is gone
    assert not glob.glob(os.path.join(str(own_tmp), "fna-triton-*"))


def test_interrupted_or_failed_starts_leave_no_work_folder(tmp_path, own_tmp, monkeypatch):
    binary = _server_binary_or_skip()
    repo = tmp_path / "repo"
    write_repository(tiny_onnx(tmp_path / "m.onnx"), repo, RepositoryOptions(name="vit", backend="python"))
    server = tr.TritonServer(repo, binary=binary, log_path=tmp_path / "no_such_dir" / "server.log")
    with pytest.raises(OSError):
        server.start(timeout=30)  # the log cannot be opened
    assert list(own_tmp.iterdir()) == []

    def interrupted(self, timeout):
        raise KeyboardInterrupt  # Ctrl-C (or SIGTERM through the CLI) while the server starts

    monkeypatch.setattr(tr.TritonServer, "wait_ready", interrupted)
    server = tr.TritonServer(repo, binary=binary)
    with pytest.raises(KeyboardInterrupt):
        server.start(timeout=30)
    assert server.process is not None and server.process.poll() is not None  # stopped
    assert list(own_tmp.iterdir()) == []
