"""fna-deploy info: every runtime the tool can use, with real versions, as a table and as JSON."""

from __future__ import annotations

import json
import shutil
from importlib import metadata

import pytest
from click.testing import CliRunner

from fna_deploy.cli import cli


def _dist(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@pytest.fixture(scope="module")
def info():
    result = CliRunner().invoke(cli, ["info", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_runtimes_and_their_versions(info):
    rt = info["runtimes"]
    assert set(rt) >= {"tensorrt", "tensorrt_rtx", "onnxruntime", "onnxruntime_providers", "tritonclient", "nvidia_pytriton",
                       "tritonserver", "cmake", "nvcc", "plugin_library"}
    # the distribution's version, not "unknown" (tritonclient has no __version__)
    assert rt["tritonclient"] == _dist("tritonclient") and info["packages"]["tritonclient"] == _dist("tritonclient")
    assert rt["nvidia_pytriton"] == _dist("nvidia-pytriton")
    import onnxruntime

    assert rt["onnxruntime"] == onnxruntime.__version__ and rt["onnxruntime_providers"] == onnxruntime.get_available_providers()
    for tool in ("cmake", "nvcc"):
        assert rt[tool]["path"] == shutil.which(tool)
        if rt[tool]["path"]:
            assert rt[tool]["version"] and rt[tool]["version"][0].isdigit()
    assert rt["plugin_library"] == info["plugin_library"]


def test_tritonserver_and_its_backends(info):
    server = info["runtimes"]["tritonserver"]
    from fna_deploy.triton import locate_tritonserver, server_backends

    try:
        binary = locate_tritonserver()
    except FileNotFoundError:
        assert server["path"] is None and server["backends"] == [] and server["reason"]
        return
    assert server["path"] == str(binary.path) and server["backends"] == server_backends(binary)
    if binary.bundled:  # nvidia-pytriton ships the python backend only
        assert server["backends"] == ["python"] and server["source"] == f"nvidia-pytriton {_dist('nvidia-pytriton')}"


def test_table_names_every_runtime():
    result = CliRunner().invoke(cli, ["info"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for label in ("tensorrt", "tensorrt_rtx", "onnxruntime providers", "tritonclient", "nvidia-pytriton", "tritonserver",
                  "cmake", "nvcc", "plugin library"):
        assert label in result.output, label
    assert "unknown" not in next(line for line in result.output.splitlines() if "tritonclient" in line)
