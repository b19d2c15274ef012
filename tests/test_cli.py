"""The CLI shell: --version, --help, info, and errors as one sentence with a non-zero exit."""

from __future__ import annotations

import json
import subprocess
import sys

import click
from click.testing import CliRunner

import fna_deploy
from fna_deploy.cli import COMMANDS, CliError, cli, main, user_errors


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and fna_deploy.__version__ in result.output


def test_help_lists_every_command():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert name in result.output


def test_info_json():
    result = CliRunner().invoke(cli, ["info", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    import torch

    assert data["packages"]["torch"] == torch.__version__
    assert data["cuda_available"] == torch.cuda.is_available()
    assert "plugin_library" in data and "onnxruntime_providers" in data


def test_info_table_in_a_real_process():
    proc = subprocess.run([sys.executable, "-m", "fna_deploy.cli", "info"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "torch" in proc.stdout and "CUDA GPU" in proc.stdout


def test_user_errors_become_one_sentence(capsys):
    @click.command()
    @user_errors
    def boom():
        raise ValueError("num_landmarks: must be >= 1, got 0\nsecond line")

    @click.command()
    @user_errors
    def missing():
        raise FileNotFoundError(2, "No such file or directory", "x.onnx")

    assert main.__module__ == "fna_deploy.cli"
    for command, text in ((boom, "error: num_landmarks: must be >= 1, got 0"), (missing, "error: No such file or directory: x.onnx")):
        try:
            command.main([], standalone_mode=False)
        except CliError as exc:
            exc.show()
            assert exc.exit_code == 2
        err = capsys.readouterr().err
        assert err.strip() == text


def test_unknown_command_exits_non_zero():
    proc = subprocess.run([sys.executable, "-m", "fna_deploy.cli", "frobnicate"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "No such command" in proc.stderr
