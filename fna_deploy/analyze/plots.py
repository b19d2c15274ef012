"""PNG plots of an analysis: token-norm maps, FNA error against m, predicted savings."""

from __future__ import annotations

import io
import os
from pathlib import Path

from ..utils import write_bytes_atomic
from .report import AnalysisReport, Candidate
from .tokens import token_ratios


def _layers_to_map(report: AnalysisReport, limit: int = 6) -> list[int]:
    """The layers worth a token-norm map: the first, where massive/artifact tokens appear or change, the last."""
    chosen = [0]
    prev: tuple = ((), ())
    for layer in report.layers:
        key = (tuple(layer.massive_tokens), tuple(layer.artifact_tokens))
        if key != prev and layer.index not in chosen:
            chosen.append(layer.index)
        prev = key
    last = report.layers[-1].index
    if last not in chosen:
        chosen.append(last)
    if len(chosen) > limit:
        chosen = chosen[: limit - 1] + [last]
    return sorted(set(chosen))


def write_plots(report: AnalysisReport, directory: "str | os.PathLike[str]") -> list[Path]:
    """PNG plots: token-norm maps, FNA error against m per layer, predicted savings. Returns the files."""
    try:
        import matplotlib  # Figure objects draw with Agg; pyplot (and its global backend) is never used
        import matplotlib.ticker
        from matplotlib.colors import LogNorm
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("plots need matplotlib (pip install matplotlib)") from None

    out = Path(directory)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--plot: {str(out)!r} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def save(fig: "Figure", name: str) -> None:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
        written.append(write_bytes_atomic(out / name, buffer.getvalue()))

    # 1. token-norm maps (norm / median) over the patch grid
    if report.grid is not None and report.layers and report.layers[0].norms is not None:
        rows, cols = report.grid
        chosen = _layers_to_map(report)
        images = min(3, report.num_images)
        fig = Figure(figsize=(3.2 * images + 0.8, 2.9 * len(chosen)))
        axes = fig.subplots(len(chosen), images, squeeze=False)
        for r, index in enumerate(chosen):
            layer = report.layers[index]
            ratios = token_ratios(layer.norms, report.num_prefix)[:, report.num_prefix :]  # type: ignore[arg-type]
            vmax = max(float(ratios[:images].max()), 1.01)
            vmin = max(min(float(ratios[:images].min()), 0.99), 1e-3)
            for c in range(images):
                ax = axes[r][c]
                grid = ratios[c].reshape(rows, cols).numpy()
                im = ax.imshow(grid, norm=LogNorm(vmin=vmin, vmax=vmax), cmap="magma")
                ax.set_xticks([])
                ax.set_yticks([])
                marks = ""
                if layer.massive_tokens or layer.artifact_tokens:
                    marks = f" ({len(layer.massive_tokens)} massive, {len(layer.artifact_tokens)} artifact)"
                ax.set_title(f"layer {index}, image {c}{marks}", fontsize=8)
            fig.colorbar(im, ax=list(axes[r]), fraction=0.046, pad=0.02, label="norm / median")
        fig.suptitle("residual-stream token norms entering each layer (patch grid)")
        save(fig, "token_norms.png")

    # 2. FNA error against m, one line per layer
    if report.layers and report.layers[0].fna_error:
        fig = Figure(figsize=(9, 4.5))
        ax = fig.subplots()
        cmap = matplotlib.colormaps["viridis"]
        count = len(report.layers)
        dashed = False
        for layer in report.layers:
            ms = sorted(layer.fna_error)
            vals = [max(layer.fna_error[m], 1e-12) for m in ms]
            color = cmap(layer.index / max(1, count - 1))
            ax.plot(ms, vals, marker="o", color=color, label=f"layer {layer.index}")
            guarded = layer.fna_error_variants.get("massive")
            if layer.massive_tokens and guarded and any(guarded[m] != layer.fna_error[m] for m in ms):
                ax.plot(
                    ms, [max(guarded[m], 1e-12) for m in ms], marker="x", linestyle="--", color=color,
                    label=f"layer {layer.index}, massive kept",
                )
                dashed = True
        ax.set_xscale("log", base=2)
        all_ms = sorted({m for layer in report.layers for m in layer.fna_error})
        ax.set_xticks(all_ms, labels=[str(m) for m in all_ms])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_yscale("log")
        ax.set_xlabel("landmarks m")
        ax.set_ylabel("relative error of the attention output")
        # the title promises dashed lines only when some were drawn
        note = "; dashed: massive tokens kept as landmarks" if dashed else ""
        ax.set_title(f"FNA error per layer (N = {report.num_tokens} tokens{note})", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        # beside the axes, so the legend covers no curve (it used to sit on layer 0's)
        ax.legend(fontsize=7, ncol=2 if count > 8 else 1, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        fig.subplots_adjust(right=0.72 if count > 8 else 0.78)
        save(fig, "fna_error.png")

    # 3. predicted savings of the best layer set per m (0 where FNA costs more than dense at this N)
    ms = sorted(report.layers[0].fna_error) if report.layers else []
    if ms:
        best: dict[int, Candidate] = {}
        for c in report.candidates:
            if c.num_landmarks not in best or c.flops_saving > best[c.num_landmarks].flops_saving:
                best[c.num_landmarks] = c
        fig = Figure(figsize=(7, 4.5))
        ax = fig.subplots()
        savings = [100 * best[m].flops_saving if m in best else 0.0 for m in ms]
        chosen_m = report.recommendation.num_landmarks
        colors = ["tab:orange" if m == chosen_m else "tab:blue" for m in ms]
        bars = ax.bar([str(m) for m in ms], savings, color=colors)
        for bar, m in zip(bars, ms):
            if m in best:
                c = best[m]
                label = f"{len(c.layers)} layers\n1-cos {c.end_to_end_error:.1e}" if c.layers else "over budget"
            else:
                label = "no saving\nat this N"
            ax.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=7)
        ax.set_xlabel("landmarks m")
        ax.set_ylabel("predicted FLOP saving of the blocks (%)")
        ax.set_title(f"largest saving within the budget {report.recommendation.budget:g} (N = {report.num_tokens})")
        ax.grid(True, axis="y", alpha=0.3)
        ax.set_ylim(0, max(max(savings) * 1.25, 1.0))
        save(fig, "savings.png")
    return written
