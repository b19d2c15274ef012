#!/usr/bin/env python
"""Time the FNA reference ops against dense attention (torch SDPA) on this machine.

    python scripts/bench_ops.py [--tokens 1024,4096,16384] [--landmarks 64] [--device cpu] [--json out.json]

Per N: median latency of dense SDPA, nystrom_attention (given landmarks), select_landmarks (FPS over
q averaged over heads, as the patch does) and their sum, plus the speedup. B=1, H=12, d=64 by default.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys

import torch

from fna_deploy.ops import dense_attention, nystrom_attention, select_landmarks


def median_ms(fn, warmup: int, iters: int, sync) -> float:
    """The project's timing harness (fna_deploy.timing), host clock, ``sync`` inside each timed call."""
    from fna_deploy.timing import time_call

    def run():
        fn()
        sync()

    return time_call(run, warmup=warmup, iters=iters)["median_ms"]


def main(argv: "list[str] | None" = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", default="1024,4096,16384")
    parser.add_argument("--landmarks", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    rows = []
    torch.manual_seed(0)
    for n in [int(t) for t in args.tokens.split(",")]:
        shape = (args.batch, args.heads, n, args.head_dim)
        q, k, v = (torch.randn(shape, device=device, dtype=dtype) for _ in range(3))
        feats = q.mean(1)
        idx = select_landmarks(feats, args.landmarks, num_prefix=1)
        with torch.no_grad():
            dense = median_ms(lambda: dense_attention(q, k, v), args.warmup, args.iters, sync)
            nys = median_ms(lambda: nystrom_attention(q, k, v, idx), args.warmup, args.iters, sync)
            sel = median_ms(lambda: select_landmarks(feats, args.landmarks, num_prefix=1), args.warmup, args.iters, sync)
        row = {
            "N": n,
            "dense_ms": round(dense, 3),
            "nystrom_ms": round(nys, 3),
            "landmarks_ms": round(sel, 3),
            "fna_total_ms": round(nys + sel, 3),
            "speedup_nystrom": round(dense / nys, 2),
            "speedup_total": round(dense / (nys + sel), 2),
        }
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)

    meta = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "B": args.batch,
        "H": args.heads,
        "d": args.head_dim,
        "m": args.landmarks,
        "dtype": args.dtype,
        "iters": args.iters,
    }
    print(f"\nB={args.batch} H={args.heads} d={args.head_dim} m={args.landmarks} {args.dtype} on {meta['device']} ({meta['threads']} threads)\n")
    print("| N | dense SDPA ms | nystrom ms | landmarks ms | FNA total ms | speedup (nystrom) | speedup (total) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['N']} | {r['dense_ms']:.2f} | {r['nystrom_ms']:.2f} | {r['landmarks_ms']:.2f} | "
            f"{r['fna_total_ms']:.2f} | {r['speedup_nystrom']:.1f}x | {r['speedup_total']:.1f}x |"
        )
    if args.json_path:
        with open(args.json_path, "w") as fh:
            json.dump({"meta": meta, "rows": rows}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
