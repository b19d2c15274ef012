"""fna_deploy.triton.server: locating and probing tritonserver; a busy port and a failed start."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="needs tritonclient (pip install 'fna-deploy[triton]')")

from fna_deploy import triton as tr  # noqa: E402
from fna_deploy.triton import RepositoryOptions, write_repository  # noqa: E402
from .conftest import _server_binary_or_skip  # noqa: E402


def test_probe_reports_a_binary_that_cannot_run(tmp_path):
    broken = tmp_path / "tritonserver"
    broken.write_text("#!/bin/sh\necho 'error while loading shared libraries: libtritonserver.so' >&2\nexit 127\n")
    broken.chmod(0o755)
    reason = tr.probe_tritonserver(tr.ServerBinary(broken, False, {}))
    assert reason == f"{broken} cannot run: error while loading shared libraries: libtritonserver.so"


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
