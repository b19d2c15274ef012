"""fna-deploy triton / serve / infer: through click's CliRunner and real subprocesses.

The live part runs the chain a user runs: ``export`` a pickled tiny ViT, ``triton --backend
python``, ``serve`` (a subprocess, stopped with SIGTERM), ``infer --compare`` against PyTorch.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="needs tritonclient (pip install 'fna-deploy[triton]')")

from fna_deploy import triton as tr  # noqa: E402
from fna_deploy.cli import cli  # noqa: E402

from ..triton.conftest import fake_engine, fake_plugin, tiny_onnx  # noqa: E402
from . import stop_server  # noqa: E402


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_triton_writes_repository_and_prints_commands(tmp_path):
    onnx_path = tiny_onnx(tmp_path / "vit_fna.onnx")
    result = invoke("triton", onnx_path, "-o", tmp_path / "repo", "--backend", "python", "--preferred-batch", "2,4")
    assert result.exit_code == 0, result.output
    cfg = tr.parse_config((tmp_path / "repo" / "vit_fna" / "config.pbtxt").read_text())  # name from the file
    assert cfg.backend == "python" and list(cfg.dynamic_batching.preferred_batch_size) == [2, 4]
    assert f"fna-deploy serve {tmp_path / 'repo'}" in result.output
    assert "perf_analyzer -m vit_fna -u 127.0.0.1:8000" in result.output

    # default backend from the suffix and --device: .onnx -> onnxruntime on cuda (KIND_GPU), python on cpu; .plan -> tensorrt
    result = invoke("triton", onnx_path, "-o", tmp_path / "repo", "--name", "ort", "--max-batch-size", "2", "--device", "cuda")
    assert result.exit_code == 0, result.output
    cfg = tr.parse_config((tmp_path / "repo" / "ort" / "config.pbtxt").read_text())
    assert cfg.platform == "onnxruntime_onnx" and cfg.instance_group[0].kind == cfg.instance_group[0].KIND_GPU
    result = invoke("triton", onnx_path, "-o", tmp_path / "repo", "--name", "ortcpu", "--backend", "onnxruntime", "--device", "cpu")
    assert result.exit_code == 0, result.output
    cfg = tr.parse_config((tmp_path / "repo" / "ortcpu" / "config.pbtxt").read_text())
    assert cfg.instance_group[0].kind == cfg.instance_group[0].KIND_CPU
    result = invoke("triton", onnx_path, "-o", tmp_path / "repo", "--name", "cpu", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert tr.parse_config((tmp_path / "repo" / "cpu" / "config.pbtxt").read_text()).backend == "python"
    plugin = fake_plugin(tmp_path / "libfna.so")
    result = invoke("triton", fake_engine(tmp_path), "-o", tmp_path / "repo", "--name", "trt", "--plugin", plugin)
    assert result.exit_code == 0, result.output
    lib = (tmp_path / "repo" / "trt" / "plugins" / "libfna.so").resolve()
    assert "--backend-config=tensorrt,plugins=" in result.output and "LD_PRELOAD=" in result.output
    assert "plugins=" + str(lib) in result.output.replace("\n", "")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--name", "bad name"], "model name 'bad name' is not valid"),
        (["--max-batch-size", "0"], "max_batch_size 0 means no batching"),
        (["--max-batch-size", "4", "--preferred-batch", "8"], "outside 1..max_batch_size (4)"),
        (["--preferred-batch", "four"], "expected comma-separated batch sizes"),
        (["--version", "0"], "0 is not in the range 1<=x<="),
        (["--backend", "tensorrt"], "serves an engine"),
        (["--backend", "python", "--plugin", "lib.so"], "takes no plugin"),
    ],
)
def test_triton_bad_input(tmp_path, args, message):
    result = invoke("triton", tiny_onnx(tmp_path / "m.onnx"), "-o", tmp_path / "repo", *args)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").iterdir())


def test_triton_refuses_overwrite_and_other_errors(tmp_path):
    onnx_path = tiny_onnx(tmp_path / "m.onnx")
    assert invoke("triton", onnx_path, "-o", tmp_path / "repo", "--backend", "python").exit_code == 0
    before = (tmp_path / "repo" / "m" / "config.pbtxt").read_text()
    result = invoke("triton", onnx_path, "-o", tmp_path / "repo", "--backend", "python", "--max-batch-size", "2")
    assert result.exit_code == 2 and "already exists; pass --force to replace it" in result.output
    assert (tmp_path / "repo" / "m" / "config.pbtxt").read_text() == before
    result = invoke("triton", onnx_path, "-o", tmp_path / "repo", "--backend", "python", "--max-batch-size", "2", "--force")
    assert result.exit_code == 0
    assert tr.parse_config((tmp_path / "repo" / "m" / "config.pbtxt").read_text()).max_batch_size == 2

    result = invoke("triton", tmp_path / "missing.onnx", "-o", tmp_path / "repo")
    assert result.exit_code == 2 and "artifact not found" in result.output
    (tmp_path / "weights.bin").write_bytes(b"x")
    result = invoke("triton", tmp_path / "weights.bin", "-o", tmp_path / "repo")
    assert result.exit_code == 2 and "give --backend" in result.output
    (tmp_path / "file").write_text("x")
    result = invoke("triton", onnx_path, "-o", tmp_path / "file")
    assert result.exit_code != 0
    result = invoke("triton", onnx_path, "-o", tmp_path / "no" / "such" / "repo")
    assert result.exit_code == 2 and "parent folder does not exist" in result.output


def test_serve_and_infer_refuse_bad_input(tmp_path):
    result = invoke("serve", tmp_path / "missing")
    assert result.exit_code == 2 and "model repository not found" in result.output
    (tmp_path / "empty").mkdir()
    result = invoke("serve", tmp_path / "empty")
    assert result.exit_code == 2 and "holds no models" in result.output
    port = tr.free_port()
    result = invoke("infer", f"127.0.0.1:{port}", "m")
    assert result.exit_code == 2 and "cannot reach a Triton server" in result.output
    result = invoke("infer", "localhost", "m")
    assert result.exit_code == 2 and "should be host:port" in result.output
    result = invoke("infer", f"127.0.0.1:{port}", "m", "--dense")
    assert result.exit_code == 2 and "add --compare MODEL" in result.output
    result = invoke("infer", f"127.0.0.1:{port}", "m", "--image", "x.png", "--random")
    assert result.exit_code == 2 and "not both" in result.output


# ---------------------------------------------------------------------------------- live


@pytest.fixture(scope="module")
def served_repo(tmp_path_factory):
    """A pickled depth-2 ViT-Tiny (32 px, 10 classes), exported with FNA m=3 through the CLI and
    written as a python-backend repository."""
    import torch

    from ..conftest import tiny_timm

    reason = tr.probe_tritonserver()
    if reason is not None:
        pytest.skip(f"no tritonserver can start here: {reason}")
    pytest.importorskip("tritonclient.http", reason="needs tritonclient[http]")
    root = tmp_path_factory.mktemp("served")
    torch.manual_seed(0)
    torch.save(tiny_timm(img_size=32, depth=2, num_classes=10), root / "tiny.pt")
    result = invoke("export", root / "tiny.pt", "--allow-pickle", "--landmarks", "3", "--layers", "1", "-o", root / "tiny.onnx", "-q", "--no-check")
    assert result.exit_code == 0, result.output
    result = invoke("triton", root / "tiny.onnx", "-o", root / "repo", "--backend", "python", "--name", "tiny", "--max-batch-size", "4")
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture
def serve_process(served_repo, tmp_path):
    ports = [tr.free_port() for _ in range(3)]
    while len(set(ports)) < 3:
        ports = [tr.free_port() for _ in range(3)]
    command = [sys.executable, "-m", "fna_deploy.cli", "serve", str(served_repo / "repo"), "--http-port", str(ports[0]),
               "--grpc-port", str(ports[1]), "--metrics-port", str(ports[2]), "--log", str(tmp_path / "server.log")]
    out = open(tmp_path / "serve.out", "w+")
    proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        while "ready:" not in (tmp_path / "serve.out").read_text():
            assert proc.poll() is None, (tmp_path / "serve.out").read_text()
            assert time.monotonic() < deadline, "fna-deploy serve was not ready in 180 s"
            time.sleep(0.3)
        yield proc, ports, tmp_path / "serve.out"
    finally:
        stop_server(proc)
        out.close()


@pytest.mark.slow
def test_serve_infer_compare_and_sigterm(served_repo, serve_process):
    proc, ports, log = serve_process
    url = f"127.0.0.1:{ports[0]}"
    text = log.read_text()
    assert f"HTTP     http://{url}" in text and f"gRPC     127.0.0.1:{ports[1]}" in text
    assert f"metrics  http://127.0.0.1:{ports[2]}/metrics" in text

    model = served_repo / "tiny.pt"
    # the served FNA config (recorded in config.pbtxt) is applied to the PyTorch model: exact match
    result = invoke("infer", url, "tiny", "--batch", "3", "--compare", model, "--allow-pickle", "--report", served_repo / "r.json")
    assert result.exit_code == 0, result.output
    assert "output [3, 10] float32" in result.output and "(FNA served config): ok" in result.output and "the given weights" in result.output
    import json

    record = json.loads((served_repo / "r.json").read_text())
    assert record["compare"]["passed"] and record["compare"]["max_abs"] <= 1e-4
    assert record["compare"]["fna_config"]["num_landmarks"] == 3

    # a different FNA config, or dense attention, gives a different answer: the check bites
    result = invoke("infer", url, "tiny", "--batch", "3", "--compare", model, "--allow-pickle", "--landmarks", "5")
    assert result.exit_code == 1 and "does not match PyTorch" in result.output
    result = invoke("infer", url, "tiny", "--compare", model, "--allow-pickle", "--dense")
    assert result.exit_code == 1 and "(dense attention): FAILED" in result.output

    # an image file goes through the same preprocessing on both sides
    from PIL import Image
    import numpy as np

    Image.fromarray((np.random.default_rng(0).random((40, 48, 3)) * 255).astype("uint8")).save(served_repo / "cat.png")
    result = invoke("infer", url, "tiny", "--image", served_repo / "cat.png", "--compare", model, "--allow-pickle")
    assert result.exit_code == 0, result.output
    assert "output [1, 10]" in result.output and "top-5 of the first image" in result.output

    result = invoke("infer", url, "tiny", "--batch", "8")
    assert result.exit_code == 2 and "--batch 8 exceeds the model's max_batch_size 4" in result.output
    result = invoke("infer", url, "tiny", "--random", "9")
    assert result.exit_code == 2 and "--random 9 exceeds the model's max_batch_size 4" in result.output
    result = invoke("infer", url, "nope")
    assert result.exit_code == 2 and "model 'nope' is not ready" in result.output

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    assert "stopped (tritonserver exit code 0)" in log.read_text()
    assert not any(tr.port_in_use(p) for p in ports)


@pytest.mark.slow
def test_serve_stops_cleanly_on_ctrl_c(serve_process):
    proc, ports, log = serve_process
    proc.send_signal(signal.SIGINT)  # what Ctrl-C delivers to the foreground process
    assert proc.wait(60) == 0, log.read_text()
    assert "stopped (tritonserver exit code 0)" in log.read_text()
    assert not any(tr.port_in_use(p) for p in ports)
