"""What a new user hits first (issue 21): seeded random weights recorded in the artifact and read
back by verify/triton/infer, verify on a trt-target export, and the FAIL hint on random weights."""

from __future__ import annotations

import json

import onnx
import pytest
import torch
from click.testing import CliRunner

from fna_deploy.cli import cli
from fna_deploy.loading import DEFAULT_SEED, load_model

MODEL = "timm:vit_tiny_patch16_224"
SMALL = ["--resolution", "64", "--landmarks", "8"]


def invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_random_weights_are_seeded_and_default_seed_is_shared():
    torch.manual_seed(123)  # the caller's RNG state must not matter
    a = load_model(MODEL, img_size=64)
    torch.manual_seed(456)
    b = load_model(MODEL, img_size=64, seed=DEFAULT_SEED)
    c = load_model(MODEL, img_size=64, seed=7)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["blocks.0.attn.qkv.weight"], sc["blocks.0.attn.qkv.weight"])
    # the global RNG is left as the caller had it
    torch.manual_seed(1)
    expected = torch.rand(3)
    torch.manual_seed(1)
    load_model(MODEL, img_size=64, seed=3)
    assert torch.equal(torch.rand(3), expected)


@pytest.fixture(scope="module")
def trt_export(tmp_path_factory):
    folder = tmp_path_factory.mktemp("first")
    out, report = folder / "t.onnx", folder / "r.json"
    result = invoke("export", MODEL, *SMALL, "--seed", "3", "--target", "trt", "-o", str(out), "--report", str(report))
    assert result.exit_code == 0, result.output
    assert "random weights (seed 3)" in result.output
    return out, json.loads(report.read_text())


def test_export_records_the_seed(trt_export):
    out, report = trt_export
    meta = {p.key: p.value for p in onnx.load(str(out), load_external_data=False).metadata_props}
    assert meta["random_seed"] == "3" and meta["weights"] == "random weights (seed 3)" and meta["fna_target"] == "trt"
    assert report["weights"] == "random weights (seed 3)"


def test_verify_reads_the_seed_and_runs_a_trt_export(trt_export, tmp_path):
    out, _ = trt_export
    report = tmp_path / "v.json"
    result = invoke("verify", MODEL, "--onnx", str(out), "--resolution", "64", "-q", "--report", str(report))
    assert result.exit_code == 0, result.output
    assert "random weights (seed 3)" in result.output
    assert "torch-fna vs torch-dense" in result.output  # not cut at 80 columns in a log
    data = json.loads(report.read_text())
    pair = next(p for p in data["pairs"] if p["other"] == "onnxrt")
    assert pair["passed"] and pair["max_abs"] < 1e-4 and "seed 3" in data["model"]


def test_verify_refuses_a_contradicting_seed_and_hints_checkpoint_on_fail(trt_export):
    out, _ = trt_export
    result = invoke("verify", MODEL, "--onnx", str(out), "--resolution", "64", "-q", "--seed", "4")
    assert result.exit_code == 2
    assert "--seed 4 contradicts" in result.output and "seed 3" in result.output
    failed = invoke("verify", MODEL, "--onnx", str(out), "--resolution", "64", "-q", "--atol", "0", "--rtol", "0")
    assert failed.exit_code == 1
    assert "pass --checkpoint" in failed.output.strip().splitlines()[-1]


def test_seed_with_real_weights_is_refused(tmp_path):
    result = invoke("export", "weights.safetensors", "--arch", MODEL, "--seed", "1", "-o", str(tmp_path / "x.onnx"))
    assert result.exit_code == 2 and "drop --seed" in result.output
    assert not (tmp_path / "x.onnx").exists()


def test_triton_repository_carries_the_seed(trt_export, tmp_path):
    pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="needs tritonclient")
    from fna_deploy.triton import RepositoryOptions, write_repository

    folder = tmp_path / "m"
    folder.mkdir()
    portable = folder / "p.onnx"
    result = invoke("export", MODEL, *SMALL, "--seed", "5", "-o", str(portable), "--no-check", "-q")
    assert result.exit_code == 0, result.output
    report = write_repository(portable, folder / "repo", RepositoryOptions(name="vit", backend="onnxruntime"))
    text = (tmp_path / "m" / "repo" / "vit" / "config.pbtxt").read_text()
    assert 'key: "fna_random_seed"' in text and 'string_value: "5"' in text, report


@pytest.mark.slow
def test_bare_timm_name_end_to_end_with_default_flags(tmp_path):
    """export -> verify -> triton -> serve -> infer --compare with a bare timm:NAME and default
    flags: the seeded random weights recorded in the export make every step rebuild the same model."""
    import subprocess
    import sys
    import time

    from fna_deploy import triton as tr

    from . import stop_server

    reason = tr.probe_tritonserver()
    if reason is not None:
        pytest.skip(f"no tritonserver can start here: {reason}")
    pytest.importorskip("tritonclient.http", reason="needs tritonclient[http]")
    onnx_path, repo = tmp_path / "t.onnx", tmp_path / "repo"
    exported = invoke("export", MODEL, "-o", str(onnx_path), "-q")
    assert exported.exit_code == 0, exported.output
    verified = invoke("verify", MODEL, "--onnx", str(onnx_path), "-q")
    assert verified.exit_code == 0 and "random weights (seed 0)" in verified.output, verified.output
    written = invoke("triton", str(onnx_path), "-o", str(repo), "--name", "vit")  # no GPU here: python backend, KIND_CPU
    assert written.exit_code == 0 and f"fna-deploy serve {repo} --model vit" in written.output, written.output
    # a model for a GPU server in the same repository: --model keeps it out of this server
    assert invoke("triton", str(onnx_path), "-o", str(repo), "--name", "gpu", "--device", "cuda").exit_code == 0
    ports = [tr.free_port() for _ in range(3)]
    command = [sys.executable, "-m", "fna_deploy.cli", "serve", str(repo), "--model", "vit", "--http-port", str(ports[0]),
               "--grpc-port", str(ports[1]), "--metrics-port", str(ports[2]), "--log", str(tmp_path / "server.log")]
    log = tmp_path / "serve.out"
    with open(log, "w+") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 180
            while "ready:" not in log.read_text():
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "serve was not ready in 180 s"
                time.sleep(0.3)
            result = invoke("infer", f"127.0.0.1:{ports[0]}", "vit", "--compare", MODEL)
            assert result.exit_code == 0, result.output
            assert "random weights (seed 0)" in result.output and ": ok" in result.output
        finally:
            stop_server(proc)


def test_serve_model_chooses_models_before_starting(tmp_path):
    from fna_deploy import triton as tr
    from fna_deploy.triton.server import explicit_models_args

    assert explicit_models_args(["a", "b"]) == ["--model-control-mode=explicit", "--load-model=a", "--load-model=b"]
    assert explicit_models_args([]) == []
    reason = tr.probe_tritonserver()
    if reason is not None:
        pytest.skip(f"no tritonserver here: {reason}")
    from tests.triton.conftest import tiny_onnx

    onnx_path = tiny_onnx(tmp_path / "m.onnx")
    repo = tmp_path / "repo"
    assert invoke("triton", str(onnx_path), "-o", str(repo), "--name", "cpu", "--device", "cpu").exit_code == 0
    assert invoke("triton", str(onnx_path), "-o", str(repo), "--name", "gpu", "--device", "cuda").exit_code == 0
    result = invoke("serve", str(repo), "--model", "nope")
    assert result.exit_code == 2 and "--model 'nope' is not in" in result.output and "cpu, gpu" in result.output
    if "onnxruntime" not in tr.server_backends(tr.locate_tritonserver()):
        result = invoke("serve", str(repo))
        assert result.exit_code == 2 and "model 'gpu' needs the onnxruntime backend" in result.output
        assert "(--model NAME)" in result.output


def test_the_cli_starts_without_torch_and_speaks_while_it_loads():
    """First output within a second: importing the CLI (and the package) loads no torch/onnx, and a
    command that is still importing them says so on stderr; -q keeps it quiet."""
    import subprocess
    import sys

    code = "import sys, fna_deploy.cli, fna_deploy; print(sorted(m for m in ('torch', 'onnx', 'timm') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
    import fna_deploy as fd

    assert callable(fd.analyze) and fd.FNAConfig().massive_ratio == 10.0  # the lazy names still resolve
    command = [sys.executable, "-m", "fna_deploy.cli", "export", "timm:no_such_model", "--no-check"]  # timm takes > 1 s to load
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.stderr.splitlines()[0] == "fna-deploy export: loading torch, onnx and the model libraries ..."
    assert done.returncode == 2 and done.stderr.splitlines()[-1].startswith("error: ")
    quiet = subprocess.run(command + ["-q"], capture_output=True, text=True)
    assert quiet.returncode == 2 and len(quiet.stderr.splitlines()) == 1
    # once a command shows progress the notice is cancelled: never after a progress line
    lines = subprocess.run([sys.executable, "-m", "fna_deploy.cli", "info"], capture_output=True, text=True).stderr.splitlines()
    assert lines[0].startswith("[") or lines[0].startswith("fna-deploy info: loading")
    assert not any("loading torch" in line for line in lines[1:]), lines


def test_info_reports_each_probe_and_q_silences_it():
    from fna_deploy.commands import info as info_module

    steps = []
    data = info_module.collect(steps.append)
    assert data["fna_deploy"] and "probing tritonserver (starts it once)" in steps and steps[0] == "importing torch (CUDA)"
    result = invoke("info", "-q")
    assert result.exit_code == 0 and "probing" not in result.output and "plugin library" in result.output


def test_verify_engine_names_the_runtime_the_plan_needs(tmp_path):
    """An RTX plan that cannot run here is explained by its own runtime, not by 'pip install tensorrt'."""
    from fna_deploy.trt.runtime import local_compute_capability, runtime_version

    version = runtime_version("tensorrt-rtx")
    if version is None or local_compute_capability() is not None:
        pytest.skip("needs TensorRT-RTX installed and no GPU (the refusal this checks)")
    plan = tmp_path / "m.plan"
    plan.write_bytes(b"not run")
    (tmp_path / "m.plan.json").write_text(json.dumps({"runtime": "tensorrt-rtx", "runtime_version": version}))
    result = invoke("verify", MODEL, "--engine", str(plan), "-q")
    assert result.exit_code == 2
    last = result.output.strip().splitlines()[-1]
    assert "TensorRT-RTX" in last and "needs a CUDA GPU" in last and "pip install tensorrt" not in last


def test_repository_defaults_fit_the_machine(tmp_path):
    """--device auto (the default) writes what this machine can serve: no GPU here, so an
    onnxruntime model gets KIND_CPU and a bare .onnx the python backend the bundled server has."""
    import torch

    pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="needs tritonclient")
    from fna_deploy import triton as tr
    from tests.triton.conftest import tiny_onnx

    onnx_path = tiny_onnx(tmp_path / "m.onnx")
    repo = tmp_path / "repo"
    assert invoke("triton", str(onnx_path), "-o", str(repo), "--name", "ort", "--backend", "onnxruntime").exit_code == 0
    assert invoke("triton", str(onnx_path), "-o", str(repo), "--name", "auto").exit_code == 0
    ort = tr.parse_config((repo / "ort" / "config.pbtxt").read_text())
    auto = tr.parse_config((repo / "auto" / "config.pbtxt").read_text())
    kind = ort.instance_group[0].KIND_GPU if torch.cuda.is_available() else ort.instance_group[0].KIND_CPU
    assert ort.instance_group[0].kind == kind
    if torch.cuda.is_available():
        assert auto.platform == "onnxruntime_onnx"
    else:
        assert auto.backend == "python"
    old = invoke("triton", str(onnx_path), "-o", str(repo), "--name", "old", "--backend", "onnxruntime", "--cpu")
    assert old.exit_code == 0 and "--cpu is deprecated" in old.output
    assert tr.parse_config((repo / "old" / "config.pbtxt").read_text()).instance_group[0].kind == ort.instance_group[0].KIND_CPU
