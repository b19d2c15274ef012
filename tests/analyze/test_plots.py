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


def test_error_plot_promises_dashed_lines_only_when_drawn_and_its_legend_covers_no_curve(planted, tmp_path, monkeypatch):
    """Issue 21: the title said "dashed" with no dashed line, and the legend sat on layer 0's curve."""
    pytest.importorskip("matplotlib")
    import copy

    from matplotlib.figure import Figure

    figures = []
    original = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: (figures.append(self), original(self, *a, **k))[1])
    _, _, report = planted
    plain = copy.deepcopy(report)
    for layer in plain.layers:  # no massive tokens: nothing dashed to draw
        layer.massive_tokens = []
    dashed_in = {}
    for which, rep in (("planted", report), ("plain", plain)):
        figures.clear()
        write_plots(rep, tmp_path / which)
        ax = next(f.axes[0] for f in figures if f.axes[0].get_title().startswith("FNA error per layer"))
        drawn = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
        assert ("dashed" in ax.get_title()) == bool(drawn), (which, ax.get_title())
        dashed_in[which] = bool(drawn)
        figure = ax.figure
        figure.canvas.draw()
        legend = ax.get_legend().get_window_extent()
        assert legend.x0 >= ax.get_window_extent().x1  # beside the axes, over no curve
    assert dashed_in == {"planted": True, "plain": False}  # the planted massive token is drawn dashed
