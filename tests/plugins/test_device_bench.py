"""scripts/device_bench.py's CPU side: the planned configurations and its bad-input handling (the
timing itself needs a GPU and runs in scripts/device_check.sh)."""

from __future__ import annotations

import subprocess
import sys

from fna_deploy import native

SCRIPT = native.source_dir() / "scripts" / "device_bench.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def test_plan_covers_the_issue_shapes_and_targets():
    proc = run("--list")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 12  # B in {1, 8} x N in {1024, 4096, 16384} x m in {128, 256}
    assert "B=1 H=16 N=4096 d=64 m=128 fp16  target <= 40 us" in lines
    assert "B=8 H=16 N=16384 d=64 m=128 fp16  target <= 500 us" in lines
    assert "B=1 H=16 N=4096 d=64 m=256 fp16  target <= 80 us" in lines
    # m > N is left out
    assert len(run("--list", "--tokens", "100").stdout.splitlines()) == 0


def test_bad_input_is_one_sentence_and_exit_2(tmp_path):
    proc = run("--list", "--tokens", "1024,x")
    assert proc.returncode == 2 and "--tokens must be a comma-separated list" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run("--library", str(tmp_path / "missing.so"), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    assert not (tmp_path / "out").exists()  # nothing written
    proc = run()
    assert proc.returncode == 2 and "--library and --out are required" in proc.stderr
