#!/usr/bin/env bash
# GPU check of the fna kernels for the device machine (one run, under 8 minutes):
#   1. build libfna for sm_90 (kernels, C API, C++ tests) with CMake;
#   2. ctest (the kernel test runs against the C++ reference on the GPU);
#   3. the pytest GPU tests (kernels vs the fp32 PyTorch reference, through the custom ops);
#   4. scripts/device_bench.py: correctness again, then CUDA-event timings of our kernels vs
#      torch SDPA dense vs the PyTorch FNA reference; prints the table last.
# Everything lands in $OUT (default ./out/device_check): build.log, ctest.txt, pytest.txt,
# bench.json, benchmarks.md, device_check.json (summary). Exit code: non-zero if a check failed.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/out/device_check}
mkdir -p "$OUT"
BUILD=${FNA_DEVICE_BUILD:-$ROOT/build/device_sm90}
ARCH=${FNA_DEVICE_ARCH:-90}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
T0=$(date +%s)
status=0
step() { echo; echo "== $* ($(( $(date +%s) - T0 )) s)"; }

step "device"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 | tee "$OUT/gpu.txt"
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))" \
  2>&1 | tee -a "$OUT/gpu.txt"

step "build (sm_$ARCH)"
B0=$(date +%s)
if command -v cmake >/dev/null; then
  timeout 240 python -m fna_deploy.cli plugin build -o "$BUILD" --cuda-arch "$ARCH" -j "$(nproc)" >"$OUT/build.log" 2>&1
  build_rc=$?
else
  # no cmake on this machine: the same sources with nvcc directly (what CMake would do)
  echo "cmake not found: building with nvcc directly" | tee "$OUT/build.log"
  S=plugins/fna
  mkdir -p "$BUILD/lib" "$BUILD/bin"
  NVFLAGS=(-O3 -std=c++17 -arch=sm_$ARCH -I$S -Xcompiler -fPIC,-fvisibility=hidden -cudart static)
  timeout 240 nvcc "${NVFLAGS[@]}" -shared $S/landmarks.cu $S/nystrom.cu $S/fna_logic.cpp $S/reference.cpp \
      $S/fna_capi.cpp -o "$BUILD/lib/libfna.so" >>"$OUT/build.log" 2>&1 \
    && timeout 200 nvcc "${NVFLAGS[@]}" -DFNA_WITH_CUDA=1 plugins/tests/test_kernels.cpp $S/landmarks.cu $S/nystrom.cu \
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
  exit 1
fi
LIB="$BUILD/lib/libfna.so"

step "C++ tests"
if command -v ctest >/dev/null && [ -f "$BUILD/CTestTestfile.cmake" ]; then
  timeout 120 ctest --test-dir "$BUILD" --output-on-failure 2>&1 | tee "$OUT/ctest.txt"
  ctest_rc=${PIPESTATUS[0]}
else
  timeout 120 "$BUILD/bin/fna_test_kernels" 2>&1 | tee "$OUT/ctest.txt"
  ctest_rc=${PIPESTATUS[0]}
fi
[ $ctest_rc -eq 0 ] || status=1

step "pytest GPU tests"
FNA_TEST_CUDA_BUILD="$BUILD" timeout 150 python -m pytest -q -m gpu tests/plugins -p no:cacheprovider 2>&1 | tee "$OUT/pytest.txt"
pytest_rc=${PIPESTATUS[0]}
[ $pytest_rc -eq 0 ] || status=1

step "benchmark"
timeout 240 python scripts/device_bench.py --library "$LIB" --out "$OUT" 2>&1 | tee "$OUT/bench.txt"
bench_rc=${PIPESTATUS[0]}
[ $bench_rc -eq 0 ] || status=1

python - "$OUT" "$BUILD_S" "$ctest_rc" "$pytest_rc" "$bench_rc" "$(( $(date +%s) - T0 ))" <<'PY'
import json, sys, pathlib
out, build_s, ctest_rc, pytest_rc, bench_rc, total = sys.argv[1:]
summary = {"build_ok": True, "build_seconds": int(build_s), "ctest_rc": int(ctest_rc), "pytest_gpu_rc": int(pytest_rc),
           "bench_rc": int(bench_rc), "total_seconds": int(total)}
bench = pathlib.Path(out) / "bench.json"
if bench.exists():
    data = json.loads(bench.read_text())
    summary.update(gpu=data.get("gpu"), correctness_ok=data.get("correctness_ok"), targets=data.get("targets"))
tmp = pathlib.Path(out) / "device_check.json.tmp"
tmp.write_text(json.dumps(summary, indent=2))
tmp.replace(pathlib.Path(out) / "device_check.json")
print(json.dumps(summary))
PY
step "done: status=$status (build ${BUILD_S}s)"
# the table last
[ -f "$OUT/benchmarks.md" ] && cat "$OUT/benchmarks.md"
exit $status
