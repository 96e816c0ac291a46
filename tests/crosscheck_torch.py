#!/usr/bin/env python3
"""crosscheck_torch.py: sqexp against an independent implementation of the same methods.

scripts/torch_sweep.py re-implements calibration (torch.linalg.eigh), water-filling, the
codebooks (torch.bucketize), the plans and the attn protocol in PyTorch, written separately from
the C code. On layer 0 of the shipped real dump with configs/quick.ini's grid, the per-arm mean
attention cosine of sqexp's CPU backend must match it: tightly for the arms with no random draw
(sq without QJL, sq_paper_v1: same spectra, same bits; the torch codebooks are 200 grid-Lloyd
iterations, not converged to 1e-12, which moves the means by ~1e-3), loosely for tq (its Haar
rotations and QJL sketches come from different generators). Run by ctest with SQEXP_BIN set and
the repository as the working directory; ends with an 'N passed, N failed' line.
"""
import json
import os
import re
import subprocess
import sys
import tempfile
from collections import defaultdict

DUMP = "data/smollm2-135m.h5"
CONFIG = "configs/quick.ini"
TOL = {"sq": 3e-3, "sq_paper_v1": 3e-3, "tq": 3e-2}


def torch_means():
    out = subprocess.run([sys.executable, "scripts/torch_sweep.py", DUMP, "--config", CONFIG,
                          "--layers", "1", "--heads", "3", "--repeat", "1", "--device", "cpu"],
                         check=True, capture_output=True, text=True).stdout
    line = next(l for l in out.splitlines() if l.startswith("mean attn cos by arm:"))
    return {arm: float(v) for arm, v in re.findall(r"(\w+) ([0-9.]+)", line.split(":", 1)[1])}


def sqexp_means(bin_path, out_dir):
    subprocess.run([bin_path, "run", CONFIG, "--set", "run.layers=0", "--backend", "cpu",
                    "--out", out_dir, "--quiet"], check=True, capture_output=True, text=True)
    per_arm = defaultdict(list)
    with open(os.path.join(out_dir, "rows.jsonl")) as f:
        for line in f:
            row = json.loads(line)
            per_arm[row["arm"]].append(row["attn_cos"])
    return {arm: sum(v) / len(v) for arm, v in per_arm.items()}


def main():
    bin_path = os.environ.get("SQEXP_BIN", "./sqexp")
    ref = torch_means()
    with tempfile.TemporaryDirectory() as tmp:
        got = sqexp_means(bin_path, os.path.join(tmp, "res"))
    passed = failed = 0
    for arm, tol in TOL.items():
        ok = arm in ref and arm in got and abs(ref[arm] - got[arm]) <= tol
        print(f"{'ok  ' if ok else 'FAIL'} {arm:12s} sqexp {got.get(arm, float('nan')):.4f}  "
              f"torch {ref.get(arm, float('nan')):.4f}  tolerance {tol:g}")
        passed, failed = passed + ok, failed + (not ok)
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
