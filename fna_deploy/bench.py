"""Latency, throughput and memory of dense vs FNA, per backend and resolution, in one run.

Variants of one (backend, resolution) are timed interleaved (dense, fna m1, fna m2, dense, ...),
so a speedup compares measurements taken under the same machine conditions. Beside every speedup
the report gives its FLOP bound (fna_deploy.flops), the share of the bound reached, and how far the
FNA output is from the dense one (cosine, relative L2 on the model output).

On CUDA the torch backend measures what a GPU user runs: weights and input in ``dtype`` (fp16 by
default), each variant captured in a ``torch.cuda.CUDAGraph`` after its warm-up and timed by
replaying it (falling back to eager, with the reason recorded, where capture fails or the replay
does not compute what eager does), CUDA-event timing, and peak memory per variant above the
baseline of inputs and weights. Which implementation the fna ops ran is named per row: our
kernels (libfna.so, registered for the custom ops by fna_deploy.native) or the PyTorch reference.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import resource
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch
from torch import nn

from .config import FNAConfig
from .flops import estimate
from .timing import cuda_event_timer, host_timer, summary, time_interleaved  # noqa: F401  (bench.host_timer etc. stay importable)
from .patching import model_info, patch, unpatch
from .utils import choose_threads, resolve_device
# the torch runtime (which implementation runs the fna ops, CUDA graphs) and the report: re-exported
# here because bench is where callers have always found them
from .bench_report import BenchReport, Measurement, Speedup  # noqa: F401
from .runtimes.pytorch import (FNA_KERNELS, FNA_OPS, GRAPH_CHECK_REL_L2, REFERENCE_OPS, Capture, Prepared,  # noqa: F401
                               cuda_graph_capture, fna_ops_on, input_refill, kernels_disabled, output_metrics, prepare_variant,
                               reference_ops, resolve_fna_ops)

BACKENDS = ("torch", "onnxrt", "openvino", "trt", "tensorrt-rtx")
ENGINE_BACKENDS = ("trt", "tensorrt-rtx")  # engines built (or taken with --engine) and run by fna_deploy.runtimes.tensorrt
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
ONNX_FUNCTIONS = "ONNX Runtime (fna function bodies)"
OPENVINO_FUNCTIONS = "OpenVINO (fna function bodies inlined)"
ENGINE_PLUGINS = {"trt": "TensorRT (fna plugins)", "tensorrt-rtx": "TensorRT-RTX (fna plugins)"}


# ---------------------------------------------------------------- options


def resolve_dtype(dtype: Optional[str], device: str) -> str:
    """Default fp16 on CUDA, fp32 on CPU. Half precision on the CPU is refused: its speed there says
    nothing about a deployment (and ONNX Runtime's CPU path is fp32)."""
    if dtype is None:
        return "fp16" if device == "cuda" else "fp32"
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if device != "cuda" and dtype != "fp32":
        raise ValueError(f"--dtype {dtype} is timed on --device cuda only; on the CPU bench runs fp32 (drop --dtype or pass fp32)")
    return dtype


def resolve_cuda_graphs(cuda_graphs: Optional[bool], device: str) -> bool:
    """Default on for CUDA; asking for graphs on the CPU is a ValueError."""
    if cuda_graphs is None:
        return device == "cuda"
    if cuda_graphs and device != "cuda":
        raise ValueError("--cuda-graphs needs --device cuda (there are no CUDA graphs on the CPU); drop it or pass --no-cuda-graphs")
    return bool(cuda_graphs)


@contextlib.contextmanager
def _memory_probe(device: str) -> Iterator[dict[str, Any]]:
    """Peak memory of the block: on CUDA max allocated minus what was allocated when it began
    (inputs, weights, earlier variants' graphs); on the CPU the process's peak RSS (monotone)."""
    result: dict[str, Any] = {}
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        yield result
        torch.cuda.synchronize()
        result.update(peak_mem_mb=(torch.cuda.max_memory_allocated() - base) / 2**20, baseline_mem_mb=base / 2**20,
                      memory_kind="cuda_max_allocated_above_baseline")
    else:
        yield result
        result.update(peak_mem_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, baseline_mem_mb=None,
                      memory_kind="process_peak_rss")


# ---------------------------------------------------------------- the benchmark


@dataclass
class _Variant:
    key: str
    landmarks: Optional[int]
    fna_ops: Optional[str]
    fn: Callable[[], Any]


def run_bench(load: Callable[[int], nn.Module], *, threads: Optional[int] = None, log: Optional[Callable[[str], None]] = None,
              **options: Any) -> BenchReport:
    """:func:`_run_bench` with ``threads`` CPU threads (default: :func:`choose_threads`, the free
    cores), restored afterwards; a busy machine is reported through ``log``."""
    chosen, warning = choose_threads(threads)
    if warning and log is not None:
        log(f"warning: {warning}")
    previous = torch.get_num_threads()
    torch.set_num_threads(chosen)
    try:
        return _run_bench(load, threads=chosen, log=log, **options)
    finally:
        torch.set_num_threads(previous)


def _run_bench(
    load: Callable[[int], nn.Module],
    *,
    model_label: str,
    resolutions: Sequence[int],
    landmarks: Sequence[int] = (64,),
    layers: "str | list[int] | None" = None,
    backends: Sequence[str] = ("torch", "onnxrt"),
    openvino_precision: str = "f32",
    device: str = "cpu",
    dtype: Optional[str] = None,
    cuda_graphs: Optional[bool] = None,
    fna_ops: str = "auto",
    batch: int = 1,
    warmup: int = 1,
    iters: int = 5,
    threads: Optional[int] = None,
    progress: Optional[Callable[[str, int, int], None]] = None,
    workdir: Optional[str] = None,
    log: Optional[Callable[[str], None]] = None,
    config: Optional[FNAConfig] = None,
    onnx_artifact: "str | Path | None" = None,
    engine: "str | Path | None" = None,
    plugin: Optional[str] = None,
) -> BenchReport:
    """Benchmark dense vs FNA for each resolution; ``load(resolution)`` builds the model.

    ``device`` auto|cpu|cuda; ``dtype`` fp16|bf16|fp32 (default fp16 on CUDA, fp32 on CPU);
    ``cuda_graphs`` (default on for CUDA); ``fna_ops``: ``auto`` (our kernels where loaded, else the
    PyTorch reference), ``reference`` (always the reference), ``both`` (time both on CUDA).
    ``openvino_precision`` f32|bf16 for the openvino backend (the precision it reports is recorded).
    ``log`` receives one line per noteworthy event (a graph falling back to eager).
    ``config``: the FNA configuration of the FNA variants but for ``num_landmarks`` (an artifact's
    stored config; default: ``layers`` and the defaults). ``onnx_artifact``: an exported ONNX file
    timed as the onnxrt FNA variant of its own landmark count instead of a fresh export.
    ``engine``: a built plan timed as the trt / tensorrt-rtx FNA variant (its sidecar's landmark
    count) instead of a freshly built engine; ``plugin`` the fna plugin library for engine builds.
    A backend that cannot run here is left out with its reason in ``report.skipped``.
    """
    if workdir is None:  # exports go to a temporary folder of our own, removed on every exit path
        options = dict(locals())
        with tempfile.TemporaryDirectory(prefix="fna-bench-") as own:
            return _run_bench(**{**options, "workdir": own})
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise ValueError(f"unknown backend {unknown[0]!r}; choose from {', '.join(BACKENDS)}")
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    graphs = resolve_cuda_graphs(cuda_graphs, device)
    torch_impls, implementation, why = resolve_fna_ops(fna_ops, device)
    cuda = device == "cuda"
    report = BenchReport(model_label, torch.cuda.get_device_name(0) if cuda else "cpu", batch, layers, iters,
                         device_type=device, dtype=dtype, cuda_graphs=graphs, timing="cuda_events" if cuda else "host_clock",
                         warmup=warmup)
    report.machine = {"torch": torch.__version__, "threads": threads or torch.get_num_threads(), "fna_ops": implementation,
                      "fna_ops_note": why}
    if cuda:
        report.machine["cuda"] = torch.version.cuda
    active = list(backends)
    for backend in active:
        reason = backend_unavailable(backend, device)
        if reason:
            report.skipped[backend] = reason
        elif backend == "openvino":
            from .runtimes.openvino import version

            report.machine["openvino"] = version()
    active = [b for b in active if b not in report.skipped]
    total = len(resolutions) * len(active)
    done = 0
    tmp = Path(workdir or tempfile.mkdtemp(prefix="fna-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    torch_dtype = DTYPES[dtype]

    def fna_config(m: int) -> FNAConfig:
        return FNAConfig(num_landmarks=m, layers=layers) if config is None else dataclasses.replace(config, num_landmarks=m)

    if onnx_artifact is not None:
        if len(landmarks) != 1:
            raise ValueError("an ONNX artifact is timed at its own landmark count only; give exactly one")
        report.machine["onnx_artifact"] = str(onnx_artifact)
    if engine is not None:
        if len(landmarks) != 1:
            raise ValueError("an engine is timed at its own landmark count only; give exactly one")
        report.machine["engine"] = str(engine)
    for res in resolutions:
        model = load(res).to(device=device, dtype=torch_dtype).eval()
        info = model_info(model)
        tokens = info.num_tokens((res, res))
        usable = [m for m in landmarks if m <= tokens]
        if not usable:
            raise ValueError(f"at {res}px the model has {tokens} tokens: fewer than every --landmarks value")
        for backend in active:
            if progress:
                progress(f"{backend} @ {res}px", done, total)
            x = torch.randn(batch, info.in_chans, res, res, device=device, dtype=torch_dtype)
            variants: list[_Variant] = []
            if backend == "torch":
                variants.append(_Variant("dense", None, None, _call(unpatch(model), x)))
                for m in usable:
                    fna_model = patch(copy.deepcopy(model), fna_config(m))
                    for impl in torch_impls:
                        # switching kernels off only where libfna.so registered them for the ops
                        fn = _call(fna_model, x, reference=impl == REFERENCE_OPS and implementation == FNA_KERNELS)
                        variants.append(_Variant(f"fna{m}" + ("-ref" if impl == REFERENCE_OPS and fna_ops == "both" else ""), m, impl, fn))
            elif backend in ENGINE_BACKENDS:
                variants, onnx_dtype = _engine_variants(backend, model, x, usable, fna_config, tmp, res, dtype, engine, plugin)
            else:  # onnxrt, openvino
                variants, onnx_dtype = _onnx_variants(backend, model, x, usable, fna_config, threads, tmp, res,
                                                      openvino_precision, onnx_artifact, device)
            stats, outputs = _measure(variants, report, backend, res, x if backend == "torch" else None, warmup, iters,
                                      device if backend == "torch" else "cpu", graphs and backend == "torch", log)
            by_key = {v.key: v for v in variants}
            for key, st in stats.items():
                v = by_key[key]
                report.measurements.append(Measurement(
                    backend, res, tokens, "dense" if v.landmarks is None else "fna", v.landmarks, round(st["median_ms"], 4),
                    round(st["p90_ms"], 4), round(batch * 1e3 / st["median_ms"], 2), round(st["peak_mem_mb"], 1), st["memory_kind"],
                    fna_ops=v.fna_ops, dtype=dtype if backend == "torch" else onnx_dtype, cuda_graph=st["cuda_graph"],
                    graph_fallback=st["fallback"],
                    baseline_mem_mb=None if st["baseline_mem_mb"] is None else round(st["baseline_mem_mb"], 1)))
            n_fna = len(fna_config(1).resolve_layers(info.num_blocks))
            for v in variants:
                if v.landmarks is None:
                    continue
                speed = stats["dense"]["median_ms"] / stats[v.key]["median_ms"]
                bound = estimate(tokens, info.embed_dim, info.num_heads, info.num_blocks, n_fna, v.landmarks).bound
                diff = output_metrics(outputs["dense"], outputs[v.key])
                report.speedups.append(Speedup(backend, res, tokens, v.landmarks, speed, bound, speed / bound, v.fna_ops,
                                               round(diff["cosine"], 8), diff["rel_l2"],
                                               _kernels_vs_reference(v, variants, outputs)))
            del variants, outputs
            if cuda:
                torch.cuda.empty_cache()
            done += 1
    if progress:
        progress("done", total, total)
    return report


def _call(model: nn.Module, x: torch.Tensor, reference: bool = False) -> Callable[[], Any]:
    def run() -> Any:
        with torch.no_grad(), (reference_ops() if reference else contextlib.nullcontext()):
            return model(x)

    return run


def backend_unavailable(backend: str, device: str) -> Optional[str]:
    """None when ``backend`` can be timed on ``device`` here, else one sentence saying why not."""
    if backend == "torch":
        return None
    if backend == "onnxrt":
        from .runtimes.onnxrt import OnnxrtRunner

        return OnnxrtRunner.unavailable(device)
    if backend == "openvino":
        from .runtimes.openvino import OpenVINORunner

        return OpenVINORunner.unavailable(device)
    from .runtimes.tensorrt import BACKEND_RUNTIMES, unavailable

    return unavailable(BACKEND_RUNTIMES[backend])


def _runner_variants(runners: list[tuple[str, Optional[int], Any]], feed: dict[str, np.ndarray], fna_ops: str) -> list[_Variant]:
    """One timed variant per (key, landmarks, loaded Runner): ``infer`` on the bench input, first output."""
    return [_Variant(key, m, None if m is None else fna_ops, (lambda r: lambda: r.infer(feed)[0])(runner.load()))
            for key, m, runner in runners]


def _engine_variants(backend, model, x, usable, fna_config, tmp: Path, res: int, dtype: str, engine: "str | Path | None" = None,
                     plugin: Optional[str] = None) -> tuple[list[_Variant], str]:
    """Dense and FNA engines of ``model`` (built here for the backend's runtime, or ``engine`` as the
    FNA variant) run by fna_deploy.runtimes.tensorrt; (variants, precision they were built at)."""
    from .export import export_onnx
    from .runtimes.tensorrt import BACKEND_RUNTIMES, EngineRunner, build_for_bench, engine_landmarks

    runtime, batch, fp16 = BACKEND_RUNTIMES[backend], int(x.shape[0]), dtype == "fp16"
    unpatch(model)
    model = model.float()
    runners: list[tuple[str, Optional[int], Any]] = []
    for key, m in [("dense", None)] + [(f"fna{m}", m) for m in usable]:
        if m is not None and engine is not None:
            runners.append((f"fna{engine_landmarks(engine)}", engine_landmarks(engine), EngineRunner(engine, plugin, name=backend)))
            break
        onnx_path, plan = tmp / f"{backend}_{key}_{res}.onnx", tmp / f"{backend}_{key}_{res}.plan"
        export_onnx(model, None if m is None else fna_config(m), onnx_path, target="dense" if m is None else "trt",
                    input_shape=tuple(x.shape), dynamic_batch=False, check=False)
        build_for_bench(onnx_path, plan, runtime, batch=batch, fp16=fp16, plugin=plugin)
        runners.append((key, m, EngineRunner(plan, plugin, name=backend)))
    feed = {"images": x.detach().to("cpu", torch.float32).numpy()}
    return _runner_variants(runners, feed, ENGINE_PLUGINS[backend]), "fp16" if fp16 else "fp32"


def _onnx_variants(backend, model, x, usable, fna_config, threads, tmp: Path, res: int, openvino_precision: str = "f32",
                   artifact: "str | Path | None" = None, device: str = "cpu") -> tuple[list[_Variant], str]:
    """Dense and FNA exports of ``model`` run by ONNX Runtime or OpenVINO (CPU); (variants, precision they ran).
    ``artifact``: an exported FNA file timed as the FNA variant (its own landmark count), as it would be served."""
    from .export import export_onnx

    feed = {"images": x.cpu().numpy()}
    unpatch(model)
    paths: list[tuple[str, Optional[int], Path]] = [("dense", None, tmp / f"dense_{res}.onnx")]
    export_onnx(model, None, paths[0][2], target="dense", input_shape=tuple(x.shape), dynamic_batch=False, check=False)
    for m in usable:
        if artifact is not None:
            paths.append((f"fna{m}", m, Path(artifact)))
            continue
        paths.append((f"fna{m}", m, tmp / f"fna{m}_{res}.onnx"))
        export_onnx(model, fna_config(m), paths[-1][2], input_shape=tuple(x.shape), dynamic_batch=False, check=False)
    if backend == "openvino":
        from .runtimes.openvino import OpenVINORunner

        runners = [(key, m, OpenVINORunner(path, openvino_precision, threads)) for key, m, path in paths]
        variants = _runner_variants(runners, feed, OPENVINO_FUNCTIONS)
        ran = runners[-1][2].details["precision"]
        return variants, {"f32": "fp32", "f16": "fp16"}.get(ran, ran)
    from .runtimes.onnxrt import OnnxrtRunner

    return _runner_variants([(key, m, OnnxrtRunner(path, threads, device)) for key, m, path in paths], feed, ONNX_FUNCTIONS), "fp32"


def _measure(variants: list[_Variant], report: BenchReport, backend: str, res: int, x: Optional[torch.Tensor], warmup: int,
             iters: int, device: str, graphs: bool, log: Optional[Callable[[str], None]]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Warm up (and capture) each variant under a memory probe, then time them interleaved."""
    cuda = device == "cuda"
    stats: dict[str, dict[str, Any]] = {}
    outputs: dict[str, Any] = {}
    runs: dict[str, Callable[[], Any]] = {}
    refill = input_refill(x) if graphs and x is not None else None
    for v in variants:
        with _memory_probe(device) as mem:
            prepared = prepare_variant(v.fn, warmup=warmup, capture=cuda_graph_capture if graphs else None, refill=refill,
                                       sync=torch.cuda.synchronize if cuda else (lambda: None))
        if prepared.fallback:
            report.graph_fallbacks[f"{backend}@{res}px/{v.key}"] = prepared.fallback
            if log:
                log(f"{backend} @ {res}px {v.key}: no CUDA graph, timed eagerly: {prepared.fallback}")
        stats[v.key] = {**mem, "cuda_graph": prepared.cuda_graph, "fallback": prepared.fallback}
        outputs[v.key] = prepared.output
        runs[v.key] = prepared.run
    times = time_interleaved(runs, iters, cuda_event_timer if cuda else host_timer)
    for key, values in times.items():
        stats[key].update(summary(values))
    return stats, outputs


def _kernels_vs_reference(v: _Variant, variants: list[_Variant], outputs: dict[str, Any]) -> Optional[dict[str, float]]:
    """Where our kernels ran: the whole model's output with them vs with the PyTorch reference ops."""
    if v.fna_ops != FNA_KERNELS:
        return None
    ref = next((w for w in variants if w.landmarks == v.landmarks and w.fna_ops == REFERENCE_OPS), None)
    if ref is not None:
        reference_out = outputs[ref.key]
    else:
        with reference_ops():
            reference_out = v.fn()  # eager, on the bench input
    metrics = output_metrics(reference_out, outputs[v.key])
    return {"rel_l2": metrics["rel_l2"], "cosine": metrics["cosine"], "max_abs": metrics["max_abs"]}
