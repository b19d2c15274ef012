"""``fna-deploy bench``: dense vs FNA latency, throughput and memory across resolutions."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from ..cli import CliError, user_errors
from .common import check_output_dir, load_cli_model, model_label, weights_seed_for
from .options import (MAX_BATCH, MAX_COUNT, MAX_THREADS, backend_list, count, deprecated, openvino_precision_option, quiet_option,
                      report_option, verbose_option)
from .progress import progress


def _plot_file(path: str) -> Path:
    """--plot DIR -> DIR/latency.png; a path ending in .png still names the file, for one release."""
    target = Path(path)
    if target.suffix.lower() == ".png" and not target.is_dir():
        deprecated("--plot FILE.png", "--plot DIR (the plot is written as DIR/latency.png, like analyze --plot DIR)")
        return target
    check_output_dir(path, "--plot")
    return target / "latency.png"  # the folder is made when the plot is written, not before the timing


def _ints(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CliError(f"{flag}: expected comma-separated integers such as 224,448, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise CliError(f"{flag}: expected positive integers, got {text!r}")
    return values


def _artifact(ctx: click.Context, onnx_path: str, sizes: list[int], ms: list[int], layers: Optional[str], batch: int):
    """The FNA config, resolution, landmarks and layers an --onnx artifact was exported with (after the
    shared validation pass); a flag the user typed that contradicts them is refused."""
    from ..config import FNAConfig
    from ..export.validate import image_input
    from .common import read_onnx

    checked = read_onnx(onnx_path, "--onnx")
    if not checked.metadata.get("fna_config"):
        raise CliError(f"--onnx {onnx_path!r} records no FNA config (a dense or foreign export); give an fna export of MODEL")
    config = FNAConfig.from_json(checked.metadata["fna_config"])
    name, dims = image_input(checked)
    if name != "images" or dims[2] != dims[3] or dims[2] < 1:
        raise CliError(f"--onnx {onnx_path!r} does not take one square image input 'images' [B,C,H,W] as fna-deploy exports do")
    if dims[0] not in (-1, 0, batch):
        raise CliError(f"--onnx {onnx_path!r} was exported for batch {dims[0]}; give --batch {dims[0]} or a dynamic-batch export")
    _refuse_contradictions(ctx, f"--onnx {onnx_path!r}", sizes, ms, layers, dims[2], config)
    return config, [dims[2]], [config.num_landmarks], config.layers


def _refuse_contradictions(ctx: click.Context, what: str, sizes: list[int], ms: list[int], layers: Optional[str], resolution: int,
                           config) -> None:
    """A --resolutions/--landmarks/--layers the user typed that contradicts the artifact's own is refused."""
    import json

    given = {name for name in ("resolutions", "landmarks", "layers")
             if ctx.get_parameter_source(name) not in (None, click.core.ParameterSource.DEFAULT)}
    for flag, typed, kept in (("resolutions", sizes, [resolution]), ("landmarks", ms, [config.num_landmarks])):
        if flag in given and typed != kept:
            raise CliError(f"--{flag} {','.join(map(str, typed))} contradicts {what}, exported with "
                           f"{','.join(map(str, kept))}; drop the flag (it is read from the file)")
    if "layers" in given and layers != config.layers:
        raise CliError(f"--layers {layers} contradicts {what}, exported with layers={json.dumps(config.layers)}; "
                       "drop the flag (it is read from the file)")


def _engine(ctx: click.Context, engine_path: str, chosen: list[str], sizes: list[int], ms: list[int], layers: Optional[str], batch: int):
    """The FNA config, resolution, landmarks and layers an --engine plan's sidecar records; the plan
    must be for the one engine backend in --backends and take --batch."""
    from ..bench import ENGINE_BACKENDS
    from ..config import FNAConfig
    from ..runtimes.tensorrt import BACKEND_RUNTIMES
    from ..trt import EngineSidecar
    from .common import check_input_file

    check_input_file(engine_path, "--engine", "give a .plan written by 'fna-deploy build'")
    engines = [b for b in chosen if b in ENGINE_BACKENDS]
    if len(engines) != 1:
        raise CliError("--engine is timed by one engine backend; put exactly one of trt, tensorrt-rtx in --backends")
    sidecar_path = EngineSidecar.path_for(engine_path)
    try:
        sidecar = EngineSidecar.from_json(sidecar_path.read_text())
    except (OSError, ValueError, TypeError):
        raise CliError(f"--engine {engine_path!r} has no readable sidecar {sidecar_path.name}; rebuild it with 'fna-deploy build'") from None
    if not sidecar.fna_config:
        raise CliError(f"--engine {engine_path!r} records no FNA config (a dense engine); give an engine built from an fna export")
    if sidecar.runtime != BACKEND_RUNTIMES[engines[0]]:
        raise CliError(f"--engine {engine_path!r} was built by {sidecar.runtime}, not for the {engines[0]} backend; "
                       f"use --backends {next(b for b, r in BACKEND_RUNTIMES.items() if r == sidecar.runtime)}")
    dims = next(iter(sidecar.profile.values()), {}).get("opt", [])
    if len(dims) != 4 or dims[2] != dims[3]:
        raise CliError(f"--engine {engine_path!r} does not take one square image input [B,C,H,W] as fna-deploy engines do")
    if not sidecar.min_batch <= batch <= sidecar.max_batch:
        raise CliError(f"--engine {engine_path!r} takes batch {sidecar.min_batch}..{sidecar.max_batch}; give --batch in that range")
    config = FNAConfig.from_dict(sidecar.fna_config)
    _refuse_contradictions(ctx, f"--engine {engine_path!r}", sizes, ms, layers, dims[2], config)
    return config, [dims[2]], [config.num_landmarks], config.layers


def _same_model(module, config, onnx_path: str, batch: int) -> None:
    """The artifact must be MODEL exported (same weights, same FNA config): one input through both."""
    from ..export.check import check_parity
    from ..patching import model_info, patch, unpatch

    info = model_info(module)
    patch(module, config)
    try:
        results = check_parity(module, onnx_path, (batch, info.in_chans, *info.img_size), [batch], allow_degenerate=True)
    finally:
        unpatch(module)
    failed = [r for r in results if not r.passed]
    if failed:
        raise CliError(f"--onnx {onnx_path!r} does not compute what MODEL does with its FNA config ({failed[0].describe()}); "
                       "give the MODEL (and --checkpoint) it was exported from")


@click.command()
@click.argument("model")
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="Weights for a timm:NAME or hf:DIR MODEL.")
@click.option("--arch", metavar="timm:NAME", help="Architecture of a bare weights file given as MODEL.")
@click.option("--allow-pickle", is_flag=True, help="Allow a whole pickled module (.pt): runs code from the file.")
@click.option("--resolutions", default="224,448,896,1024", show_default=True, help="Comma-separated input sizes in pixels.")
@click.option("--landmarks", default="64,128", show_default=True, help="Comma-separated numbers of landmarks m.")
@click.option("--layers", default=None, metavar="SPEC", help="Blocks with FNA (default: the second half).")
@click.option("--backends", default="torch,onnxrt", show_default=True, help="Comma-separated: torch, onnxrt, openvino (CPU), trt, tensorrt-rtx (engines with the fna plugins). A backend that cannot run here is reported with the reason; if you named it, the exit code is 2.")
@openvino_precision_option()
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="auto: cuda when PyTorch sees a GPU, else cpu.")
@click.option("--dtype", type=click.Choice(["fp16", "bf16", "fp32"]), default=None,
              help="Weights and input precision of the torch backend [default: fp16 on cuda, fp32 on cpu; cpu runs fp32 only].")
@click.option("--cuda-graphs/--no-cuda-graphs", default=None,
              help="Capture dense and FNA in CUDA graphs after warm-up and time their replays [default: on for cuda]; "
                   "a variant that cannot be captured is timed eagerly and the reason printed.")
@click.option("--fna-ops", type=click.Choice(["auto", "reference", "both"]), default="auto", show_default=True,
              help="What runs the fna ops on cuda: auto (our kernels when libfna.so is built, else the PyTorch reference), "
                   "reference, or both (each timed).")
@click.option("--onnx", "onnx_path", type=click.Path(dir_okay=False), metavar="FILE.onnx",
              help="An fna export of MODEL to bench: its stored FNA config and resolution are used (flags that contradict "
                   "them are refused), and ONNX Runtime (or OpenVINO) times the file itself as the FNA variant.")
@click.option("--engine", "engine_path", type=click.Path(dir_okay=False), metavar="PLAN",
              help="A plan from 'fna-deploy build' (fna export of MODEL) to time as the FNA variant of the trt or tensorrt-rtx "
                   "backend; its sidecar's FNA config and resolution are used. Without it those backends build their own engines.")
@click.option("--plugin", type=click.Path(dir_okay=False), help="fna plugin library for the trt / tensorrt-rtx engines "
              "[default: the one 'fna-deploy plugin build' made].")
@click.option("--batch", type=count(1, MAX_BATCH), default=1, show_default=True, help="Images per timed call.")
@click.option("--warmup", type=count(0, MAX_COUNT), default=1, show_default=True, help="Untimed calls per variant before timing.")
@click.option("--iters", type=count(1, MAX_COUNT), default=5, show_default=True, help="Timed calls per variant (the median is reported).")
@click.option("--threads", type=count(1, MAX_THREADS), default=None,
              help="CPU threads for torch, ONNX Runtime and OpenVINO (default: the free cores: this process's CPU affinity minus the "
                   "load average, at least 1; a warning when the machine is too busy for clean timings).")
@report_option("Write the measurements as JSON to FILE.")
@click.option("--plot", "plot_path", type=click.Path(file_okay=False), metavar="DIR", help="Write a PNG of latency against tokens (log-log) into DIR, as latency.png.")
@quiet_option()
@verbose_option("Also print the machine the numbers come from (CPU, threads, library versions).")
@click.pass_context
@user_errors
def bench(ctx: click.Context, model: str, checkpoint: Optional[str], arch: Optional[str], allow_pickle: bool, resolutions: str, landmarks: str,
          layers: Optional[str], backends: str, openvino_precision: str, device: str, dtype: Optional[str], cuda_graphs: Optional[bool],
          fna_ops: str, onnx_path: Optional[str], engine_path: Optional[str], plugin: Optional[str], batch: int, warmup: int, iters: int, threads: Optional[int], report_path: Optional[str],
          plot_path: Optional[str], quiet: bool, verbose: bool) -> None:
    """Time MODEL dense vs with FNA, per backend and resolution, and compare with the FLOP bound.

    Variants are timed interleaved in one run. Beside each speedup: its FLOP bound (the speedup if
    only the replaced attention cores got cheaper), the share of the bound reached, and the FNA
    output's distance from the dense one (cosine, relative L2). On cuda: fp16, CUDA graphs,
    CUDA-event timing, peak memory per variant above inputs and weights, and which implementation
    ran the fna ops (our kernels vs the PyTorch reference, and their difference in the whole model).
    """
    import torch
    from rich.console import Console
    from rich.markup import escape

    from ..bench import BACKENDS, resolve_cuda_graphs, resolve_device, resolve_dtype, resolve_fna_ops, run_bench
    from ..config import FNAConfig

    sizes = _ints(resolutions, "--resolutions")
    ms = _ints(landmarks, "--landmarks")
    stored = None
    if onnx_path is not None:
        stored, sizes, ms, layers = _artifact(ctx, onnx_path, sizes, ms, layers, batch)
    chosen = backend_list(backends, BACKENDS)
    if engine_path is not None:
        if onnx_path is not None:
            raise CliError("--onnx and --engine each bring their own FNA variant; give one of them per run")
        stored, sizes, ms, layers = _engine(ctx, engine_path, chosen, sizes, ms, layers, batch)
    if plugin is not None:
        from ..native import check_plugin_library

        check_plugin_library(plugin)
    if openvino_precision != "f32" and "openvino" not in chosen:
        raise CliError("--openvino-precision applies to the openvino backend; add openvino to --backends")
    FNAConfig(layers=layers)  # syntax check before any work
    device = resolve_device(device)  # ValueError (one sentence, exit 2) for cuda without a GPU
    dtype = resolve_dtype(dtype, device)
    cuda_graphs = resolve_cuda_graphs(cuda_graphs, device)
    resolve_fna_ops(fna_ops, device)  # --fna-ops both without our kernels: refused before any work
    if report_path:
        from ..export.graph import check_writable

        check_writable(Path(report_path))
    if threads:
        torch.set_num_threads(threads)

    seed = weights_seed_for(model, checkpoint, arch, None)  # the same random weights as export's default
    label = model_label(model, arch) + (f", random weights (seed {seed})" if seed is not None else "")

    def load(res: int):
        return load_cli_model(model, checkpoint, arch, allow_pickle, res, seed)

    if stored is not None:
        _same_model(load(sizes[0]), stored, onnx_path, batch)
    plot_file = _plot_file(plot_path) if plot_path else None  # a bad --plot fails before the timing
    console = Console()

    def say(line: str) -> None:  # a variant timed eagerly, and why (error text may hold brackets: no markup)
        console.print(f"[yellow]{escape(line)}[/yellow]", highlight=False)

    with progress(Console(stderr=True), quiet=quiet) as reporter:
        update = reporter.bar

        report = run_bench(load, model_label=label, resolutions=sizes, landmarks=ms, layers=layers, backends=chosen,
                           openvino_precision=openvino_precision,
                           device=device, dtype=dtype, cuda_graphs=cuda_graphs, fna_ops=fna_ops, batch=batch, warmup=warmup,
                           iters=iters, threads=threads, progress=update, log=say, config=stored, onnx_artifact=onnx_path,
                           engine=engine_path, plugin=plugin)
    for backend, reason in report.skipped.items():
        console.print(f"[yellow]skipped {backend}:[/yellow] {escape(reason)}")
    timing = ("CUDA events, " + ("CUDA graphs" if report.cuda_graphs else "eager")) if report.device_type == "cuda" else "host clock"
    console.print(f"\n{report.model} on {report.device}, {report.dtype}, batch {report.batch}, median of {report.iters} "
                  f"(interleaved, {timing}); torch FNA ops: {report.machine['fna_ops']} ({report.machine['fna_ops_note']})\n",
                  highlight=False)
    click.echo(report.markdown())
    if report_path:
        report.write_json(report_path)
        console.print(f"report: {report_path}")
    if plot_file is not None:
        plot_file.parent.mkdir(parents=True, exist_ok=True)
        report.plot(plot_file)
        console.print(f"plot: {plot_file}")
    if verbose:
        console.print("machine: " + ", ".join(f"{k} {v}" for k, v in report.machine.items()), highlight=False)
    named = ctx.get_parameter_source("backends") not in (None, click.core.ParameterSource.DEFAULT)
    unmet = [b for b in chosen if b in report.skipped]
    if unmet and (named or not report.measurements):  # the request could not be met: never exit 0 with an empty table
        raise CliError(f"--backends {unmet[0]} could not run here: {report.skipped[unmet[0]]}")
