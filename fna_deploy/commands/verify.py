"""``fna-deploy verify``: parity across PyTorch, ONNX Runtime, OpenVINO, onnx.reference and TensorRT (polygraphy)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import click

from ..cli import EXIT_FAILED, CliError, user_errors
from ..export.graph import check_writable
from ..native import check_plugin_library
from .common import (FiniteFloatRange, artifact_config, check_input_file, fna_options, load_cli_model, model_label, model_options,
                     read_onnx, recorded_seed, result_console, steps, weights_seed_for)
from .options import MAX_BATCH, backend_list, count, openvino_precision_option, quiet_option, random_option, report_option, verbose_option


def print_report(report: Any, console: Any, verbose: bool = False) -> None:
    from rich.table import Table

    table = Table(title=f"fna-deploy verify: {report.model} ({report.inputs}, batch {report.batch})")
    columns = ["pair", "max abs", "mean abs", "rel L2", "cosine", "top-1"] + (["polygraphy"] if verbose else []) + ["result"]
    for column in columns:  # never cut a name or a number ("torch-de…"): a narrow terminal wraps the result
        table.add_column(column, justify="right" if column not in ("pair", "result") else "left", no_wrap=column != "result")
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
    for runner, note in report.notes.items():
        console.print(f"{runner}: {note}", highlight=False)
    for runner, reason in report.skipped.items():
        console.print(f"[yellow]skipped {runner}:[/yellow] {reason}")
    console.print(f"tolerances: atol {report.atol:g}, rtol {report.rtol:g} (polygraphy CompareFunc.simple)")


@click.command()
@model_options
@fna_options
@click.option("--onnx", "onnx_path", type=click.Path(dir_okay=False), help="An exported ONNX file to run with ONNX Runtime, or the --backends runtimes (its stored FNA configuration is used).")
@click.option("--backends", default=None, metavar="LIST",
              help="Comma-separated runtimes for --onnx: onnxrt, openvino (CPU; a portable file is inlined in memory), "
                   "onnx-reference (ONNX's reference evaluator: slow, keep inputs small) [default: onnxrt].")
@openvino_precision_option()
@click.option("--engine", "engine_path", type=click.Path(dir_okay=False), help="A TensorRT engine to run (needs TensorRT, a GPU and --plugin).")
@click.option("--plugin", type=click.Path(dir_okay=False), help="fna plugin library for --engine.")
@click.option("--images", type=click.Path(file_okay=False), help="Folder of images, preprocessed as the model expects.")
@random_option("N random inputs (default 2 when no --images).", dest="random_n")
@click.option("--batch", type=count(1, MAX_BATCH), default=1, show_default=True, help="Images per inference.")
@click.option("--atol", type=FiniteFloatRange(min=0), default=1e-4, show_default=True, help="Absolute tolerance of an implementation pair.")
@click.option("--rtol", type=FiniteFloatRange(min=0), default=1e-3, show_default=True, help="Relative tolerance of an implementation pair (|a-b| <= atol + rtol*|b|).")
@click.option("--allow-degenerate", is_flag=True, help="Judge outputs that carry no signal (all equal, e.g. all zero) instead of failing.")
@report_option("Write the comparison as JSON to FILE.")
@quiet_option()
@verbose_option("Also print the polygraphy comparison of every pair.")
@click.pass_context
@user_errors
def verify(ctx: click.Context, model: str, checkpoint: Optional[str], arch: Optional[str], weights_seed: Optional[int],
           allow_pickle: bool, resolution: Optional[int], onnx_path: Optional[str], backends: Optional[str], openvino_precision: str,
           engine_path: Optional[str], plugin: Optional[str], images: Optional[str],
           random_n: Optional[int], batch: int, atol: float, rtol: float, allow_degenerate: bool, report_path: Optional[str], quiet: bool, verbose: bool,
           **fna: Any) -> None:
    """Check that every implementation of MODEL with FNA agrees with the PyTorch reference.

    Runs the patched PyTorch model (the reference), the dense PyTorch model (to show what the
    approximation itself costs), ONNX Runtime (or the --backends runtimes) on --onnx and TensorRT on --engine, on the same
    inputs. Exit 0 when every implementation pair is within --atol/--rtol, 1 when one is not;
    FNA vs dense is reported, never failed. The FNA configuration (and resolution) is read from
    the --onnx metadata or the --engine sidecar; FNA flags that contradict it are refused.
    Outputs without signal (all equal) fail unless --allow-degenerate: they would agree anyway.
    """
    import numpy as np
    from rich.console import Console

    from ..patching import model_info, patch
    from ..verify import verify as run_verify

    if images and random_n:
        raise CliError("--images and --random both choose the inputs; give one of them")
    onnx_backends = _onnx_backends(backends, onnx_path, openvino_precision)
    stored, source = None, None
    checked = read_onnx(onnx_path)
    onnx_meta = None if checked is None else checked.metadata
    if onnx_meta is not None and onnx_meta.get("fna_config"):
        stored, source = onnx_meta["fna_config"], onnx_path
    seed_recorded, seed_source = recorded_seed(onnx_meta), onnx_path
    if engine_path is not None:
        check_input_file(engine_path, "--engine", "give a .plan written by 'fna-deploy build'")
        if plugin is not None:
            check_plugin_library(plugin)
        from ..trt import EngineSidecar, TensorRTUnavailable, require_tensorrt
        from ..trt.runtime import engine_runs_here

        if EngineSidecar.path_for(engine_path).is_file():  # the sidecar names the runtime (TensorRT or TensorRT-RTX)
            reason = engine_runs_here(engine_path)
            if reason is not None:
                raise CliError(f"--engine {engine_path!r} cannot run here: {reason}")
        else:
            try:
                require_tensorrt()
            except TensorRTUnavailable as exc:
                raise CliError(f"--engine {engine_path!r} cannot run here: {exc}") from None
        sidecar, sidecar_seed = _engine_config(engine_path)
        if stored is None and sidecar:
            stored, source = sidecar, f"{engine_path}.json"
        if seed_recorded is None and sidecar_seed is not None:
            seed_recorded, seed_source = sidecar_seed, f"{engine_path}.json"
    elif plugin is not None:
        raise CliError("--plugin is for --engine; add --engine ENGINE.plan or drop --plugin")
    if report_path:
        check_writable(Path(report_path))
    if onnx_meta is not None and resolution is None and _stored_resolution(onnx_meta) and (arch or model.startswith(("timm:", "hf:"))):
        resolution = _stored_resolution(onnx_meta)  # build the reference at the exported resolution
    seed = weights_seed_for(model, checkpoint, arch, weights_seed, seed_recorded, seed_source or "")
    console = result_console()
    with steps(Console(stderr=True), enabled=not quiet) as step:
        step("loading the model" + (f" with random weights (seed {seed})" if seed is not None else ""))
        module = load_cli_model(model, checkpoint, arch, allow_pickle, resolution, seed)
        info = model_info(module)
        patch(module, artifact_config(ctx, fna, stored, source, info.num_blocks))
        if onnx_meta is not None and _stored_resolution(onnx_meta) not in (None, info.img_size[0]):
            raise CliError(f"{onnx_path!r} was exported at {_stored_resolution(onnx_meta)} px but MODEL is built at "
                           f"{info.img_size[0]} px; drop --resolution or give the matching one")
        if checked is not None:
            _check_input_dims(checked, onnx_path, [info.in_chans, *info.img_size])
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
        report = run_verify(module, feeds, onnx_path=onnx_path, onnx_backends=onnx_backends, openvino_precision=openvino_precision,
                            engine_path=engine_path, plugin=plugin, atol=atol, rtol=rtol,
                            model_label=model_label(model, arch) + (f", random weights (seed {seed})" if seed is not None else ""),
                            inputs_label=label, allow_degenerate=allow_degenerate)
    if report_path:
        report.write_json(report_path)
    print_report(report, console, verbose=verbose)
    if report.degenerate and not allow_degenerate:
        raise CliError(f"the reference output carries no signal ({report.degenerate}): any implementation would match it; "
                       "use real weights (--checkpoint) or images, or pass --allow-degenerate", exit_code=EXIT_FAILED)
    if not report.passed:
        from ..loading import RANDOM_FAIL_HINT

        failed = next(p for p in report.pairs if p.gating and not p.passed)
        raise CliError(f"{failed.other} differs from {failed.reference}: max abs error {failed.max_abs:.3g}, rel L2 {failed.rel_l2:.3g} "
                       f"(atol {atol:g}, rtol {rtol:g})" + (f"; {RANDOM_FAIL_HINT}" if seed is not None else ""), exit_code=EXIT_FAILED)
    if len(report.pairs) == sum(not p.gating for p in report.pairs):
        console.print("[yellow]note:[/yellow] no --onnx or --engine given: only FNA vs dense was measured")


def _onnx_backends(backends: Optional[str], onnx_path: Optional[str], precision: str) -> list[str]:
    """The runtimes named by --backends (default onnxrt), checked before any work."""
    from ..verify import ONNX_BACKENDS, ONNXRT, OPENVINO

    if backends is None:
        if precision != "f32":
            raise CliError("--openvino-precision applies to the openvino backend; add --backends openvino")
        return [ONNXRT]
    chosen = backend_list(backends, ONNX_BACKENDS)
    if onnx_path is None:
        raise CliError("--backends chooses the runtimes that run --onnx; add --onnx FILE.onnx")
    if OPENVINO in chosen:
        from ..runtimes.openvino import OpenVINOUnavailable, require_openvino

        try:
            require_openvino()
        except OpenVINOUnavailable as exc:
            raise CliError(f"--backends openvino: {exc}") from None
    elif precision != "f32":
        raise CliError("--openvino-precision applies to the openvino backend; add openvino to --backends")
    return chosen


def _check_input_dims(checked: Any, onnx_path: str, expected: list[int]) -> None:
    """The ONNX's declared image input must take what MODEL takes (a hand-edited shape would fail in the runtime)."""
    from ..export.validate import image_input

    name, dims = image_input(checked)
    if any(d != -1 and d != e for d, e in zip(dims[1:], expected)):
        shown = ["B", *("?" if d == -1 else str(d) for d in dims[1:])]
        raise CliError(f"--onnx {onnx_path!r} declares input {name!r} as [{', '.join(shown)}] but MODEL takes "
                       f"[B, {', '.join(map(str, expected))}]; give the export of MODEL (or its --resolution)")


def _stored_resolution(meta: dict) -> Optional[int]:
    try:
        shape = json.loads(meta.get("input_shape") or "null")
    except ValueError:
        return None
    return int(shape[2]) if isinstance(shape, list) and len(shape) == 4 and shape[2] == shape[3] else None


def _engine_config(engine_path: str) -> "tuple[Optional[dict], Optional[int]]":
    """The FNA config and the random-weights seed an engine's sidecar records (None where absent)."""
    from ..trt import EngineSidecar

    sidecar = EngineSidecar.path_for(engine_path)
    if not sidecar.is_file():
        return None, None
    try:
        data = EngineSidecar.from_json(sidecar.read_text())
        return data.fna_config, recorded_seed(data.extra)
    except (ValueError, TypeError) as exc:
        raise CliError(f"{str(sidecar)!r} is not a readable engine sidecar ({type(exc).__name__}); rebuild the engine with 'fna-deploy build'") from None
