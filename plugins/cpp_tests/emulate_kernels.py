#!/usr/bin/env python
"""Run the CUDA kernels' test (test_kernels.cpp) on the CPU through emu/cuda_emu.h.

The .cu files are copied with two mechanical rewrites (kernel<<<...>>>(...) launches become
emu_launch(kernel, ..., ...); `extern __shared__ T x[];` becomes a pointer to the block's dynamic
shared memory), compiled with g++ -std=c++20 together with the unchanged C++ sources, and run.
Needs only g++ and the CUDA headers (cuda_fp16.h); no GPU, no nvcc. Cluster launches
(cudaLaunchKernelEx with a cluster dimension, as landmarks.cu makes them) need no rewrite: the
emulator implements cudaLaunchKernelEx and runs each cluster's CTAs concurrently (emu/cuda_emu.h).

    python plugins/cpp_tests/emulate_kernels.py [--build DIR]     # exit code of the test binary
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "fna"
LAUNCH = re.compile(r"([A-Za-z_][\w:]*(?:<[^<>;()]*>)?)<<<(.*?)>>>\(", re.S)
DYN_SMEM = re.compile(r"extern __shared__ (\w+) (\w+)\[\];")


def cuda_include() -> Path | None:
    candidates = [os.environ.get("CUDA_HOME", ""), "/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.insert(0, str(Path(nvcc).resolve().parent.parent))
    for c in candidates:
        if c and (Path(c) / "include" / "cuda_fp16.h").is_file():
            return Path(c) / "include"
    return None


def rewrite(text: str) -> str:
    text = LAUNCH.sub(lambda m: f"emu_launch({m.group(1)}, {m.group(2)}, ", text)
    return DYN_SMEM.sub(lambda m: f"{m.group(1)}* {m.group(2)} = static_cast<{m.group(1)}*>(EMU_DYNAMIC_SMEM());", text)


def build(out: Path) -> Path:
    inc = cuda_include()
    if inc is None:
        raise SystemExit("emulate_kernels: cuda_fp16.h not found (set CUDA_HOME)")
    out.mkdir(parents=True, exist_ok=True)
    sources = []
    for cu in sorted(SRC.glob("*.cu")):
        dst = out / (cu.stem + "_emu.cpp")
        dst.write_text(rewrite(cu.read_text()))
        if "<<<" in dst.read_text():
            raise SystemExit(f"emulate_kernels: a launch in {cu.name} was not rewritten")
        sources.append(dst)
    exe = out / "fna_test_kernels_emu"
    cmd = ["g++", "-std=c++20", "-O2", "-ffp-contract=off", "-pthread", "-w", f"-I{HERE / 'emu'}", f"-I{SRC}", f"-I{inc}",
           "-DFNA_WITH_CUDA=1", "-DFNA_EMULATED=1", str(HERE / "test_kernels.cpp"), *map(str, sources),
           str(SRC / "fna_logic.cpp"), str(SRC / "reference.cpp"), "-o", str(exe)]
    subprocess.run(cmd, check=True)
    return exe


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", type=Path, default=None, help="work directory (default: a temporary one)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        exe = build(args.build or Path(tmp))
        return subprocess.run([str(exe)]).returncode


if __name__ == "__main__":
    sys.exit(main())
