"""fna-deploy analyze: report and plots, image folders, flags, one-sentence errors, a subprocess run."""

from __future__ import annotations

import json
import stat
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from fna_deploy.cli import cli

from ..conftest import tiny_timm
from ..analyze.conftest import sharp_model


@pytest.fixture(scope="module")
def pickled_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "sharp.pt"
    torch.save(sharp_model(depth=2, plant=False), path)
    return path


def test_cli_writes_report_and_plots(pickled_model, tmp_path):
    pytest.importorskip("matplotlib")
    report = tmp_path / "analysis.json"
    result = CliRunner().invoke(
        cli,
        [
            "analyze", str(pickled_model), "--allow-pickle", "--random", "2", "--landmarks", "8,16,100",
            "--budget", "1", "--report", str(report), "--plot", str(tmp_path / "plots"),
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert data["num_images"] == 2 and len(data["layers"]) == 2
    assert data["skipped_landmarks"] == {"100": "more landmarks than the 65 tokens"}
    assert data["recommendation"]["export_flags"] == "--landmarks 8 --layers 0-1 --massive-ratio 0"  # 0 differs from export's default
    # the printed command names the analysed model, ready to paste
    assert f"fna-deploy export {pickled_model} --allow-pickle --landmarks 8 --layers 0-1" in result.output
    assert len(list((tmp_path / "plots").glob("*.png"))) == 3
    # no TTY here: progress is one line per stage with the elapsed time (stderr)
    assert "s] loading the model" in result.output and "s] probing layers" in result.output
    # reports and plots get the permissions any other output gets (not mkstemp's 0600)
    (tmp_path / "plain").write_text("x")
    plain = stat.S_IMODE((tmp_path / "plain").stat().st_mode)
    assert stat.S_IMODE(report.stat().st_mode) == plain
    assert {stat.S_IMODE(f.stat().st_mode) for f in (tmp_path / "plots").glob("*.png")} == {plain}


def test_cli_on_an_image_directory(tmp_path):
    from PIL import Image

    for i in range(2):
        Image.new("RGB", (40 + i * 10, 36), color=(30 * i, 100, 200)).save(tmp_path / f"img{i}.png")
    result = CliRunner().invoke(
        cli,
        ["analyze", "timm:vit_tiny_patch16_224", "--resolution", "32", "--images", str(tmp_path), "--landmarks", "2,4"],
    )
    assert result.exit_code == 0, result.output
    assert "2 image(s)" in result.output and "keep the model dense" in result.output


def test_cli_flags_carry_the_resolution_analyzed(tmp_path):
    report = tmp_path / "r.json"
    result = CliRunner().invoke(
        cli,
        ["analyze", "timm:vit_tiny_patch16_224", "--resolution", "64", "--random", "1", "--landmarks", "4",
         "--budget", "1", "--report", str(report)],
    )
    assert result.exit_code == 0, result.output
    flags = json.loads(report.read_text())["recommendation"]["export_flags"]
    assert flags.startswith("--resolution 64 --landmarks 4 --layers ")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--random", "2", "--images", "."], "exclude each other"),
        (["--landmarks", "8,x"], "'x' is not an integer"),
        (["--landmarks", "500"], "none of 500 fits"),
        (["--images", "/no/such/dir"], "/no/such/dir"),
        (["--random", "1", "--report", "."], "is a directory"),
    ],
)
def test_cli_errors_are_one_sentence(args, message):
    result = CliRunner().invoke(cli, ["analyze", "timm:vit_tiny_patch16_224", "--resolution", "32", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_cli_empty_image_directory_and_unknown_model(tmp_path):
    result = CliRunner().invoke(cli, ["analyze", "timm:vit_tiny_patch16_224", "--images", str(tmp_path)])
    assert result.exit_code == 2 and "no images" in result.output
    result = CliRunner().invoke(cli, ["analyze", "timm:no_such_vit"])
    assert result.exit_code == 2 and "no model named" in result.output


def test_cli_bare_weights_with_arch(tmp_path):
    from safetensors.torch import save_file

    weights = tmp_path / "w.safetensors"
    save_file(tiny_timm("vit_tiny_patch16_224", 32).state_dict(), str(weights))
    args = ["analyze", str(weights), "--arch", "timm:vit_tiny_patch16_224", "--resolution", "32", "--random", "1", "--landmarks", "2"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "5 tokens (32x32)" in result.output
    result = CliRunner().invoke(cli, [*args, "--checkpoint", str(weights)])
    assert result.exit_code == 2 and "--arch takes the weights from MODEL" in result.output


def test_cli_pickle_needs_consent(pickled_model):
    result = CliRunner().invoke(cli, ["analyze", str(pickled_model)])
    assert result.exit_code == 2 and "--allow-pickle" in result.output


def test_cli_subprocess(pickled_model, tmp_path):
    report = tmp_path / "r.json"
    run = subprocess.run(
        [sys.executable, "-m", "fna_deploy.cli", "analyze", str(pickled_model), "--allow-pickle", "--random", "2",
         "--landmarks", "8", "--budget", "1", "--report", str(report)],
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(report.read_text())["recommendation"]["num_landmarks"] == 8
    assert f"fna-deploy export {pickled_model} --allow-pickle --landmarks 8" in run.stdout
