"""``fna-deploy verify``: parity across PyTorch, ONNX Runtime and TensorRT (polygraphy)."""

from __future__ import annotations

from typing import Any, Optional

import click

from ..cli import EXIT_FAILED, CliError, user_errors
from .common import config_from_options, fna_options, load_cli_model, model_label, model_options, steps
from .options import quiet_option, random_option, report_option, verbose_option


def print_report(report: Any, console: Any, verbose: bool = False) -> None:
    from rich.table import Table

    table = Table(title=f"fna-deploy verify: {report.model} ({report.inputs}, batch {report.batch})")
    columns = ["pair", "max abs", "mean abs", "rel L2", "cosine", "top-1"] + (["polygraphy"] if verbose else []) + ["result"]
    for column in columns:
        table.add_column(column, justify="right" if column not in ("pair", "result") else "left")
    for p in report.pairs:
        if p.gating:
            verdict = "[green]pass[/green]" if p.passed else "[red]FAIL[/red]"
        else:
            verdict = "[dim]reported (FNA vs dense)[/dim]"
        table.add_row(
            f"{p.reference} vs {p.other}", f"{p.max_abs:.2e}", f"{p.mean_abs:.2e}", f"{p.rel_l2:.2e}", f"{p.cosine:.6f}",
            "-" if p.top1_agreement is None else f"{100 * p.top1_agreement:.1f}%",
            *([str(p.polygraphy_passed)] if verbose else []), verdict,
        )
    console.print(table)
    for runner, reason in report.skipped.items():
        console.print(f"[yellow]skipped {runner}:[/yellow] {reason}")
    console.print(f"tolerances: atol {report.atol:g}, rtol {report.rtol:g} (polygraphy CompareFunc.simple)")


@click.command()
@model_options
@fna_options
@click.option("--onnx", "onnx_path", type=click.Path(dir_okay=False), help="An exported ONNX file to run with ONNX Runtime.")
@click.option("--engine", "engine_path", type=click.Path(dir_okay=False), help="A TensorRT engine to run (needs TensorRT, a GPU and --plugin).")
@click.option("--plugin", type=click.Path(dir_okay=False), help="fna plugin library for --engine.")
@click.option("--images", type=click.Path(file_okay=False), help="Folder of images, preprocessed as the model expects.")
@random_option("N random inputs (default 2 when no --images).", dest="random_n")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True, help="Images per inference.")
@click.option("--atol", type=click.FloatRange(min=0), default=1e-4, show_default=True)
@click.option("--rtol", type=click.FloatRange(min=0), default=1e-3, show_default=True)
@report_option("Write the comparison as JSON to FILE.")
@quiet_option()
@verbose_option("Also print the polygraphy comparison of every pair.")
@user_errors
def verify(model: str, checkpoint: Optional[str], arch: Optional[str], allow_pickle: bool, resolution: Optional[int],
           onnx_path: Optional[str], engine_path: Optional[str], plugin: Optional[str], images: Optional[str],
           random_n: Optional[int], batch: int, atol: float, rtol: float, report_path: Optional[str], quiet: bool, verbose: bool,
           **fna: Any) -> None:
    """Check that every implementation of MODEL with FNA agrees with the PyTorch reference.

    Runs the patched PyTorch model (the reference), the dense PyTorch model (to show what the
    approximation itself costs), ONNX Runtime on --onnx and TensorRT on --engine, on the same
    inputs. Exit 0 when every implementation pair is within --atol/--rtol, 1 when one is not;
    FNA vs dense is reported, never failed. Give the same FNA flags the export used (the
    defaults are export's defaults).
    """
    import numpy as np
    from rich.console import Console

    from ..patching import model_info, patch
    from ..verify import verify as run_verify

    if images and random_n:
        raise CliError("--images and --random both choose the inputs; give one of them")
    console = Console()
    with steps(Console(stderr=True), enabled=not quiet) as step:
        step("loading the model")
        module = load_cli_model(model, checkpoint, arch, allow_pickle, resolution)
        patch(module, config_from_options(fna))
        info = model_info(module)
        if images:
            from ..images import load_images

            step(f"reading images from {images}")
            pixels = load_images(images, module, img_size=info.img_size[0]).numpy()
            label = f"{len(pixels)} images from {images}"
        else:
            n = random_n or 2
            pixels = np.random.default_rng(0).standard_normal((n, info.in_chans, *info.img_size), dtype=np.float32)
            label = f"{n} random inputs"
        feeds = [pixels[i : i + batch] for i in range(0, len(pixels), batch)]  # the last may be smaller
        step("running and comparing")
        report = run_verify(module, feeds, onnx_path=onnx_path, engine_path=engine_path, plugin=plugin, atol=atol, rtol=rtol,
                            model_label=model_label(model, arch), inputs_label=label)
    if report_path:
        report.write_json(report_path)
    print_report(report, console, verbose=verbose)
    if not report.passed:
        failed = next(p for p in report.pairs if p.gating and not p.passed)
        raise CliError(f"{failed.other} differs from {failed.reference}: max abs error {failed.max_abs:.3g}, rel L2 {failed.rel_l2:.3g} "
                       f"(atol {atol:g}, rtol {rtol:g})", exit_code=EXIT_FAILED)
    if len(report.pairs) == sum(not p.gating for p in report.pairs):
        console.print("[yellow]note:[/yellow] no --onnx or --engine given: only FNA vs dense was measured")
