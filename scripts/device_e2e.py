#!/usr/bin/env python
"""GPU end to end: timm ViTs dense vs FNA through fna_deploy.bench (run by scripts/device_check.sh).

Per configuration (model, px, batch), in priority order (the issue's targets first):
dense vs FNA (blocks 1-end, m=128), fp16, CUDA graphs both sides, CUDA-event medians over
interleaved repeats; per row: dense ms, FNA ms, speedup, FLOP bound, peak memory of each above
inputs and weights, FNA-vs-dense cosine, our kernels vs the PyTorch reference ops inside the whole
model (rel L2, must be <= 1e-2 in fp16) and which implementation ran. With --fna-ops both (the
default where the kernels are loaded) the reference ops are timed too, as their own rows.

The run keeps to --budget-s: before each configuration it estimates that configuration's time
from the ones already run (scaled by batch x tokens) and skips it, saying so, when it would not
fit. JSON (e2e.json) and a markdown table (e2e.md) go to --out; the table is printed last.
Exit code: 1 if kernels and reference disagree beyond 1e-2 or a configuration failed, else 0
(missed speed targets are reported, not failed).

On a machine without a GPU: --device cpu with a tiny model, e.g.
    python scripts/device_e2e.py --device cpu --models vit_tiny_patch16_224 --resolutions 64 \\
        --batches 1 --landmarks 8 --iters 1 --out /tmp/e2e
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# issue 11's targets (H100/H200, fp16, CUDA graphs both sides, FNA blocks 1-end, m=128)
TARGETS = {
    ("vit_large_patch16_224", 1024, 1): 1.3,
    ("vit_large_patch16_224", 1024, 8): 1.3,
    ("vit_base_patch16_224", 2048, 1): 2.5,
    ("vit_large_patch16_224", 2048, 1): 3.0,
}
KERNEL_TOLERANCE = 1e-2  # rel L2, our kernels vs the PyTorch reference ops, whole model, fp16
SHORT = {"vit_base_patch16_224": "ViT-B/16", "vit_large_patch16_224": "ViT-L/16"}


@dataclass
class Config:
    model: str
    resolution: int
    batch: int

    @property
    def name(self) -> str:
        return f"{self.model}@{self.resolution}/B{self.batch}"

    @property
    def target(self) -> Optional[float]:
        return TARGETS.get((self.model, self.resolution, self.batch))


@dataclass
class Outcome:
    config: Config
    status: str  # "ran", "skipped", "failed"
    reason: str = ""
    seconds: float = 0.0
    rows: list[dict[str, Any]] = field(default_factory=list)
    report: Optional[dict[str, Any]] = None


def plan(models: list[str], resolutions: list[int], batches: list[int], skip: list[str]) -> tuple[list[Config], list[Outcome]]:
    """Every (model, px, batch), the issue's targets first (in the order listed there), then by cost."""
    configs = [Config(m, r, b) for m in models for r in resolutions for b in batches]
    order = list(TARGETS)
    configs.sort(key=lambda c: (order.index((c.model, c.resolution, c.batch)) if c.target else len(order),
                                c.batch * c.resolution**2 * (2 if "large" in c.model else 1)))
    skipped = [Outcome(c, "skipped", "--skip") for c in configs if c.name in skip]
    return [c for c in configs if c.name not in skip], skipped


def estimate_seconds(config: Config, done: list[Outcome]) -> Optional[float]:
    """Seconds a configuration should take, scaled from the slowest-per-unit one already run
    (cost ~ batch x tokens^1.5 x width-class); None before any ran."""
    def units(c: Config) -> float:
        tokens = (c.resolution // 16) ** 2
        return c.batch * tokens**1.5 * (3.0 if "large" in c.model else 1.0)

    ran = [o for o in done if o.status == "ran" and o.seconds > 0]
    if not ran:
        return None
    return max(o.seconds / units(o.config) for o in ran) * units(config)


def rows_of(config: Config, report: Any) -> list[dict[str, Any]]:
    dense = next(m for m in report.measurements if m.variant == "dense")
    fna = {(m.landmarks, m.fna_ops): m for m in report.measurements if m.variant == "fna"}
    rows = []
    for s in report.speedups:
        f = fna[(s.landmarks, s.fna_ops)]
        kvr = s.kernels_vs_reference["rel_l2"] if s.kernels_vs_reference else None
        target = config.target
        rows.append({
            "model": config.model, "px": config.resolution, "tokens": s.tokens, "batch": config.batch, "m": s.landmarks,
            "fna_ops": s.fna_ops, "dense_ms": dense.median_ms, "fna_ms": f.median_ms, "dense_p90_ms": dense.p90_ms,
            "fna_p90_ms": f.p90_ms, "speedup": s.speedup, "flop_bound": s.flop_bound, "share_of_bound": s.share_of_bound,
            "dense_peak_mib": dense.peak_mem_mb, "fna_peak_mib": f.peak_mem_mb, "baseline_mib": dense.baseline_mem_mb,
            "cosine_vs_dense": s.cosine, "rel_l2_vs_dense": s.rel_l2, "kernels_vs_reference_rel_l2": kvr,
            "kernels_ok": None if kvr is None else kvr <= KERNEL_TOLERANCE,
            "cuda_graph_dense": dense.cuda_graph, "cuda_graph_fna": f.cuda_graph,
            "graph_fallback": f.graph_fallback or dense.graph_fallback,
            "target": target, "target_met": None if target is None else s.speedup >= target,
        })
    return rows


def markdown(outcomes: list[Outcome], header: str) -> str:
    lines = [header, "",
             "| model | px | tokens | B | m | FNA ops | dense ms | FNA ms | speedup | FLOP bound | target | dense MiB | FNA MiB "
             "| cos FNA vs dense | kernels vs ref rel L2 | CUDA graph dense/FNA |",
             "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---|"]
    for o in outcomes:
        for r in o.rows:
            target = "-" if r["target"] is None else f"≥ {r['target']:g}x: {'met' if r['target_met'] else 'not met'}"
            kvr = "-" if r["kernels_vs_reference_rel_l2"] is None else f"{r['kernels_vs_reference_rel_l2']:.2e}" + (
                "" if r["kernels_ok"] else " (> 1e-2)")
            lines.append(
                f"| {SHORT.get(r['model'], r['model'])} | {r['px']} | {r['tokens']} | {r['batch']} | {r['m']} | {r['fna_ops']} "
                f"| {r['dense_ms']:.3f} | {r['fna_ms']:.3f} | {r['speedup']:.2f}x | {r['flop_bound']:.2f}x | {target} "
                f"| {r['dense_peak_mib']:.0f} | {r['fna_peak_mib']:.0f} | {r['cosine_vs_dense']:.5f} | {kvr} "
                f"| {'yes' if r['cuda_graph_dense'] else 'no'}/{'yes' if r['cuda_graph_fna'] else 'no'} |")
    notes = [f"- {o.config.name}: {o.status} ({o.reason})" for o in outcomes if o.status != "ran"]
    fallbacks = sorted({f"- {r['model']}@{r['px']}/B{r['batch']} {r['fna_ops']}: {r['graph_fallback']}"
                        for o in outcomes for r in o.rows if r["graph_fallback"]})
    if notes:
        lines += ["", "Not run:", *notes]
    if fallbacks:
        lines += ["", "Timed eagerly (no CUDA graph):", *fallbacks]
    return "\n".join(lines) + "\n"


def write_atomic(path: Path, text: str) -> None:
    from fna_deploy.utils import write_text_atomic

    write_text_atomic(path, text)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[1:]))
    ints = lambda s: [int(x) for x in s.split(",") if x.strip()]  # noqa: E731
    words = lambda s: [x.strip() for x in s.split(",") if x.strip()]  # noqa: E731
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "device_e2e", help="folder for e2e.json and e2e.md")
    ap.add_argument("--models", type=words, default=["vit_base_patch16_224", "vit_large_patch16_224"], help="timm names")
    ap.add_argument("--resolutions", type=ints, default=[1024, 2048])
    ap.add_argument("--batches", type=ints, default=[1, 8])
    ap.add_argument("--landmarks", type=int, default=128)
    ap.add_argument("--skip", type=words, default=[], help="configurations to leave out, e.g. vit_large_patch16_224@2048/B8")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--dtype", choices=["fp16", "bf16", "fp32"], default=None, help="default: fp16 on cuda, fp32 on cpu")
    ap.add_argument("--no-cuda-graphs", action="store_true", help="time eagerly (default: CUDA graphs on cuda)")
    ap.add_argument("--fna-ops", choices=["auto", "reference", "both"], default=None,
                    help="default: both where our kernels are loaded (each timed), else auto")
    ap.add_argument("--library", type=Path, default=None, help="libfna.so (or its build folder) to load first")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=10, help="interleaved timed repeats per variant")
    ap.add_argument("--budget-s", type=float, default=170.0, help="wall-clock budget for all configurations")
    ap.add_argument("--dry-run", action="store_true", help="print the plan and the budget, run nothing")
    args = ap.parse_args(argv)

    import torch

    from fna_deploy import bench as fb
    from fna_deploy import native

    t0 = time.time()
    try:
        device = fb.resolve_device(args.device)
        dtype = fb.resolve_dtype(args.dtype, device)
        graphs = fb.resolve_cuda_graphs(False if args.no_cuda_graphs else None, device)
    except ValueError as exc:
        print(f"device_e2e: {exc}", file=sys.stderr)
        return 2
    configs, outcomes = plan(args.models, args.resolutions, args.batches, args.skip)
    print(f"device_e2e: {len(configs)} configurations on {device} ({dtype}, CUDA graphs {'on' if graphs else 'off'}), "
          f"m={args.landmarks}, FNA on blocks 1-end, warm-up {args.warmup}, {args.iters} interleaved repeats, "
          f"budget {args.budget_s:.0f} s", flush=True)
    for c in configs:
        print(f"  {c.name}" + (f"  (target >= {c.target:g}x)" if c.target else ""))
    if args.dry_run:
        return 0
    if args.library is not None:
        try:
            native.load(args.library)
        except native.NativeLibraryError as exc:
            print(f"device_e2e: {exc}", file=sys.stderr)
            return 2
    implementation, why = fb.fna_ops_on(device)
    fna_ops = args.fna_ops or ("both" if implementation == fb.FNA_KERNELS else "auto")
    print(f"fna ops: {implementation} ({why}); timing {fna_ops}", flush=True)

    import timm

    cache: dict[tuple[str, int], Any] = {}
    for config in configs:
        spent = time.time() - t0
        guess = estimate_seconds(config, outcomes)
        if spent >= args.budget_s or (guess is not None and spent + guess > args.budget_s):
            reason = f"time budget: {spent:.0f} s spent of {args.budget_s:.0f} s" + (f", about {guess:.0f} s needed" if guess else "")
            outcomes.append(Outcome(config, "skipped", reason))
            print(f"-- {config.name}: skipped ({reason})", flush=True)
            continue
        started = time.time()
        print(f"-- {config.name} (at {spent:.0f} s)", flush=True)
        try:
            key = (config.model, config.resolution)
            if key not in cache:
                cache.clear()  # one model on the device at a time
                if device == "cuda":
                    torch.cuda.empty_cache()
                cache[key] = timm.create_model(config.model, pretrained=False, img_size=config.resolution).eval()
            model = cache[key]
            blocks = len(model.blocks)
            report = fb.run_bench(lambda _res: model, model_label=config.model, resolutions=[config.resolution],
                                  landmarks=[args.landmarks], layers=f"1-{blocks - 1}", backends=["torch"], device=device,
                                  dtype=dtype, cuda_graphs=graphs, fna_ops=fna_ops, batch=config.batch, warmup=args.warmup,
                                  iters=args.iters, log=lambda line: print("   ", line, flush=True))
            outcome = Outcome(config, "ran", seconds=time.time() - started, rows=rows_of(config, report), report=report.to_dict())
        except Exception as exc:  # an out-of-memory or a failing kernel: say so, go on with the rest
            outcome = Outcome(config, "failed", f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}",
                              seconds=time.time() - started)
            if device == "cuda":
                cache.clear()
                torch.cuda.empty_cache()
        outcomes.append(outcome)
        gc.collect()  # the run's model copies and CUDA graphs (their memory pools) go before the next
        if device == "cuda":
            torch.cuda.empty_cache()
        for r in outcome.rows:
            kvr = r["kernels_vs_reference_rel_l2"]
            print(f"   {r['fna_ops']}: dense {r['dense_ms']:.3f} ms, FNA {r['fna_ms']:.3f} ms, {r['speedup']:.2f}x "
                  f"(bound {r['flop_bound']:.2f}x), cos {r['cosine_vs_dense']:.5f}"
                  + ("" if kvr is None else f", kernels vs ref {kvr:.2e}"), flush=True)
        print(f"   {outcome.status}{': ' + outcome.reason if outcome.reason else ''} ({outcome.seconds:.1f} s)", flush=True)

    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    total = time.time() - t0
    kernels_bad = [r for o in outcomes for r in o.rows if r["kernels_ok"] is False]
    failed = [o for o in outcomes if o.status == "failed"]
    result = {
        "gpu": name, "device": device, "dtype": dtype, "cuda_graphs": graphs, "torch": torch.__version__, "cuda": torch.version.cuda,
        "fna_ops": implementation, "fna_ops_note": why, "fna_ops_timed": fna_ops, "landmarks": args.landmarks,
        "warmup": args.warmup, "iters": args.iters, "budget_s": args.budget_s, "total_s": round(total, 1),
        "kernel_tolerance": KERNEL_TOLERANCE, "kernels_ok": not kernels_bad, "failed": [o.config.name for o in failed],
        "targets": {f"{m}@{r}/B{b}": t for (m, r, b), t in TARGETS.items()},
        "outcomes": [{**asdict(o.config), "name": o.config.name, "status": o.status, "reason": o.reason,
                      "seconds": round(o.seconds, 1), "rows": o.rows, "report": o.report} for o in outcomes],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out / "e2e.json", json.dumps(result, indent=2) + "\n")
    timing = ("CUDA-event medians" if device == "cuda" else "host-clock medians") + f" of {args.iters} interleaved repeats"
    memory = "peak allocated above inputs and weights" if device == "cuda" else "the process's peak RSS (not per variant)"
    header = (f"### {name}: timm ViTs end to end, dense vs FNA (torch {torch.__version__}, CUDA {torch.version.cuda})\n\n"
              f"{dtype}, CUDA graphs {'both sides' if graphs else 'off'}, FNA on blocks 1-end, m={args.landmarks}, random weights; "
              f"{timing} after {args.warmup} warm-up runs; memory: {memory}. fna ops: {implementation}. "
              f"Kernels vs reference: rel L2 of the whole model's output (<= {KERNEL_TOLERANCE:g}).")
    table = markdown(outcomes, header)
    write_atomic(args.out / "e2e.md", table)
    print(f"\ndevice_e2e: {total:.0f} s; kernels vs reference {'ok' if not kernels_bad else 'FAILED'}; "
          f"{len(failed)} configuration(s) failed\n")
    print(table)
    return 1 if kernels_bad or failed else 0


if __name__ == "__main__":
    sys.exit(main())
