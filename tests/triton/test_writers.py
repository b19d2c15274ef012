"""One staging/lock mechanism for every writer of a model repository: concurrent writers of one
name (real processes) give exactly one winner, the marker must prove more than its existence, and
staging folders of killed writers are cleaned by the next writer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fna_deploy import triton as tr
from fna_deploy import utils
from fna_deploy.triton import RepositoryOptions, write_repository

from .conftest import tiny_onnx

ROOT = Path(__file__).resolve().parents[2]


def test_concurrent_writers_of_one_name_exactly_one_wins(tmp_path):
    onnx_path = tiny_onnx(tmp_path / "m.onnx")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "fna_deploy.cli", "triton", str(onnx_path), "-o", str(tmp_path / "repo"),
               "--name", "vit", "--backend", "python", "-q"]
    procs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [(p.wait(timeout=120), p.stdout.read(), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2, 2, 2], results
    for code, _, err in results:
        if code == 2:
            assert err.strip().splitlines() == [f"error: {tmp_path / 'repo' / 'vit'} already exists; pass --force to replace it"]
    assert [p.name for p in (tmp_path / "repo").iterdir()] == ["vit"]  # no staging folder left by the losers
    assert tr.is_fna_model_folder(tmp_path / "repo" / "vit")


def test_the_name_is_checked_again_at_the_swap(tmp_path, monkeypatch):
    """A writer that passed the early check loses when another one got the name while it staged."""
    onnx_path = tiny_onnx(tmp_path / "m.onnx")
    repo = tmp_path / "repo"
    from fna_deploy import utils

    real_staging_dir = utils.staging_dir  # the one staging mechanism (utils.replace_folder_atomic)

    def competitor_first(parent, name):
        monkeypatch.setattr(utils, "staging_dir", real_staging_dir)
        write_repository(onnx_path, repo, RepositoryOptions(name="vit", backend="python", max_batch_size=2))
        return real_staging_dir(parent, name)

    monkeypatch.setattr(utils, "staging_dir", competitor_first)
    with pytest.raises(FileExistsError):
        write_repository(onnx_path, repo, RepositoryOptions(name="vit", backend="python", max_batch_size=4))
    assert tr.parse_config((repo / "vit" / "config.pbtxt").read_text()).max_batch_size == 2  # the winner's model
    assert [p.name for p in repo.iterdir()] == ["vit"]


def test_a_planted_or_copied_marker_does_not_let_force_delete_a_folder(tmp_path):
    onnx_path = tiny_onnx(tmp_path / "m.onnx")
    repo = tmp_path / "repo"
    options = RepositoryOptions(name="data", backend="python")
    user = repo / "data"
    user.mkdir(parents=True)
    (user / "notes.txt").write_text("the user's own files")
    (user / tr.MARKER).write_text("")  # an empty marker planted in the user's folder
    with pytest.raises(ValueError, match="not fna-deploy's JSON record"):
        write_repository(onnx_path, repo, options, force=True)
    written = write_repository(onnx_path, repo, RepositoryOptions(name="vit", backend="python"))
    (user / tr.MARKER).write_text((Path(written.model_dir) / tr.MARKER).read_text())  # a real marker, copied
    (user / "config.pbtxt").write_text((Path(written.model_dir) / "config.pbtxt").read_text())
    with pytest.raises(ValueError, match="written for a model named 'vit'"):
        write_repository(onnx_path, repo, options, force=True)
    assert (user / "notes.txt").read_text() == "the user's own files"
    (Path(written.model_dir) / "config.pbtxt").write_text('name: "vit" backend: "python"')  # edited after writing
    assert "config.pbtxt is not the one" in tr.repository.marker_problem(written.model_dir)


def test_a_pre_marker_folder_says_how_to_adopt_it(tmp_path):
    onnx_path = tiny_onnx(tmp_path / "m.onnx")
    repo = tmp_path / "repo"
    report = write_repository(onnx_path, repo, RepositoryOptions(name="vit", backend="python"))
    marker = Path(report.model_dir) / tr.MARKER
    marker.write_text(json.dumps({"written_by": "fna-deploy", "version": "0.0.9", "artifact": "m.onnx"}))  # the old record
    with pytest.raises(ValueError) as info:
        write_repository(onnx_path, repo, RepositoryOptions(name="vit", backend="python"), force=True)
    message = str(info.value)
    assert "predates the checked marker" in message and "adopt it by moving it away (mv" in message and "\n" not in message
    (Path(report.model_dir) / tr.MARKER).unlink()
    with pytest.raises(ValueError, match=r"no \.fna-deploy-model in it.*adopt it by moving it away"):
        write_repository(onnx_path, repo, RepositoryOptions(name="vit", backend="python"), force=True)


def test_staging_folders_of_killed_writers_are_cleaned(tmp_path):
    onnx_path = tiny_onnx(tmp_path / "m.onnx")
    repo = tmp_path / "repo"
    repo.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a process id that no longer runs
    stale = repo / f".vit.staging.{dead.pid}.abc123"
    live = repo / f".vit.staging.{os.getppid()}.def456"  # a running writer's: kept
    other = repo / f".other.staging.{dead.pid}.ghi789"  # another name's: not this writer's business
    for folder in (stale, live, other):
        (folder / "1").mkdir(parents=True)
    untagged_old = repo / ".vit.staging.k_zq0x"
    untagged_old.mkdir()
    os.utime(untagged_old, (0, 0))
    write_repository(onnx_path, repo, RepositoryOptions(name="vit", backend="python"))
    assert sorted(p.name for p in repo.iterdir()) == sorted([live.name, other.name, "vit"])


def test_folder_lock_times_out_with_a_sentence(tmp_path):
    import fcntl

    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another open file description holds it
        with pytest.raises(utils.WriterBusy, match="another fna-deploy run has been writing into"):
            with utils.folder_lock(tmp_path, timeout_s=0.2):
                pass
    finally:
        os.close(fd)
    with utils.folder_lock(tmp_path, timeout_s=0.2):  # released: free again
        pass


def test_copied_model_files_get_0644_whatever_the_source_had(tmp_path):
    (tmp_path / "a").mkdir()
    onnx_path = tiny_onnx(tmp_path / "a" / "m.onnx", external=True)
    for source in (onnx_path, tmp_path / "a" / "m.onnx.data"):
        os.chmod(source, 0o600)  # as an older export wrote its weights
    old = os.umask(0o022)
    try:
        report = write_repository(onnx_path, tmp_path / "repo", RepositoryOptions(name="m", backend="onnxruntime"))
    finally:
        os.umask(old)
    for name in ("model.onnx", "m.onnx.data"):
        assert (Path(report.model_dir) / "1" / name).stat().st_mode & 0o777 == 0o644
