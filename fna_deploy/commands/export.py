"""``fna-deploy export``: a ViT to ONNX with fna::FnaLandmarks + fna::NystromAttention nodes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

import click

from ..cli import EXIT_FAILED, CliError, user_errors
from .common import (config_from_options, fna_options, human_size, load_cli_model, model_label, model_options, result_console,
                     steps, weights_seed_for)
from .options import MAX_BATCH, MAX_OPSET, MIN_OPSET, count, quiet_option, report_option, verbose_option


def default_output(model: str, arch: Optional[str], target: str, fp16: bool, inline: bool = False) -> Path:
    spec = arch or model
    stem = spec.split(":", 1)[1] if ":" in spec else Path(spec).stem
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(stem).name or "model")
    suffix = "dense" if target == "dense" else (("fna_inlined" if inline else "fna") if target == "portable" else "fna_trt")
    return Path(f"{stem}_{suffix}{'_fp16' if fp16 else ''}.onnx")


def print_summary(report: Any, console: Any, verbose: bool = False) -> None:
    from rich.table import Table

    table = Table(title="fna-deploy export", show_header=False)
    table.add_column("item", style="bold")
    table.add_column("value")
    table.add_row("model", report.model)
    table.add_row("weights", report.weights)
    table.add_row("target", report.target + (" (fp16)" if report.fp16 else ""))
    table.add_row("input", f"{'N' if report.dynamic_batch else report.input_shape[0]} x {report.input_shape[1]} x {report.input_shape[2]} x {report.input_shape[3]}")
    table.add_row("tokens N", str(report.tokens) if report.tokens is not None else "-")
    if report.config:
        table.add_row("landmarks m", str(report.config["num_landmarks"]))
        table.add_row("FNA layers", ", ".join(map(str, report.fna_layers)))
    fna = report.fna_nodes
    if report.functions == "inlined":
        table.add_row("fna nodes", "none: function bodies inlined into standard ops (for OpenVINO; TensorRT needs --target trt)")
    else:
        table.add_row("fna nodes", ", ".join(f"{k} x{v}" for k, v in fna.items()) or "none (dense)")
    table.add_row("nodes", str(sum(report.node_counts.values())))
    if verbose:
        counts = sorted(report.node_counts.items(), key=lambda kv: (-kv[1], kv[0]))
        table.add_row("node types", ", ".join(f"{op} x{n}" for op, n in counts))
    table.add_row("file", f"{report.path} ({human_size(report.file_size)})")
    for p in report.parity:
        verdict = "[green]ok[/green]" if p["passed"] else "[red]FAILED[/red]"
        table.add_row(
            f"parity, batch {p['batch']}",
            f"{verdict} max abs {p['max_abs']:.2e}, cosine {p['cosine']:.6f} ({p['criterion']})",
        )
    if not report.parity:
        table.add_row("parity", "not checked (--no-check)")
    if report.check_note:
        table.add_row("note", report.check_note)
    table.add_row("time", f"{report.total_seconds:.1f} s (torch export {report.export_seconds:.1f} s)")
    console.print(table)


@click.command()
@model_options
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Output .onnx path (default: NAME_fna.onnx in the current folder).")
@click.option("--batch", type=count(1, MAX_BATCH), default=None, help="Static batch size (default: a dynamic batch dimension).")
@click.option("--dynamic-batch", is_flag=True, default=False, help="Dynamic batch dimension (the default unless --batch is given).")
@fna_options
@click.option("--target", type=click.Choice(["portable", "trt", "dense"]), default="portable", show_default=True,
              help="portable: fna nodes with ONNX function bodies (ONNX Runtime and onnx.reference run it; OpenVINO with --inline-functions); trt: plugin nodes only, for TensorRT; dense: the unpatched baseline.")
@click.option("--inline-functions", "inline", is_flag=True,
              help="portable target: expand the fna function bodies into the graph (no fna nodes left), for runtimes "
                   "without model-local functions such as OpenVINO. ONNX Runtime and onnx.reference run either form.")
@click.option("--fp16", is_flag=True, help="fp16 weights and activations (inputs/outputs stay fp32; the pseudo-inverse stays fp32).")
@click.option("--opset", type=count(MIN_OPSET, MAX_OPSET), default=None, help=f"ONNX opset, {MIN_OPSET} to {MAX_OPSET} (default 20).")
@click.option("--external-data/--no-external-data", default=None, help="Store weights in OUT.onnx.data (default: only when the model exceeds 1.8 GB).")
@click.option("--no-check", is_flag=True, help="Skip the ONNX Runtime parity check against PyTorch.")
@click.option("--allow-degenerate", is_flag=True, help="Let the check pass on outputs without signal (all equal, e.g. a zero-initialised head).")
@report_option("Write the export report as JSON to FILE.")
@quiet_option()
@verbose_option("Also print how many nodes of each op type the ONNX graph has.")
@user_errors
def export(model: str, checkpoint: Optional[str], arch: Optional[str], allow_pickle: bool, resolution: Optional[int],
           weights_seed: Optional[int], output: Optional[str], batch: Optional[int], dynamic_batch: bool, target: str, inline: bool, fp16: bool,
           opset: Optional[int],
           external_data: Optional[bool], no_check: bool, allow_degenerate: bool, report_path: Optional[str], quiet: bool, verbose: bool,
           **fna: Any) -> None:
    """Export MODEL to ONNX with Fast Nystrom Attention nodes, and check it with ONNX Runtime.

    MODEL is timm:NAME (random weights from --seed, default 0, unless --checkpoint), hf:DIR (a local save_pretrained folder),
    a .pt2 torch.export archive, or a .pt file holding a whole module (needs --allow-pickle); with
    --arch, MODEL is a weights file for that architecture.

    \b
    Examples:
      fna-deploy export timm:vit_base_patch16_224 --resolution 1024 --landmarks 128 --layers 2-11
      fna-deploy export weights.safetensors --arch timm:vit_small_patch16_224 --target trt --fp16

    The check (on by default) runs the written file with ONNX Runtime against the patched PyTorch
    model at batch 1 and 2: fp32 needs max abs error <= 1e-4 (relative to outputs larger than 1),
    fp16 cosine similarity >= 0.999. A failed check exits 1 and keeps the file for inspection.
    """
    from rich.console import Console

    from ..export import export_onnx

    if batch is not None and dynamic_batch:
        raise CliError("--batch fixes the batch size and --dynamic-batch leaves it open; give one of them")
    if inline and target != "portable":
        raise CliError(f"--inline-functions expands the portable target's function bodies; --target {target} has none: drop one of them")
    config = config_from_options(fna) if target != "dense" else None
    out = Path(output) if output else default_output(model, arch, target, fp16, inline)
    if out.suffix != ".onnx":
        raise CliError(f"output {str(out)!r} should end in .onnx")
    if report_path and Path(report_path).resolve() == out.resolve():
        raise CliError("--report and the output are the same file; give the report its own .json path")
    from ..export.graph import check_writable

    check_writable(out)
    if report_path:
        check_writable(Path(report_path))
    console = Console(stderr=True)
    label = model_label(model, arch)
    seed = weights_seed_for(model, checkpoint, arch, weights_seed)
    with steps(console, enabled=not quiet) as step:
        step(f"loading {label}" + (f" with random weights (seed {seed})" if seed is not None else ""))
        module = load_cli_model(model, checkpoint, arch, allow_pickle, resolution, seed)
        from ..export import default_input_shape

        shape = default_input_shape(module, batch or 1)
        report = export_onnx(
            module,
            config,
            out,
            input_shape=shape,
            target=target,
            dynamic_batch=batch is None,
            fp16=fp16,
            opset=opset,
            check=not no_check,
            model_spec=label,
            external_data=external_data,
            progress=step,
            allow_degenerate=allow_degenerate,
            inline=inline,
            random_seed=seed,
        )
    if report_path:
        report.write_json(report_path)
    print_summary(report, result_console(), verbose=verbose)
    if not report.passed:
        raise CliError(
            f"parity check failed: {report.failures[0]}; the model was kept at {report.path} for inspection",
            exit_code=EXIT_FAILED,
        )
