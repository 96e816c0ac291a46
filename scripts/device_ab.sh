#!/bin/bash
# device_ab.sh: one lent-GPU call that compares two builds on the same machine and dump. The build
# packed in .bundle-pack (B, the candidate) runs device_run.sh's STEPS (default "gpu bench e2e",
# without the PyTorch step); then the build packed in .bundle-packA (A, the reference) runs the
# end-to-end step with the PyTorch baseline after it. A's logs (e2e.txt, torch.txt, run.log) go to
# $OUT/a.txt: a call returns at most 8 files. Carry both .bundle-pack and .bundle-packA
# (PACK=1 scripts/bundle.sh for each build; ~17 MiB each).
set -u
OUT=${OUT:-/tmp/sqexp-out}
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
TORCH_LAYERS=0 STEPS=${STEPS:-gpu bench e2e} bash scripts/device_run.sh
if [ -s .bundle-packA/bundle.tar.xz ]; then
  rm -rf /tmp/ab && mkdir -p /tmp/ab && tar xJf .bundle-packA/bundle.tar.xz -C /tmp/ab
  mv .bundle /tmp/ab/.bundleB && mv /tmp/ab/.bundle .bundle
  OUT=/tmp/ab/out bash scripts/device_e2e.sh > /tmp/ab/e2e.log 2>&1
  for f in e2e.txt torch.txt run.log; do
    echo "=== A: $f"
    cat "/tmp/ab/out/$f"
  done > "$OUT/a.txt" 2>&1
  mv .bundle /tmp/ab/.bundleA && mv /tmp/ab/.bundleB .bundle
  grep -E "wall|speed|extrapolated" "$OUT/a.txt"
fi
