"""``fna-deploy build``: a TensorRT engine from an fna ONNX export, with the fna plugins."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from ..cli import CliError, user_errors
from ..trt.shapes import profile_from_flags
from .common import FiniteFloatRange
from .options import deprecated, quiet_option, verbose_option


@click.command()
@click.argument("onnx_path", metavar="MODEL.onnx", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Engine path (default: MODEL.plan beside the ONNX).")
@click.option("--fp16", is_flag=True, help="fp16 engine: the FP16 builder flag on TensorRT 10, an fp16-converted ONNX on TensorRT 11 (strongly typed). The pseudo-inverse stays fp32.")
@click.option("--plugin", type=click.Path(dir_okay=False), help="fna plugin library (default: the one 'fna-deploy plugin build' made).")
@click.option("--batch", "batch_spec", default="1:1:1", show_default=True, help="Optimisation profile for the batch dimension, MIN:OPT:MAX.")
@click.option("--shapes", multiple=True, metavar="NAME:DxDxD,...", help="Fixed input shapes, trtexec syntax, e.g. images:4x3x224x224.")
@click.option("--min-shapes", multiple=True, metavar="NAME:DxDxD,...", help="Profile minimum (trtexec syntax); with --max-shapes, and --opt-shapes (default: max).")
@click.option("--opt-shapes", multiple=True, metavar="NAME:DxDxD,...", help="Profile optimum (trtexec syntax).")
@click.option("--max-shapes", multiple=True, metavar="NAME:DxDxD,...", help="Profile maximum (trtexec syntax).")
@click.option("--workspace", type=FiniteFloatRange(min=0.1), default=4.0, show_default=True, help="Builder workspace in GiB.")
@click.option("--timing-cache", type=click.Path(dir_okay=False), help="Timing cache file to load and update (faster rebuilds).")
@verbose_option("TensorRT builder logs.")
@quiet_option("Print only the engine and sidecar paths.")
@user_errors
def build(onnx_path: str, output: Optional[str], fp16: bool, plugin: Optional[str], batch_spec: str, shapes: tuple[str, ...],
          min_shapes: tuple[str, ...], opt_shapes: tuple[str, ...], max_shapes: tuple[str, ...],
          workspace: float, timing_cache: Optional[str], verbose: bool, quiet: bool) -> None:
    """Build a TensorRT engine (.plan + .plan.json sidecar) from MODEL.onnx.

    Export with --target trt; a portable export also works (its fna function bodies are dropped
    first, since TensorRT's parser would inline them instead of using the plugins).
    Needs TensorRT and a CUDA GPU; without them it says what is missing and exits 2, writing nothing.
    """
    from ..trt import TensorRTUnavailable, build_engine, parse_batch, parse_shapes

    source = Path(onnx_path)
    if not source.is_file():
        raise CliError(f"{onnx_path!r} does not exist; export one with 'fna-deploy export MODEL --target trt'")
    from .common import read_onnx_metadata

    read_onnx_metadata(onnx_path, "MODEL.onnx")
    if plugin is not None:
        from ..native import check_plugin_library

        check_plugin_library(plugin)
    plan = Path(output) if output else source.with_suffix(".plan")
    batch = parse_batch(batch_spec)
    profile_shapes = profile_from_flags(
        shapes, min_shapes, opt_shapes, max_shapes, legacy=parse_shapes,
        on_legacy=lambda: deprecated("--shapes NAME:MINxOPTxMAX with comma-separated dimensions",
                                     "--min-shapes/--opt-shapes/--max-shapes NAME:1x3x224x224 (trtexec syntax)"),
    )
    try:
        sidecar = build_engine(source, plan, fp16=fp16, plugin=plugin, batch=batch, shapes=profile_shapes,
                               workspace_gib=workspace, timing_cache=timing_cache, verbose=verbose)
    except TensorRTUnavailable as exc:
        raise CliError(str(exc), exit_code=2) from None
    if quiet:
        click.echo(f"{plan}\n{plan}.json")
        return
    click.echo(f"engine: {plan} (TensorRT {sidecar.tensorrt_version}, {sidecar.gpu}, fp16={sidecar.fp16} via {sidecar.fp16_strategy})")
    click.echo(f"sidecar: {plan}.json; batch profile {batch[0]}:{batch[1]}:{batch[2]}")
