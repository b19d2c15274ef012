"""Writing exports: all or nothing, nothing deleted that the run did not create, and signals
(SIGTERM, SIGHUP) clean up like Ctrl-C: no hidden partial files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import onnx
import pytest

from fna_deploy.export.graph import save_atomic

from ..triton.conftest import tiny_onnx

ROOT = Path(__file__).resolve().parents[2]


def _model(tmp_path: Path) -> onnx.ModelProto:
    return onnx.load(str(tiny_onnx(tmp_path / "source.onnx")))


def test_a_data_file_the_export_did_not_write_is_kept(tmp_path):
    out = tmp_path / "out" / "m.onnx"
    out.parent.mkdir()
    user_data = out.parent / "m.onnx.data"
    user_data.write_bytes(b"the user's own file")
    save_atomic(_model(tmp_path), out)  # weights inside the .onnx: the .data is none of its business
    assert user_data.read_bytes() == b"the user's own file"
    with pytest.raises(FileExistsError, match="is not the weights file of m.onnx"):
        save_atomic(_model(tmp_path), out, external_data=True)
    assert user_data.read_bytes() == b"the user's own file"
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.onnx", "m.onnx.data"]  # no staging folder left


def test_the_replaced_models_own_data_file_is_replaced(tmp_path):
    out = tmp_path / "m.onnx"
    save_atomic(_model(tmp_path), out, external_data=True)
    assert (tmp_path / "m.onnx.data").exists()
    save_atomic(_model(tmp_path), out, external_data=True)  # its own weights: replaced
    save_atomic(_model(tmp_path), out)  # now inline: the old weights file was this model's, so it goes
    assert not (tmp_path / "m.onnx.data").exists()
    assert onnx.load(str(out)).graph.initializer[0].data_location == onnx.TensorProto.DEFAULT


SLOW_WRITE = """
import sys, time, onnx
import fna_deploy.export.graph as graph
real = onnx.save_model
def slow(*args, **kwargs):
    real(*args, **kwargs)
    print("staged", flush=True)
    time.sleep(60)
graph.onnx.save_model = slow
"""


def _run_until_staged(script: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.strip() == "staged", proc.communicate()[1]
    return proc


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_signal_during_a_write_leaves_nothing(tmp_path, signum, code):
    tiny_onnx(tmp_path / "source.onnx")
    script = SLOW_WRITE + """
from fna_deploy.cli import CliError, as_cli_error, signals_interrupt
try:
    with signals_interrupt():
        graph.save_atomic(onnx.load("source.onnx"), "out.onnx")
except BaseException as exc:
    error = as_cli_error(exc)
    error.show()
    sys.exit(error.exit_code)
"""
    proc = _run_until_staged(script, tmp_path)
    assert any(p.name.startswith(".out.onnx.") for p in tmp_path.iterdir())  # the staging folder exists now
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert err.strip().startswith(f"error: interrupted by {signal.Signals(signum).name}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["source.onnx"]


@pytest.mark.slow  # a real export before the signal
def test_sigterm_during_cli_export_leaves_nothing(tmp_path):
    script = SLOW_WRITE + """
from fna_deploy.cli import main
sys.exit(main(["export", "timm:vit_tiny_patch16_224", "--resolution", "32", "--landmarks", "4", "--no-check", "-q", "-o", "out.onnx"]))
"""
    proc = _run_until_staged(script, tmp_path)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1].startswith("error: interrupted by SIGTERM") and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_external_data_rerun_in_its_own_folder_and_mode(tmp_path, monkeypatch):
    """``export -o keep.onnx --external-data`` run again where keep.onnx.data lies: its own weights are
    replaced (onnx's check looked relative to the working directory), and they are written 0644."""
    model = _model(tmp_path)
    monkeypatch.chdir(tmp_path)
    old_mask = os.umask(0o022)
    try:
        save_atomic(model, "keep.onnx", external_data=True)
        save_atomic(_model(tmp_path), "keep.onnx", external_data=True)
        assert (tmp_path / "keep.onnx.data").stat().st_mode & 0o777 == 0o644
        assert (tmp_path / "keep.onnx").stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(old_mask)
    import numpy as np

    reloaded = onnx.load(str(tmp_path / "keep.onnx"))
    assert np.array_equal(onnx.numpy_helper.to_array(reloaded.graph.initializer[0]),
                          onnx.numpy_helper.to_array(_model(tmp_path).graph.initializer[0]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.onnx", "keep.onnx.data", "source.onnx"]
