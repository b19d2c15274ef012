"""bench --onnx ARTIFACT: the artifact's stored FNA config and resolution drive the run, ONNX Runtime
times the file itself, flags that contradict it are refused, and an artifact of other weights too."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

import fna_deploy as fd
from fna_deploy.cli import cli

from ..conftest import tiny_timm


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    from fna_deploy.export import export_onnx

    folder = tmp_path_factory.mktemp("bench_onnx")
    model = tiny_timm(img_size=32)
    weights = folder / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    onnx_path = folder / "art.onnx"
    export_onnx(model, fd.FNAConfig(num_landmarks=3, layers="10-11", pinv_iters=4), onnx_path, input_shape=(1, 3, 32, 32), check=False)
    dense = folder / "dense.onnx"
    export_onnx(model, None, dense, target="dense", input_shape=(1, 3, 32, 32), check=False)
    return folder, weights, onnx_path, dense


def _bench(weights, *args):
    return CliRunner().invoke(cli, ["bench", str(weights), "--arch", "timm:vit_tiny_patch16_224", "--iters", "1", "--warmup", "0",
                                    "-q", *args])


def test_bench_takes_an_artifact_and_reads_its_config(artifact, tmp_path):
    folder, weights, onnx_path, _ = artifact
    result = _bench(weights, "--onnx", str(onnx_path), "--report", str(tmp_path / "b.json"))
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "b.json").read_text())
    assert report["machine"]["onnx_artifact"] == str(onnx_path)
    fna_rows = [m for m in report["measurements"] if m["variant"] == "fna"]
    assert {(m["backend"], m["resolution"], m["landmarks"]) for m in fna_rows} == {("torch", 32, 3), ("onnxrt", 32, 3)}
    assert report["layers"] in ("10-11", [10, 11])


@pytest.mark.parametrize("args, message", [
    (["--landmarks", "5"], "--landmarks 5 contradicts --onnx"),
    (["--resolutions", "64"], "--resolutions 64 contradicts --onnx"),
    (["--layers", "all"], "--layers all contradicts --onnx"),
])
def test_contradicting_flags_are_refused(artifact, args, message):
    _, weights, onnx_path, _ = artifact
    result = _bench(weights, "--onnx", str(onnx_path), *args)
    assert result.exit_code == 2 and result.stderr.startswith(f"error: {message}"), result.output


def test_an_artifact_of_other_weights_or_without_fna_is_refused(artifact, tmp_path):
    folder, _, onnx_path, dense = artifact
    from safetensors.torch import load_file

    other = tmp_path / "other.safetensors"
    state = load_file(str(folder / "w.safetensors"))
    state["head.bias"] = state["head.bias"] + torch.linspace(0, 1, state["head.bias"].numel())  # other weights than the artifact's
    save_file(state, str(other))
    result = _bench(other, "--onnx", str(onnx_path))
    assert result.exit_code == 2 and "does not compute what MODEL does" in result.stderr, result.output
    result = _bench(folder / "w.safetensors", "--onnx", str(dense))
    assert result.exit_code == 2 and "records no FNA config" in result.stderr


@pytest.mark.parametrize("axis, value", [(2, 48), (1, 4)])
def test_verify_refuses_a_tampered_input_shape(artifact, tmp_path, axis, value):
    """A hand-edited input shape was a catch-all PolygraphyException; now one sentence naming the file."""
    import onnx

    folder, weights, onnx_path, _ = artifact
    model = onnx.load(str(onnx_path))
    model.graph.input[0].type.tensor_type.shape.dim[axis].dim_value = value
    tampered = tmp_path / "tampered.onnx"
    onnx.save(model, tampered)
    result = CliRunner().invoke(cli, ["verify", str(weights), "--arch", "timm:vit_tiny_patch16_224", "--onnx", str(tampered), "-q"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --onnx {str(tampered)!r} declares input 'images' as [B, ")
    assert "but MODEL takes [B, 3, 32, 32]" in lines[0] and "unexpected" not in lines[0]
