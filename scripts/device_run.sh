#!/bin/bash
# device_run.sh: everything one lent-GPU call does, from the repo root with .bundle carried
# (scripts/bundle.sh build-cuda .bundle). Logs and tables go to $OUT (the tool copies them back;
# commit the ones that document claims under bench/). Steps (each can be skipped: STEPS="gpu bench e2e"):
#   gpu    the gpu-label tests (CPU-vs-CUDA agreement) on the H200
#   bench  sqexp bench (copy bandwidth, encode/decode >= 1 GiB, eval, moments)
#   e2e    scripts/device_e2e.sh (full configs/mistral.ini grid on a synthetic Mistral dump + torch)
set -u
OUT=${OUT:-/tmp/sqexp-out}
mkdir -p "$OUT"
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
source scripts/device_env.sh
STEPS=${STEPS:-gpu bench e2e}
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv
  echo "cublas: $SQEXP_CUBLAS_DIR"
} > "$OUT/device.txt" 2>&1
cat "$OUT/device.txt"
for step in $STEPS; do
  case $step in
  gpu)
    for t in .bundle/gpu_*; do
      echo "== $t"
      SQEXP_SRC=$here SQEXP_BIN=$here/.bundle/sqexp timeout 300 "$t" --verbose >> "$OUT/gpu_tests.log" 2>&1
      echo "exit $?" | tee -a "$OUT/gpu_tests.log"
      grep -E "FAIL|SKIP|Synthesis|rows with differing" "$OUT/gpu_tests.log" | tail -30
    done ;;
  bench)
    timeout 300 .bundle/sqexp bench --out "$OUT/bench-h200.txt" > /tmp/bench.log 2>&1
    echo "bench exit $?" | tee -a "$OUT/device.txt"; tail -5 /tmp/bench.log >> "$OUT/device.txt"
    cat /tmp/bench.log ;;
  e2e)
    scripts/device_e2e.sh ;;
  esac
done
