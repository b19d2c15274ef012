"""Latency, throughput and memory of dense vs FNA, per backend and resolution, in one run.

Variants of one (backend, resolution) are timed interleaved (dense, fna m1, fna m2, dense, ...),
so a speedup compares measurements taken under the same machine conditions. Beside every speedup
the report gives its FLOP bound (fna_deploy.flops) and the share of the bound reached.
"""

from __future__ import annotations

import io
import json
import resource
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from torch import nn

from .config import FNAConfig
from .flops import estimate
from .patching import model_info, patch, unpatch

BACKENDS = ("torch", "onnxrt", "trt")


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
    memory_kind: str  # "cuda_max_allocated" or "process_peak_rss"


@dataclass
class Speedup:
    backend: str
    resolution: int
    tokens: int
    landmarks: int
    speedup: float
    flop_bound: float
    share_of_bound: float


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write_json(self, path: "str | Path") -> None:
        from .utils import write_text_atomic

        write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")

    def markdown(self) -> str:
        lines = [
            "| backend | px | tokens | m | dense ms | FNA ms | speedup | FLOP bound | share of bound |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        dense = {(m.backend, m.resolution): m for m in self.measurements if m.variant == "dense"}
        fna = {(m.backend, m.resolution, m.landmarks): m for m in self.measurements if m.variant == "fna"}
        for s in self.speedups:
            d, f = dense[(s.backend, s.resolution)], fna[(s.backend, s.resolution, s.landmarks)]
            lines.append(
                f"| {s.backend} | {s.resolution} | {s.tokens} | {s.landmarks} | {d.median_ms:.1f} | {f.median_ms:.1f} | "
                f"{s.speedup:.2f}x | {s.flop_bound:.2f}x | {100 * s.share_of_bound:.0f}% |"
            )
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
        colors = {"torch": "tab:red", "onnxrt": "tab:blue", "trt": "tab:green"}
        for backend in dict.fromkeys(m.backend for m in self.measurements):
            rows = sorted((m for m in self.measurements if m.backend == backend and m.variant == "dense"), key=lambda m: m.tokens)
            ax.plot([m.tokens for m in rows], [m.median_ms for m in rows], "-o", color=colors.get(backend), label=f"{backend} dense")
            landmark_counts = sorted({m.landmarks for m in self.measurements if m.backend == backend and m.variant == "fna"})
            for lm, style in zip(landmark_counts, ("--s", ":^", "-.v", "--D", ":x")):
                rows = sorted((m for m in self.measurements if m.backend == backend and m.landmarks == lm), key=lambda m: m.tokens)
                ax.plot([m.tokens for m in rows], [m.median_ms for m in rows], style, color=colors.get(backend), alpha=0.85, label=f"{backend} FNA m={lm}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("tokens N")
        ax.set_ylabel(f"median latency, batch {self.batch} (ms)")
        ax.set_title(f"{self.model} on {self.device}: dense vs FNA")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        from .utils import write_bytes_atomic

        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        plt.close(fig)
        write_bytes_atomic(path, buffer.getvalue())


def _peak_memory_mb(device: str) -> tuple[float, str]:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20, "cuda_max_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process_peak_rss"


def _time_interleaved(runs: dict[str, Callable[[], Any]], warmup: int, iters: int, device: str) -> dict[str, dict[str, float]]:
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    stats: dict[str, dict[str, float]] = {}
    times: dict[str, list[float]] = {k: [] for k in runs}
    for key, run in runs.items():
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        for _ in range(max(warmup, 1)):
            run()
        sync()
        mem, kind = _peak_memory_mb(device)
        stats[key] = {"peak_mem_mb": mem, "memory_kind": kind}
    for _ in range(iters):
        for key, run in runs.items():
            sync()
            started = time.perf_counter()
            run()
            sync()
            times[key].append((time.perf_counter() - started) * 1e3)
    for key, values in times.items():
        stats[key]["median_ms"] = statistics.median(values)
        stats[key]["p90_ms"] = float(np.percentile(values, 90))
    return stats


def run_bench(
    load: Callable[[int], nn.Module],
    *,
    model_label: str,
    resolutions: Sequence[int],
    landmarks: Sequence[int] = (64,),
    layers: "str | list[int] | None" = None,
    backends: Sequence[str] = ("torch", "onnxrt"),
    device: str = "cpu",
    batch: int = 1,
    warmup: int = 1,
    iters: int = 5,
    threads: Optional[int] = None,
    progress: Optional[Callable[[str, int, int], None]] = None,
    workdir: Optional[str] = None,
) -> BenchReport:
    """Benchmark dense vs FNA for each resolution; ``load(resolution)`` builds the model."""
    if workdir is None:  # exports go to a temporary folder of our own, removed on every exit path
        options = dict(locals())
        with tempfile.TemporaryDirectory(prefix="fna-bench-") as own:
            return run_bench(**{**options, "workdir": own})
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise ValueError(f"unknown backend {unknown[0]!r}; choose from {', '.join(BACKENDS)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA GPU is visible here; use --device cpu")
    report = BenchReport(model_label, torch.cuda.get_device_name(0) if device == "cuda" else "cpu", batch, layers, iters)
    report.machine = {"torch": torch.__version__, "threads": threads or torch.get_num_threads(), "fna_ops": _fna_ops_on(device)}
    active = list(backends)
    if "onnxrt" in active:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            report.skipped["onnxrt"] = "onnxruntime is not installed"
    if "trt" in active:
        from .trt import TensorRTUnavailable, require_tensorrt

        try:
            require_tensorrt()
            report.skipped["trt"] = "the trt backend is timed with fna-deploy build engines; not run by bench yet"
        except TensorRTUnavailable as exc:
            report.skipped["trt"] = str(exc)
    active = [b for b in active if b not in report.skipped]
    total = len(resolutions) * len(active)
    done = 0
    tmp = Path(workdir or tempfile.mkdtemp(prefix="fna-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    for res in resolutions:
        model = load(res).to(device).eval()
        info = model_info(model)
        tokens = info.num_tokens((res, res))
        usable = [m for m in landmarks if m <= tokens]
        if not usable:
            raise ValueError(f"at {res}px the model has {tokens} tokens: fewer than every --landmarks value")
        for backend in active:
            if progress:
                progress(f"{backend} @ {res}px", done, total)
            x = torch.randn(batch, info.in_chans, res, res, device=device)
            runs: dict[str, Callable[[], Any]] = {}
            if backend == "torch":
                import copy

                variants = {"dense": unpatch(copy.deepcopy(model))}
                for m in usable:
                    variants[f"fna{m}"] = patch(copy.deepcopy(model), FNAConfig(num_landmarks=m, layers=layers))
                for key, module in variants.items():
                    runs[key] = (lambda mod: lambda: _no_grad(mod, x))(module)
            else:  # onnxrt
                import onnxruntime as ort

                from .export import export_onnx

                options = ort.SessionOptions()
                if threads:
                    options.intra_op_num_threads = threads
                options.log_severity_level = 3
                feed = {"images": x.cpu().numpy()}
                sessions = {}
                unpatch(model)
                path = tmp / f"dense_{res}.onnx"
                export_onnx(model, None, path, target="dense", input_shape=tuple(x.shape), dynamic_batch=False, check=False)
                sessions["dense"] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                for m in usable:
                    path = tmp / f"fna{m}_{res}.onnx"
                    export_onnx(model, FNAConfig(num_landmarks=m, layers=layers), path, input_shape=tuple(x.shape), dynamic_batch=False, check=False)
                    sessions[f"fna{m}"] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                for key, session in sessions.items():
                    runs[key] = (lambda s: lambda: s.run(None, feed))(session)
            stats = _time_interleaved(runs, warmup, iters, device if backend == "torch" else "cpu")
            for key, st in stats.items():
                m = None if key == "dense" else int(key[3:])
                report.measurements.append(
                    Measurement(backend, res, tokens, "dense" if m is None else "fna", m, round(st["median_ms"], 3), round(st["p90_ms"], 3),
                                round(batch * 1e3 / st["median_ms"], 2), round(st["peak_mem_mb"], 1), st["memory_kind"])
                )
            n_fna = len(FNAConfig(layers=layers).resolve_layers(info.num_blocks))
            for m in usable:
                speed = stats["dense"]["median_ms"] / stats[f"fna{m}"]["median_ms"]
                bound = estimate(tokens, info.embed_dim, info.num_heads, info.num_blocks, n_fna, m).bound
                report.speedups.append(Speedup(backend, res, tokens, m, speed, bound, speed / bound))
            done += 1
    if progress:
        progress("done", total, total)
    return report


def _fna_ops_on(device: str) -> str:
    """Which implementation the torch backend's fna ops run: on CUDA, our kernels when the native
    library is built (registered for the custom ops by loading it), else the PyTorch reference."""
    if device != "cuda":
        return "PyTorch reference (CPU)"
    from .native import NativeLibraryError, load

    try:
        library = load()
    except NativeLibraryError as exc:
        return f"PyTorch reference (native kernels not loaded: {exc})"
    return "fna CUDA kernels" if library.cuda_registered else "PyTorch reference (library built without CUDA)"


def _no_grad(module: nn.Module, x: torch.Tensor) -> Any:
    with torch.no_grad():
        return module(x)
