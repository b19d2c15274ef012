"""fna_deploy.utils: atomic writes land with the permissions a plain open() gives (not mkstemp's 0600)."""

from __future__ import annotations

import os
import stat

import pytest

from fna_deploy.utils import current_umask, write_bytes_atomic, write_text_atomic


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_writes_follow_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        assert current_umask() == umask
        text = write_text_atomic(tmp_path / "report.json", "{}\n")
        data = write_bytes_atomic(tmp_path / "plot.png", b"\x89PNG")
        with open(tmp_path / "plain.txt", "w") as fh:  # what any other output gets
            fh.write("x")
    finally:
        os.umask(previous)
    plain = stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)
    assert plain == 0o666 & ~umask
    assert stat.S_IMODE(text.stat().st_mode) == plain and stat.S_IMODE(data.stat().st_mode) == plain
    assert text.read_text() == "{}\n" and data.read_bytes() == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.txt", "plot.png", "report.json"]  # no temp left


def test_export_report_passed_is_null_when_nothing_was_checked():
    from fna_deploy.export.exporter import ExportReport

    fields = dict(path="m.onnx", target="trt", model="m", tokens=5, input_shape=[1, 3, 8, 8], dynamic_batch=True,
                  fp16=False, opset=20, config=None, fna_layers=[], node_counts={}, file_size=1, files=[],
                  export_seconds=0.0)
    unchecked = ExportReport(**fields)
    assert unchecked.to_dict()["passed"] is None
    checked = ExportReport(**fields, parity=[{"passed": True}])
    assert checked.to_dict()["passed"] is True
    failed = ExportReport(**fields, parity=[{"passed": True}, {"passed": False}])
    assert failed.to_dict()["passed"] is False
