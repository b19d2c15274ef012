"""fna_deploy.analyze.report: layer specs, export flags, the JSON report."""

from __future__ import annotations

import json

import pytest

from fna_deploy import parse_layers
from fna_deploy.analyze import export_flags, format_layers, write_report

from .conftest import LANDMARKS, MASSIVE


def test_format_layers_and_export_flags():
    assert format_layers([2, 3, 4, 7, 9, 10]) == "2-4,7,9-10"
    assert format_layers([5]) == "5"
    assert parse_layers(format_layers([0, 2, 3, 11]), 12) == [0, 2, 3, 11]
    assert export_flags(64, range(6, 12), massive_ratio=20.0) == "--landmarks 64 --layers 6-11 --massive-ratio 20"
    assert (
        export_flags(32, [1], artifact_ratio=2.5, method="grid", pinv_iters=8, resolution=1024)
        == "--resolution 1024 --landmarks 32 --layers 1 --method grid --massive-ratio 0 --artifact-ratio 2.5 --pinv-iters 8"
    )


def test_report_json_is_written_atomically_and_reopens(planted, tmp_path):
    _, _, report = planted
    path = write_report(report, tmp_path / "sub" / "analysis.json")
    assert sorted(p.name for p in path.parent.iterdir()) == ["analysis.json"]  # no temporary left
    data = json.loads(path.read_text())
    assert data == json.loads(json.dumps(report.to_dict()))
    assert len(data["layers"]) == 4
    for i, layer in enumerate(data["layers"]):
        assert layer["index"] == i
        for key in ("norm_median", "norm_max", "massive_tokens", "artifact_tokens", "sink_mass", "fna_error"):
            assert key in layer
        assert sorted(layer["fna_error"], key=int) == [str(m) for m in LANDMARKS]
    assert data["layers"][2]["massive_tokens"] == MASSIVE
    rec = data["recommendation"]
    for key in ("layers", "num_landmarks", "massive_ratio", "artifact_ratio", "export_flags"):
        assert key in rec
    assert rec["export_flags"] == report.recommendation.export_flags


def test_report_write_errors(planted, tmp_path):
    _, _, report = planted
    with pytest.raises(IsADirectoryError):
        write_report(report, tmp_path)
