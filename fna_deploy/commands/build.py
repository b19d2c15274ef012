"""``fna-deploy build``: a TensorRT (or TensorRT-RTX) engine from an fna ONNX export, with the fna
plugins; ``--check`` runs the runtime's ONNX parser against the plugin contract instead."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from ..cli import CliError, user_errors
from ..trt.shapes import check_batch_agrees, default_batch, describe_profile, profile_from_flags
from .common import FiniteFloatRange
from .options import deprecated, quiet_option, report_option, verbose_option


@click.command()
@click.argument("onnx_path", metavar="MODEL.onnx", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Engine path (default: MODEL.plan beside the ONNX).")
@click.option("--fp16", is_flag=True, help="fp16 engine: the FP16 builder flag on TensorRT 10, an fp16-converted ONNX on TensorRT 11 and TensorRT-RTX (strongly typed). The pseudo-inverse stays fp32.")
@click.option("--plugin", type=click.Path(dir_okay=False), help="fna plugin library (default: the one 'fna-deploy plugin build' made).")
@click.option("--batch", "batch_spec", default=None, metavar="MIN:OPT:MAX",
              help="Optimisation profile for the batch dimension (default: the export's static batch, or 1:4:16 for a "
                   "dynamic-batch export). Triton's max_batch_size follows MAX.")
@click.option("--shapes", multiple=True, metavar="NAME:DxDxD,...", help="Fixed input shapes, trtexec syntax, e.g. images:4x3x224x224.")
@click.option("--min-shapes", multiple=True, metavar="NAME:DxDxD,...", help="Profile minimum (trtexec syntax); with --max-shapes, and --opt-shapes (default: max).")
@click.option("--opt-shapes", multiple=True, metavar="NAME:DxDxD,...", help="Profile optimum (trtexec syntax).")
@click.option("--max-shapes", multiple=True, metavar="NAME:DxDxD,...", help="Profile maximum (trtexec syntax).")
@click.option("--workspace", type=FiniteFloatRange(min=0.1, max=1024), default=4.0, show_default=True, help="Builder workspace in GiB.")
@click.option("--timing-cache", type=click.Path(dir_okay=False), help="Timing cache file to load and update (faster rebuilds).")
@click.option("--runtime", type=click.Choice(["auto", "tensorrt", "tensorrt-rtx"]), default="auto", show_default=True,
              help="tensorrt: NVIDIA TensorRT, builds for the local GPU. tensorrt-rtx: TensorRT for RTX (pip install "
                   "tensorrt-rtx), builds without a GPU; its engines run on compute capability 8.0/8.6/8.9/12.x, not 9.0 "
                   "(H100/H200). auto: TensorRT when it and a GPU are here, else TensorRT-RTX.")
@click.option("--compute-capabilities", "compute_capabilities", metavar="LIST",
              help="TensorRT-RTX targets, e.g. 80,86,89,120 (default: the local GPU's, else the library's default set).")
@click.option("--check", is_flag=True, help="Check the plugin contract with the runtime's real ONNX parser instead of "
                                            "building: exit 0 when every fna node's fields match and the whole graph parses, 1 if not.")
@report_option("With --check: write the contract report as JSON to FILE.")
@verbose_option("TensorRT builder logs.")
@quiet_option("Print only the engine and sidecar paths.")
@user_errors
def build(onnx_path: str, output: Optional[str], fp16: bool, plugin: Optional[str], batch_spec: Optional[str], shapes: tuple[str, ...],
          min_shapes: tuple[str, ...], opt_shapes: tuple[str, ...], max_shapes: tuple[str, ...],
          workspace: float, timing_cache: Optional[str], runtime: str, compute_capabilities: Optional[str],
          check: bool, report_path: Optional[str], verbose: bool, quiet: bool) -> None:
    """Build a TensorRT engine (.plan + .plan.json sidecar) from MODEL.onnx.

    Export with --target trt; a portable export also works (its fna function bodies are dropped
    first, since TensorRT's parser would inline them instead of using the plugins).
    TensorRT needs a CUDA GPU; TensorRT-RTX builds on any machine, in a child process (an fna
    export also needs 'fna-deploy plugin build --runtime tensorrt-rtx --tensorrt-include DIR').
    Without what it needs it says so and exits 2, writing nothing.

    --check parses MODEL.onnx with the runtime's ONNX parser, with recording creators for the fna
    plugins, and reports per fna node the fields the parser passed against the fields the C++
    creator declares, and every other node the parser rejects. No engine is written.
    """
    from ..trt import LABELS, build_engine, parse_batch, parse_compute_capabilities, parse_shapes

    source = Path(onnx_path)
    if not source.is_file():
        raise CliError(f"{onnx_path!r} does not exist; export one with 'fna-deploy export MODEL --target trt'")
    if report_path and not check:
        raise CliError("--report goes with --check (the contract check report)")
    if not check:  # the flags first (cheap), then the file
        batch = parse_batch(batch_spec) if batch_spec is not None else None
        profile_shapes = profile_from_flags(
            shapes, min_shapes, opt_shapes, max_shapes, legacy=parse_shapes,
            on_legacy=lambda: deprecated("--shapes NAME:MINxOPTxMAX with comma-separated dimensions",
                                         "--min-shapes/--opt-shapes/--max-shapes NAME:1x3x224x224 (trtexec syntax)"),
        )
        if batch is not None:
            check_batch_agrees(batch, profile_shapes)
    from .common import read_onnx_metadata

    read_onnx_metadata(onnx_path, "MODEL.onnx", attributes=not check)  # --check reports attribute problems itself
    batch_note = "--batch" if not check and batch is not None else ""
    if not check and batch is None:
        batch, batch_note = default_batch(onnx_path)
    if plugin is not None:
        from ..native import check_plugin_library

        check_plugin_library(plugin)
    if check:
        _check(source, runtime, report_path)
        return
    plan = Path(output) if output else source.with_suffix(".plan")
    sidecar = build_engine(source, plan, fp16=fp16, plugin=plugin, batch=batch, shapes=profile_shapes,
                           workspace_gib=workspace, timing_cache=timing_cache, verbose=verbose, runtime=runtime,
                           compute_capabilities=parse_compute_capabilities(compute_capabilities))
    if quiet:
        click.echo(f"{plan}\n{plan}.json")
        return
    click.echo(f"engine: {plan} ({LABELS[sidecar.runtime]} {sidecar.runtime_version}, {sidecar.gpu}, "
               f"fp16={sidecar.fp16} via {sidecar.fp16_strategy})")
    # what was built, read back from the sidecar (the profile the builder was given), never from the flags
    lows, opts, highs = ([p[k][0] for p in sidecar.profile.values()] for k in ("min", "opt", "max"))
    built = f"{max(lows)}:{max(opts)}:{min(highs)}" if sidecar.profile else "none"
    why = f" ({batch_note})" if batch_note and not profile_shapes else (" (--shapes)" if profile_shapes else "")
    click.echo(f"sidecar: {plan}.json; batch profile {built}{why}")
    if sidecar.profile:
        click.echo(f"profile: {describe_profile(sidecar.profile)}")
    layers = sidecar.extra.get("plugin_layers")
    if layers:
        click.echo("plugin layers: " + ", ".join(f"{n} {op}" for op, n in sorted(layers.items())))


def _check(source: Path, runtime: str, report_path: Optional[str]) -> None:
    import json

    from ..trt.contract_check import check_contract, format_report
    from ..utils import write_text_atomic

    report = check_contract(source, runtime)
    click.echo(format_report(report))
    if report_path:
        write_text_atomic(report_path, json.dumps(report.to_dict(), indent=2) + "\n")
        click.echo(f"report: {report_path}")
    if not report.ok:
        raise CliError("; ".join(report.problems) if len(report.problems) <= 3 else
                       f"{len(report.problems)} contract problems (listed above)", exit_code=1)
