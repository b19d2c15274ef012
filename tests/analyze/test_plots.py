"""fna_deploy.analyze.plots: the PNG plots are written and reopen."""

from __future__ import annotations

import pytest

from fna_deploy.analyze import write_plots


def test_plots_are_written_and_reopen(planted, tmp_path):
    pytest.importorskip("matplotlib")
    from PIL import Image

    _, _, report = planted
    files = write_plots(report, tmp_path / "plots")
    assert sorted(f.name for f in files) == ["fna_error.png", "savings.png", "token_norms.png"]
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted(f.name for f in files)
    for f in files:
        with Image.open(f) as image:
            assert image.format == "PNG" and image.size[0] > 200 and image.size[1] > 200
