#!/usr/bin/env python
"""ONNX Runtime (CPU) end-to-end latency: portable FNA export vs dense export, same run.

    python scripts/bench_onnx.py [--models vit_small_patch16_224,vit_base_patch16_224]
        [--resolutions 768,1024] [--landmarks 64] [--layers 2-11] [--threads 2] [--iters 5]
        [--json out.json] [--workdir DIR]

For each model and resolution: export dense and FNA (random weights; timing does not depend on
them), time both with ONNX Runtime interleaved (dense, fna, dense, fna, ...), print the median
latencies, the speedup, and beside it the FLOP bound (the speedup if only the replaced attention
cores got cheaper). Also reports the export time of each model.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main(argv: "list[str] | None" = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="vit_small_patch16_224,vit_base_patch16_224")
    parser.add_argument("--resolutions", default="768,1024")
    parser.add_argument("--landmarks", type=int, default=64)
    parser.add_argument("--layers", default="2-11")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--json", dest="json_path")
    parser.add_argument("--workdir")
    args = parser.parse_args(argv)

    import onnxruntime as ort

    import fna_deploy as fd
    from fna_deploy.export import export_onnx
    from fna_deploy.flops import estimate
    from fna_deploy.runtimes.onnxrt import OnnxrtRunner
    from fna_deploy.timing import time_interleaved

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="fna-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.models.split(","):
        for res in [int(r) for r in args.resolutions.split(",")]:
            model = fd.load_model(f"timm:{name}", img_size=res)
            info = fd.model_info(model)
            cfg = fd.FNAConfig(num_landmarks=args.landmarks, layers=args.layers)
            paths, export_s = {}, {}
            for target in ("dense", "portable"):
                path = workdir / f"{name}_{res}_{target}.onnx"
                started = time.perf_counter()
                export_onnx(model, cfg, path, target=target, dynamic_batch=False, check=False, model_spec=f"timm:{name}")
                export_s[target] = time.perf_counter() - started
                paths[target] = path
            feed = {"images": np.random.default_rng(0).standard_normal((1, 3, res, res), dtype=np.float32)}
            runners = {t: OnnxrtRunner(p, args.threads) for t, p in paths.items()}  # the project's ORT session factory
            for runner in runners.values():
                for _ in range(args.warmup):
                    runner.infer(feed)
            times = time_interleaved({t: (lambda r: lambda: r.infer(feed))(r) for t, r in runners.items()}, args.iters)
            tokens = info.num_tokens()
            layers = cfg.resolve_layers(info.num_blocks)
            flop = estimate(tokens, info.embed_dim, info.num_heads, info.num_blocks, len(layers), args.landmarks)
            dense_ms, fna_ms = statistics.median(times["dense"]), statistics.median(times["portable"])
            row = {
                "model": name,
                "resolution": res,
                "tokens": tokens,
                "fna_layers": args.layers,
                "m": args.landmarks,
                "dense_ms": round(dense_ms, 1),
                "fna_ms": round(fna_ms, 1),
                "speedup": round(dense_ms / fna_ms, 2),
                "flop_bound": round(flop.bound, 2),
                "attention_share": round(flop.attention_share, 3),
                "export_s_dense": round(export_s["dense"], 1),
                "export_s_fna": round(export_s["portable"], 1),
            }
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
            for p in paths.values():
                p.unlink(missing_ok=True)

    meta = {"machine": platform.machine(), "processor": platform.processor(), "threads": args.threads, "iters": args.iters, "onnxruntime": ort.__version__}
    print(f"\nONNX Runtime {ort.__version__} CPU, {args.threads} threads, batch 1, fp32, m={args.landmarks}, FNA layers {args.layers}\n")
    print("| model | px | tokens | dense ms | FNA ms | speedup | FLOP bound | attention share | export s (dense / FNA) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['model']} | {r['resolution']} | {r['tokens']} | {r['dense_ms']:.0f} | {r['fna_ms']:.0f} | "
            f"{r['speedup']:.2f}x | {r['flop_bound']:.2f}x | {100 * r['attention_share']:.0f}% | "
            f"{r['export_s_dense']:.0f} / {r['export_s_fna']:.0f} |"
        )
    if args.json_path:
        Path(args.json_path).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
