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
# a packed bundle (PACK=1 scripts/bundle.sh, carried as .bundle-pack) is unpacked first
if [ ! -x .bundle/sqexp ] && [ -s .bundle-pack/bundle.tar.xz ]; then tar xJf .bundle-pack/bundle.tar.xz; fi
source scripts/device_env.sh
STEPS=${STEPS:-gpu bench e2e}
export E2E_DUMP=${E2E_DUMP:-/tmp/synth-mistral.h5} E2E_TOKENS=${E2E_TOKENS:-24576}
if [[ " $STEPS " == *" e2e "* ]] && [ ! -s "$E2E_DUMP" ] && [ "${E2E_GEN:-torch}" = sqexp ]; then
  # the synthetic dump is written on the CPUs while the GPU steps run (device_e2e.sh waits for it)
  rm -f /tmp/synth.done
  ( s0=$(date +%s.%N)
    .bundle/sqexp synth --shape mistral-7b --tokens "$E2E_TOKENS" --calib-frac 0.34 -o "$E2E_DUMP" > /tmp/synth.log 2>&1
    echo "exit $? after $(awk "BEGIN{print $(date +%s.%N)-$s0}") s" > /tmp/synth.done ) &
fi
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv
  echo "cublas: $SQEXP_CUBLAS_DIR"
} > "$OUT/device.txt" 2>&1
cat "$OUT/device.txt"
for step in $STEPS; do
  echo "== step $step at $(date -u +%T)" | tee -a "$OUT/device.txt"
  case $step in
  gpu)
    fails=0
    for t in .bundle/gpu_*; do
      echo "== $t" | tee -a "$OUT/gpu_tests.log"
      SQEXP_SRC=$here SQEXP_BIN=$here/.bundle/sqexp timeout 300 "$t" --verbose >> "$OUT/gpu_tests.log" 2>&1
      rc=$?; [ $rc = 0 ] || fails=1
      echo "exit $rc" | tee -a "$OUT/gpu_tests.log"
    done
    # the defaults are the wgmma kernel (wg), the grouped code phase and the cached probs passes;
    # check the other eval kernels, wg without its transposed rank slots, the recomputing probs
    # passes, the per-plan code phase, and the grouped one with limits small enough for several
    # row chunks and plan groups per batch
    agree() {
      echo "== gpu_agree with $*" | tee -a "$OUT/gpu_tests.log"
      env "$@" SQEXP_SRC=$here SQEXP_BIN=$here/.bundle/sqexp timeout 300 .bundle/gpu_agree --verbose >> "$OUT/gpu_tests.log" 2>&1
      rc=$?
      echo "exit $rc" | tee -a "$OUT/gpu_tests.log"
      [ $rc = 0 ] || fails=1
    }
    for k in ${AGREE_KINDS:-tcpv tc gqa rows}; do agree SQEXP_CUDA_ATTN=$k; done
    [ "${AGREE_TR:-1}" = 1 ] && agree SQEXP_CUDA_WG_TR=0
    [ "${AGREE_PROBS:-1}" = 1 ] && agree SQEXP_CUDA_PROBS=recompute
    if [ "${AGREE_CODES:-1}" = 1 ]; then
      agree SQEXP_CUDA_CODES=plan
      agree SQEXP_CUDA_CODES_ROWS=100 SQEXP_CUDA_CODES_BYTES=307200
    fi
    echo "gpu tests: $([ $fails = 0 ] && echo pass || echo FAIL)" | tee -a "$OUT/gpu_tests.log" "$OUT/device.txt"
    grep -E "FAIL|SKIP|Synthesis|rows with differing" "$OUT/gpu_tests.log" | tail -30 ;;
  bench)
    timeout 300 .bundle/sqexp bench --out "$OUT/bench.txt" > /tmp/bench.log 2>&1
    echo "bench exit $?" | tee -a "$OUT/device.txt"; tail -5 /tmp/bench.log >> "$OUT/device.txt"
    cat /tmp/bench.log ;;
  e2e)
    scripts/device_e2e.sh ;;
  esac
done
