#!/usr/bin/env bash
# GPU check of the fna kernels for the device machine (one run, under 6 minutes of GPU time):
#   1. build libfna for sm_90 (kernels, C API, C++ tests) with CMake (FNA_DEVICE_SKIP_BUILD=1
#      reuses a CUDA build already in $FNA_DEVICE_BUILD, e.g. one carried from a CPU machine);
#   2. ctest (the kernel test runs against the C++ reference on the GPU);
#   3. the pytest GPU tests (kernels vs the fp32 PyTorch reference through the custom ops; bench's
#      CUDA graphs, fallback and fp16 runs);
#   4. scripts/device_bench.py: correctness again, then CUDA-event timings of our kernels vs
#      torch SDPA dense vs the PyTorch FNA reference (a trimmed sweep: FNA_DEVICE_BENCH_ARGS);
#   5. scripts/device_e2e.py: timm ViT-B/16 and ViT-L/16 at 1024 and 2048 px, B=1 and 8, dense vs
#      FNA (blocks 1-end, m=128), fp16, CUDA graphs both sides, through fna_deploy.bench; it gets
#      what is left of the budget (FNA_DEVICE_BUDGET_S, default 340 s for the whole script) and
#      skips, saying so, the configurations that would not fit (the issue's targets run first).
# Everything lands in $OUT (default ./out/device_check): bench.json, benchmarks.md, e2e.json,
# e2e.md, device_check.json (summary) and logs.tar.gz (build.log, ctest.txt, pytest.txt,
# bench.txt, e2e.txt, gpu.txt): six files, under the device tool's eight. The tables print last.
# Exit code: non-zero if a check failed (missed speed targets are reported, not failed).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/out/device_check}
mkdir -p "$OUT"
BUILD=${FNA_DEVICE_BUILD:-$ROOT/build/device_sm90}
ARCH=${FNA_DEVICE_ARCH:-90}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
T0=$(date +%s)
BUDGET=${FNA_DEVICE_BUDGET_S:-340}
status=0
step() { echo; echo "== $* ($(( $(date +%s) - T0 )) s of $BUDGET s)"; }
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }
# the device tool returns at most 8 files from $OUT: the logs travel as one archive
pack_logs() {
  local logs=()
  for f in gpu.txt build.log ctest.txt pytest.txt bench.txt e2e.txt; do [ -f "$OUT/$f" ] && logs+=("$f"); done
  [ ${#logs[@]} -gt 0 ] && tar -czf "$OUT/logs.tar.gz" -C "$OUT" "${logs[@]}" && (cd "$OUT" && rm -f "${logs[@]}")
}

# pure-Python wheels carried in .whl (polygraphy, onnx-graphsurgeon: see /work/.library/device/README.md)
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi

step "device"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 | tee "$OUT/gpu.txt"
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))" \
  2>&1 | tee -a "$OUT/gpu.txt"

step "build (sm_$ARCH)"
B0=$(date +%s)
if [ "${FNA_DEVICE_SKIP_BUILD:-0}" = 1 ] && [ -f "$BUILD/lib/libfna.so" ]; then
  echo "reusing the build in $BUILD (FNA_DEVICE_SKIP_BUILD=1)" | tee "$OUT/build.log"
  build_rc=0
elif command -v cmake >/dev/null; then
  timeout 180 python -m fna_deploy.cli plugin build -o "$BUILD" --cuda-arch "$ARCH" -j "$(nproc)" >"$OUT/build.log" 2>&1
  build_rc=$?
else
  # no cmake on this machine: the same sources with nvcc directly (what CMake would do)
  echo "cmake not found: building with nvcc directly" | tee "$OUT/build.log"
  S=plugins/fna
  mkdir -p "$BUILD/lib" "$BUILD/bin"
  NVFLAGS=(-O3 -std=c++17 -arch=sm_$ARCH -I$S -Xcompiler -fPIC,-fvisibility=hidden -cudart static)
  timeout 180 nvcc "${NVFLAGS[@]}" -shared $S/landmarks.cu $S/nystrom.cu $S/fna_logic.cpp $S/reference.cpp \
      $S/fna_capi.cpp -o "$BUILD/lib/libfna.so" >>"$OUT/build.log" 2>&1 \
    && timeout 200 nvcc "${NVFLAGS[@]}" -DFNA_WITH_CUDA=1 plugins/cpp_tests/test_kernels.cpp $S/landmarks.cu $S/nystrom.cu \
      $S/fna_logic.cpp $S/reference.cpp -o "$BUILD/bin/fna_test_kernels" >>"$OUT/build.log" 2>&1
  build_rc=$?
  printf '{"library": "%s", "cuda": true, "cuda_reason": "", "cuda_architectures": "%s", "trt_plugin": null, "trt_reason": "built without cmake", "trt_include_dir": ""}\n' \
    "$BUILD/lib/libfna.so" "$ARCH" >"$BUILD/fna_build_info.json"
fi
BUILD_S=$(( $(date +%s) - B0 ))
tail -5 "$OUT/build.log"
if [ $build_rc -ne 0 ]; then
  echo "build failed (rc=$build_rc); see $OUT/build.log"
  printf '{"build_ok": false, "build_seconds": %d}\n' "$BUILD_S" >"$OUT/device_check.json"
  tail -40 "$OUT/build.log"
  pack_logs
  exit 1
fi
LIB="$BUILD/lib/libfna.so"

step "C++ tests"
if command -v ctest >/dev/null && [ -f "$BUILD/CTestTestfile.cmake" ]; then
  timeout 60 ctest --test-dir "$BUILD" --output-on-failure 2>&1 | tee "$OUT/ctest.txt"
  ctest_rc=${PIPESTATUS[0]}
else
  timeout 60 "$BUILD/bin/fna_test_kernels" 2>&1 | tee "$OUT/ctest.txt"
  ctest_rc=${PIPESTATUS[0]}
fi
[ $ctest_rc -eq 0 ] || status=1

step "pytest GPU tests"
FNA_TEST_CUDA_BUILD="$BUILD" timeout 120 python -m pytest -q -m gpu tests/plugins -p no:cacheprovider 2>&1 | tee "$OUT/pytest.txt"
pytest_rc=${PIPESTATUS[0]}
[ $pytest_rc -eq 0 ] || status=1

step "kernel benchmark"
# shellcheck disable=SC2086  # word splitting of the argument list is intended
timeout 90 python scripts/device_bench.py --library "$LIB" --out "$OUT" \
  ${FNA_DEVICE_BENCH_ARGS:---batches 1,8 --tokens 4096,16384 --landmarks 128 --reps 10} 2>&1 | tee "$OUT/bench.txt"
bench_rc=${PIPESTATUS[0]}
[ $bench_rc -eq 0 ] || status=1

step "end to end (timm ViTs, fna_deploy.bench)"
E2E_BUDGET=$(( $(left) - 25 ))  # the summary and packing after it need a few seconds
if [ $E2E_BUDGET -lt 30 ]; then
  echo "no time left for the end-to-end step ($E2E_BUDGET s)" | tee "$OUT/e2e.txt"
  e2e_rc=3
else
  timeout $(( E2E_BUDGET + 45 )) python scripts/device_e2e.py --library "$LIB" --out "$OUT" --budget-s "$E2E_BUDGET" \
    ${FNA_DEVICE_E2E_ARGS:-} 2>&1 | tee "$OUT/e2e.txt"
  e2e_rc=${PIPESTATUS[0]}
fi
[ $e2e_rc -eq 0 ] || status=1

python - "$OUT" "$BUILD_S" "$ctest_rc" "$pytest_rc" "$bench_rc" "$e2e_rc" "$(( $(date +%s) - T0 ))" <<'PY'
import json, sys, pathlib
out, build_s, ctest_rc, pytest_rc, bench_rc, e2e_rc, total = sys.argv[1:]
summary = {"build_ok": True, "build_seconds": int(build_s), "ctest_rc": int(ctest_rc), "pytest_gpu_rc": int(pytest_rc),
           "bench_rc": int(bench_rc), "e2e_rc": int(e2e_rc), "total_seconds": int(total)}
bench = pathlib.Path(out) / "bench.json"
if bench.exists():
    data = json.loads(bench.read_text())
    summary.update(gpu=data.get("gpu"), correctness_ok=data.get("correctness_ok"), targets=data.get("targets"))
e2e = pathlib.Path(out) / "e2e.json"
if e2e.exists():
    data = json.loads(e2e.read_text())
    summary["e2e"] = {"kernels_ok": data.get("kernels_ok"), "failed": data.get("failed"), "total_s": data.get("total_s"),
                      "rows": [{k: r[k] for k in ("model", "px", "batch", "fna_ops", "dense_ms", "fna_ms", "speedup", "target",
                                                  "target_met", "kernels_vs_reference_rel_l2")}
                               for o in data.get("outcomes", []) for r in o.get("rows", [])],
                      "not_run": {o["name"]: o["reason"] for o in data.get("outcomes", []) if o["status"] != "ran"}}
tmp = pathlib.Path(out) / "device_check.json.tmp"
tmp.write_text(json.dumps(summary, indent=2))
tmp.replace(pathlib.Path(out) / "device_check.json")
print(json.dumps(summary))
PY
step "done: status=$status (build ${BUILD_S}s)"
pack_logs
# the tables last
[ -f "$OUT/benchmarks.md" ] && cat "$OUT/benchmarks.md"
[ -f "$OUT/e2e.md" ] && { echo; cat "$OUT/e2e.md"; }
exit $status
