"""bench's report: the measurements, the speedups beside their FLOP bound, a markdown table, a plot."""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from .runtimes.pytorch import REFERENCE_OPS


@dataclass
class Measurement:
    backend: str
    resolution: int
    tokens: int
    variant: str  # "dense" or "fna"
    landmarks: Optional[int]
    median_ms: float
    p90_ms: float
    throughput: float  # images per second
    peak_mem_mb: float
    memory_kind: str  # "cuda_max_allocated_above_baseline" or "process_peak_rss"
    fna_ops: Optional[str] = None  # FNA_KERNELS / REFERENCE_OPS / ONNX_FUNCTIONS; None for dense
    dtype: str = "fp32"
    cuda_graph: bool = False  # timed by replaying a captured CUDA graph
    graph_fallback: Optional[str] = None  # why eager although CUDA graphs were asked for
    baseline_mem_mb: Optional[float] = None  # CUDA: allocated before this variant ran (inputs, weights)


@dataclass
class Speedup:
    backend: str
    resolution: int
    tokens: int
    landmarks: int
    speedup: float
    flop_bound: float
    share_of_bound: float
    fna_ops: str = REFERENCE_OPS
    cosine: Optional[float] = None  # FNA vs dense, model output
    rel_l2: Optional[float] = None
    # FNA with our kernels vs FNA with the PyTorch reference ops, whole model (only where kernels ran)
    kernels_vs_reference: Optional[dict[str, float]] = None


@dataclass
class BenchReport:
    model: str
    device: str
    batch: int
    layers: "str | list[int] | None"
    iters: int
    measurements: list[Measurement] = field(default_factory=list)
    speedups: list[Speedup] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    device_type: str = "cpu"
    dtype: str = "fp32"
    cuda_graphs: bool = False
    timing: str = "host_clock"  # or "cuda_events"
    warmup: int = 1
    graph_fallbacks: dict[str, str] = field(default_factory=dict)  # "backend@px/variant" -> reason

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write_json(self, path: "str | Path") -> None:
        from .utils import write_text_atomic

        write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")

    def markdown(self) -> str:
        cuda = self.device_type == "cuda"
        head = ["backend", "px", "tokens", "m", "FNA ops", "dense ms", "FNA ms", "speedup", "FLOP bound", "share of bound",
                "cos FNA vs dense", "rel L2 FNA vs dense"]
        if cuda:
            head += ["dense MiB", "FNA MiB", "kernels vs ref rel L2", "CUDA graph dense/FNA"]
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if i in (0, 4) else "---:" for i in range(len(head))) + "|"]
        dense = {(m.backend, m.resolution): m for m in self.measurements if m.variant == "dense"}
        fna = {(m.backend, m.resolution, m.landmarks, m.fna_ops): m for m in self.measurements if m.variant == "fna"}
        for s in self.speedups:
            d, f = dense[(s.backend, s.resolution)], fna[(s.backend, s.resolution, s.landmarks, s.fna_ops)]
            backend = s.backend if f.dtype == self.dtype else f"{s.backend} ({f.dtype})"  # e.g. openvino at bf16
            cells = [backend, str(s.resolution), str(s.tokens), str(s.landmarks), s.fna_ops, _ms(d.median_ms), _ms(f.median_ms),
                     f"{s.speedup:.2f}x", f"{s.flop_bound:.2f}x", f"{100 * s.share_of_bound:.0f}%", _fmt(s.cosine, ".6f"), _fmt(s.rel_l2, ".2e")]
            if cuda:
                kvr = s.kernels_vs_reference["rel_l2"] if s.kernels_vs_reference else None
                cells += [f"{d.peak_mem_mb:.0f}", f"{f.peak_mem_mb:.0f}", _fmt(kvr, ".2e"),
                          f"{'yes' if d.cuda_graph else 'no'}/{'yes' if f.cuda_graph else 'no'}"]
            lines.append("| " + " | ".join(cells) + " |")
        for backend, reason in self.skipped.items():  # a backend asked for and not run: its row says why
            cells = [backend, "-", "-", "-", f"not run: {reason}"] + ["-"] * (len(head) - 5)
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def plot(self, path: "str | Path") -> None:
        """Latency against tokens, log-log: a solid dense line and dashed FNA lines per backend."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            raise ImportError("plots need matplotlib: pip install matplotlib") from None
        fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
        colors = {"torch": "tab:red", "onnxrt": "tab:blue", "openvino": "tab:purple", "trt": "tab:green", "tensorrt-rtx": "tab:olive"}
        for backend in dict.fromkeys(m.backend for m in self.measurements):
            rows = sorted((m for m in self.measurements if m.backend == backend and m.variant == "dense"), key=lambda m: m.tokens)
            ax.plot([m.tokens for m in rows], [m.median_ms for m in rows], "-o", color=colors.get(backend), label=f"{backend} dense")
            lines = sorted({(m.landmarks, m.fna_ops) for m in self.measurements if m.backend == backend and m.variant == "fna"},
                           key=lambda k: (k[0], str(k[1])))
            several_ops = len({ops for _, ops in lines}) > 1
            for (lm, ops), style in zip(lines, ("--s", ":^", "-.v", "--D", ":x", "-.p", "--h")):
                rows = sorted((m for m in self.measurements if m.backend == backend and m.variant == "fna" and m.landmarks == lm and m.fna_ops == ops),
                              key=lambda m: m.tokens)
                label = f"{backend} FNA m={lm}" + (f" ({ops})" if several_ops else "")
                ax.plot([m.tokens for m in rows], [m.median_ms for m in rows], style, color=colors.get(backend), alpha=0.85, label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("tokens N")
        ax.set_ylabel(f"median latency, batch {self.batch} (ms)")
        ax.set_title(f"{self.model} on {self.device} ({self.dtype}): dense vs FNA")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        from .utils import write_bytes_atomic

        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        plt.close(fig)
        write_bytes_atomic(path, buffer.getvalue())


def _ms(value: float) -> str:
    return f"{value:.3f}" if value < 1 else f"{value:.2f}" if value < 100 else f"{value:.1f}"


def _fmt(value: Optional[float], spec: str) -> str:
    return "-" if value is None else format(value, spec)
