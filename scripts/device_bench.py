#!/usr/bin/env python
"""GPU correctness + timing of the fna CUDA kernels (run by scripts/device_check.sh).

1. correctness: kernels vs the fp32 PyTorch reference (fp32 rel err <= 1e-4, fp16 <= 1e-2,
   identical fp32 landmark indices), on a few shapes;
2. timing with CUDA events (median of --reps after --warmup) for B in {1, 8}, H=16, d=64,
   N in {1024, 4096, 16384}, m in {64, 128, 256}, fp16: our NystromAttention and landmark kernels,
   torch SDPA dense (flash where available), and the PyTorch FNA reference;
3. the issue's targets at B=1, N=4096, m=128; a table printed last; JSON (and a markdown table for
   docs/benchmarks.md) written to --out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fna_deploy import native  # noqa: E402
from fna_deploy.ops.landmarks import landmarks_reference  # noqa: E402
from fna_deploy.ops.nystrom import nystrom_reference  # noqa: E402


def cuda_time_ms(fn, warmup: int, reps: int) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def copy_bandwidth_gbs() -> float:
    """Achieved device-to-device copy bandwidth (read + write), the memory-traffic yardstick."""
    x = torch.empty(512 * 2**20, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    ms = cuda_time_ms(lambda: y.copy_(x), 3, 20)
    return 2 * x.numel() / (ms * 1e-3) / 1e9


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().cpu(), b.double().cpu()
    return ((a - b).norm() / b.norm()).item()


def correctness(lib: native.NativeLibrary) -> list[dict]:
    rows = []
    g = torch.Generator().manual_seed(0)
    for b, n, d, m, kw in [(2, 4096, 64, 128, {"num_prefix": 1}), (1, 1500, 32, 1500, {}),
                           (2, 2000, 64, 64, {"num_prefix": 1, "massive_ratio": 10.0, "artifact_ratio": 3.0}),
                           (2, 999, 16, 50, {"method": "grid", "num_prefix": 2})]:
        f = torch.randn(b, n, d, generator=g)
        s = torch.rand(b, n, generator=g) + 1
        s[:, n // 3] = 100.0
        s[:, n // 2] = 5.0
        args = (kw.get("num_prefix", 0), kw.get("massive_ratio", 0.0), kw.get("artifact_ratio", 0.0), kw.get("method", "fps"))
        want = landmarks_reference(f, s, m, *args)
        got = lib.landmarks_cuda(f.cuda(), s.cuda(), m, *args)
        rows.append({"op": "landmarks", "shape": [b, n, d, m], "attrs": kw, "identical": bool(torch.equal(got.cpu(), want))})
    for b, h, n, d, m, dtype in [(1, 16, 4096, 64, 128, torch.float32), (1, 16, 4096, 64, 128, torch.float16),
                                 (2, 4, 1000, 64, 256, torch.float32), (1, 2, 777, 128, 77, torch.float16),
                                 (1, 2, 500, 40, 33, torch.float32)]:
        q, k, v = (torch.randn(b, h, n, d, generator=g).to(dtype) for _ in range(3))
        idx = landmarks_reference(q.float().mean(1), None, m, 0, 0.0, 0.0, "fps")
        want = nystrom_reference(q.float(), k.float(), v.float(), idx, 0.0, 6)
        got = lib.nystrom_cuda(q.cuda(), k.cuda(), v.cuda(), idx.cuda(), 0.0, 6)
        err = rel(got, want)
        tol = 1e-4 if dtype == torch.float32 else 1e-2
        rows.append({"op": "nystrom", "shape": [b, h, n, d, m], "dtype": str(dtype).replace("torch.", ""),
                     "rel_err": err, "tol": tol, "ok": err <= tol})
    return rows


def bench(lib, batches, ns, ms, heads, dim, warmup, reps, copy_gbs) -> list[dict]:
    rows = []
    for b in batches:
        for n in ns:
            g = torch.Generator(device="cuda").manual_seed(n)
            q, k, v = (torch.randn(b, heads, n, dim, device="cuda", dtype=torch.float16, generator=g) for _ in range(3))
            feats = q.mean(1)
            sdpa = cuda_time_ms(lambda: F.scaled_dot_product_attention(q, k, v), warmup, reps)
            floor_ms = 4 * q.numel() * q.element_size() / (copy_gbs * 1e9) * 1e3
            for m in ms:
                idx = lib.landmarks_cuda(feats, None, m, 1, 0.0, 0.0, "fps")
                t_lm = cuda_time_ms(lambda: lib.landmarks_cuda(feats, None, m, 1, 0.0, 0.0, "fps"), warmup, reps)
                t_ny = cuda_time_ms(lambda: lib.nystrom_cuda(q, k, v, idx, 0.0, 6), warmup, reps)
                t_ref_ny = cuda_time_ms(lambda: nystrom_reference(q, k, v, idx, 0.0, 6), warmup, max(3, reps // 4))
                t_ref_lm = cuda_time_ms(lambda: landmarks_reference(feats, None, m, 1, 0.0, 0.0, "fps"), 1, 3)
                row = {"B": b, "H": heads, "d": dim, "N": n, "m": m, "dtype": "float16",
                       "sdpa_dense_ms": sdpa, "fna_nystrom_ms": t_ny, "fna_landmarks_ms": t_lm,
                       "torch_ref_nystrom_ms": t_ref_ny, "torch_ref_landmarks_ms": t_ref_lm,
                       "speedup_vs_sdpa": sdpa / t_ny, "memory_floor_ms": floor_ms, "x_floor": t_ny / floor_ms}
                rows.append(row)
                print(f"  B={b} N={n:5d} m={m:3d}: ours {t_ny:8.3f} ms  sdpa {sdpa:8.3f} ms  ref {t_ref_ny:8.3f} ms  "
                      f"landmarks {t_lm * 1e3:8.1f} us", flush=True)
            del q, k, v, feats
            torch.cuda.empty_cache()
    return rows


def targets(rows) -> dict:
    r = next((x for x in rows if x["B"] == 1 and x["N"] == 4096 and x["m"] == 128), None)
    if r is None:
        return {}
    return {
        "config": "fp16 B=1 N=4096 H=16 d=64 m=128",
        "nystrom_speedup_vs_sdpa": r["speedup_vs_sdpa"], "speedup_target": 8.0,
        "speedup_met": r["speedup_vs_sdpa"] >= 8.0,
        "nystrom_x_memory_floor": r["x_floor"], "floor_target": 2.0, "floor_met": r["x_floor"] <= 2.0,
        "landmarks_us": r["fna_landmarks_ms"] * 1e3, "landmarks_target_us": 50.0,
        "landmarks_met": r["fna_landmarks_ms"] * 1e3 <= 50.0,
    }


def table(rows) -> str:
    head = "| B | N | m | ours NystromAttention (ms) | SDPA dense (ms) | speedup | x mem floor | PyTorch FNA ref (ms) | landmarks (us) | PyTorch landmarks (ms) |"
    sep = "|---|---|---|---|---|---|---|---|---|---|"
    lines = [head, sep]
    for r in rows:
        lines.append(f"| {r['B']} | {r['N']} | {r['m']} | {r['fna_nystrom_ms']:.3f} | {r['sdpa_dense_ms']:.3f} | "
                     f"{r['speedup_vs_sdpa']:.2f}x | {r['x_floor']:.1f} | {r['torch_ref_nystrom_ms']:.3f} | "
                     f"{r['fna_landmarks_ms'] * 1e3:.1f} | {r['torch_ref_landmarks_ms']:.2f} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--library", required=True, help="libfna.so built with CUDA")
    ap.add_argument("--out", required=True, type=Path, help="output directory for bench.json / benchmarks.md")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--tokens", default="1024,4096,16384")
    ap.add_argument("--landmarks", default="64,128,256")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--skip-bench", action="store_true")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("device_bench: no CUDA device visible to torch", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    lib = native.NativeLibrary(Path(args.library))
    if not lib.built_with_cuda:
        print(f"device_bench: {args.library} was built without CUDA", file=sys.stderr)
        return 2
    gpu = torch.cuda.get_device_name(0)
    result = {"gpu": gpu, "torch": torch.__version__, "cuda": torch.version.cuda, "library": str(args.library)}
    t0 = time.time()
    result["correctness"] = correctness(lib)
    ok = all(r.get("identical", r.get("ok")) for r in result["correctness"])
    result["correctness_ok"] = ok
    print(f"correctness: {'PASS' if ok else 'FAIL'} ({time.time() - t0:.0f} s)")
    for r in result["correctness"]:
        print("  ", json.dumps(r))
    if not args.skip_bench:
        result["copy_bandwidth_gbs"] = copy_bandwidth_gbs()
        print(f"copy bandwidth: {result['copy_bandwidth_gbs']:.0f} GB/s")
        ints = lambda s: [int(x) for x in s.split(",")]  # noqa: E731
        result["bench"] = bench(lib, ints(args.batches), ints(args.tokens), ints(args.landmarks), 16, 64,
                                args.warmup, args.reps, result["copy_bandwidth_gbs"])
        result["targets"] = targets(result["bench"])
    tmp = args.out / "bench.json.tmp"
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(args.out / "bench.json")
    if not args.skip_bench:
        md = f"## {gpu} (torch {torch.__version__}, CUDA {torch.version.cuda})\n\nfp16, H=16, d=64, CUDA-event medians.\n\n"
        md += table(result["bench"]) + "\n\nTargets: " + json.dumps(result["targets"]) + "\n"
        (args.out / "benchmarks.md").write_text(md)
        print()
        print(f"GPU: {gpu}")
        print(table(result["bench"]))
        print("targets:", json.dumps(result["targets"], indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
