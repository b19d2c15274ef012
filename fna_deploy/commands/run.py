"""``fna-deploy run``: export, engine, verify, bench and a Triton repository in one command."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

import click

from ..cli import EXIT_FAILED, CliError, user_errors
from .common import (check_output_dir, config_from_options, fna_options, human_size, load_cli_model, model_label, model_options,
                     steps, weights_seed_for)
from .options import MAX_COUNT, count, quiet_option, verbose_option


def print_summary(report: Any, console: Any, verbose: bool = False) -> None:
    from rich.table import Table

    table = Table(title=f"fna-deploy run: {report.model}", show_header=False)
    table.add_column("stage", style="bold")
    table.add_column("result")
    cfg = report.config
    table.add_row("config", f"m={cfg['num_landmarks']}, layers {report.export['portable']['fna_layers']}, {cfg['method']}")
    for target, exp in report.export.items():
        parity = ", ".join(f"b{p['batch']} max abs {p['max_abs']:.1e}" for p in exp.get("parity", [])) or "not checked"
        table.add_row(f"export ({target})", f"{exp['path']} ({human_size(exp['file_size'])}); {parity}")
    table.add_row("engine", report.files.get("engine") or f"[yellow]skipped[/yellow]: {report.skipped.get('build', '')}")
    if report.verify:
        parts = []
        for p in report.verify["pairs"]:
            verdict = ("pass" if p["passed"] else "FAIL") if p["gating"] else "reported"
            parts.append(f"{p['other']}: {verdict} (max abs {p['max_abs']:.1e}, cos {p['cosine']:.5f})")
        table.add_row("verify", "; ".join(parts))
    if report.bench:
        for s in report.bench["speedups"]:
            table.add_row(f"bench ({s['backend']})", f"{s['speedup']:.2f}x at {s['tokens']} tokens (FLOP bound {s['flop_bound']:.2f}x, {100 * s['share_of_bound']:.0f}% of it)")
    if report.triton:
        table.add_row("triton", f"{report.triton['model_dir']} ({report.triton['backend']} backend)")
        table.add_row("serve", f"fna-deploy serve {report.files['triton_repository']}")
    if report.infer_command:
        table.add_row("then check it", report.infer_command)
    table.add_row("report", report.files["report"])
    if verbose:
        table.add_row("files", "\n".join(f"{k}: {v}" for k, v in report.files.items()))
    table.add_row("time", ", ".join(f"{k} {v:.0f}s" for k, v in report.seconds.items()))
    console.print(table)


@click.command()
@model_options
@fna_options
@click.option("-o", "--outdir", type=click.Path(file_okay=False), help="Folder for every artifact (default: ./fna-run-NAME).")
@click.option("--fp16", is_flag=True, help="fp16 exports and engine.")
@click.option("--plugin", type=click.Path(dir_okay=False), help="fna plugin library for the engine (default: the built one).")
@click.option("--no-bench", is_flag=True, help="Skip the short benchmark.")
@click.option("--bench-iters", type=count(1, MAX_COUNT), default=3, show_default=True)
@click.option("--triton-backend", type=click.Choice(["tensorrt", "onnxruntime", "python"]), default=None,
              help="Backend of the Triton repository (default: tensorrt with an engine, else python).")
@click.option("--force", is_flag=True, help="Overwrite an existing Triton repository in OUTDIR.")
@click.option("--allow-degenerate", is_flag=True, help="Judge outputs that carry no signal (all equal, e.g. all zero) instead of failing.")
@quiet_option()
@verbose_option("Also list every file the run wrote.")
@user_errors
def run(model: str, checkpoint: Optional[str], arch: Optional[str], weights_seed: Optional[int], allow_pickle: bool, resolution: Optional[int], outdir: Optional[str],
        fp16: bool, plugin: Optional[str], no_bench: bool, bench_iters: int, triton_backend: Optional[str], force: bool,
        allow_degenerate: bool, quiet: bool, verbose: bool, **fna: Any) -> None:
    """Take MODEL through the whole chain and summarise where every file went.

    Exports portable and TensorRT ONNX (checked with ONNX Runtime), builds the engine when
    TensorRT and a GPU are present (else says why it was skipped), verifies PyTorch vs ONNX
    Runtime (and TensorRT), times dense vs FNA, and writes a Triton model repository.

    \b
    Example (no download needed, random weights):
      fna-deploy run timm:vit_small_patch16_224 --resolution 448 --landmarks 64
    """
    from rich.console import Console

    from ..pipeline import run_pipeline

    config = config_from_options(fna)
    check_output_dir(outdir, "--outdir")
    if plugin is not None:
        from ..native import check_plugin_library

        check_plugin_library(plugin)
    spec = arch or model
    name = re.sub(r"[^A-Za-z0-9_]+", "_", spec.split(":", 1)[-1] if ":" in spec else Path(spec).stem).strip("_") or "model"
    out = Path(outdir) if outdir else Path(f"fna-run-{name}")
    if (out / "triton" / name).exists() and not force:
        raise CliError(f"{out / 'triton' / name} already exists; pass --force to overwrite it or choose another --outdir")
    if (out / "triton" / name).exists():
        from ..triton.repository import marker_problem

        problem = marker_problem(out / "triton" / name)
        if problem is not None:
            raise CliError(f"{out / 'triton' / name} was not written by fna-deploy ({problem}), so --force does not "
                           "replace it; if it is yours or an older fna-deploy wrote it, adopt it by moving it away, or choose another --outdir")
    # how `fna-deploy infer --compare` can rebuild this model once it is served
    save_weights = arch is None and checkpoint is None and model.startswith("timm:")
    if save_weights:  # random weights: keep them, or nothing could reproduce the served model
        compare_spec = f"{out / 'weights.safetensors'} --arch {model}"
    elif arch is not None:
        compare_spec = f"{model} --arch {arch}"
    elif checkpoint is not None:
        compare_spec = f"{model} --checkpoint {checkpoint}"
    else:
        compare_spec = model + (" --allow-pickle" if allow_pickle else "")
    seed = weights_seed_for(model, checkpoint, arch, weights_seed)
    label = model_label(model, arch) + (f", random weights (seed {seed})" if seed is not None else "")
    with steps(Console(stderr=True), enabled=not quiet) as step:
        step(f"loading {label}")
        module = load_cli_model(model, checkpoint, arch, allow_pickle, resolution, seed)
        report = run_pipeline(module, config, out, model_label=label, name=name, fp16=fp16, plugin=plugin,
                              bench=not no_bench, bench_iters=bench_iters, triton_backend=triton_backend, force=force,
                              compare_spec=compare_spec, save_weights=save_weights, progress=step, allow_degenerate=allow_degenerate)
    print_summary(report, Console(), verbose=verbose)
    if not report.passed:
        degenerate = (report.verify or {}).get("degenerate")
        if degenerate and not allow_degenerate:
            raise CliError(f"the chain finished but the reference output carries no signal ({degenerate}): any implementation "
                           f"would match it; use real weights, or pass --allow-degenerate; see {report.files['report']}",
                           exit_code=EXIT_FAILED)
        raise CliError(f"the chain finished but a parity check failed; see {report.files['report']}", exit_code=EXIT_FAILED)
