#!/usr/bin/env python3
"""ncu_stalls.py CSV [LISTING]: per-instruction stall samples from `ncu -i REP --page source --csv
--print-source sass`, summed by opcode and by stall reason, and the 40 costliest instructions;
the warp instructions executed, by opcode; with LISTING, every instruction in address order with
its executed count and stall samples (to attribute a kernel's instructions to its phases).
A profiling aid for the CUDA kernels (docs/cuda.md): which instructions the warps wait on."""
import csv, sys, collections

def main(path, listing=None):
    f = open(path, newline="")
    first = f.readline()  # "Kernel Name", ... precedes the header
    if not first.startswith('"Kernel Name"'):
        f.seek(0)
    rows = list(csv.DictReader(f))
    if not rows:
        sys.exit("no rows")
    cols = rows[0].keys()
    samp = [c for c in cols if c.startswith("Warp Stall Sampling (All")]
    reasons = [c for c in cols if c.startswith("stall_") and "Not Issued" not in c]
    key = samp[0] if samp else None
    def num(v):
        try: return float(str(v).replace(",", ""))
        except ValueError: return 0.0
    by_op = collections.Counter(); by_reason = collections.Counter(); tot = 0.0
    for r in rows:
        op = r.get("Source", "").split()[0] if r.get("Source") else "?"
        if op.startswith("@"): op = r["Source"].split()[1]
        s = num(r.get(key, 0)) if key else 0
        by_op[op.split(".")[0]] += s; tot += s
        for c in reasons: by_reason[c] += num(r.get(c, 0))
    print(f"total samples {tot:.0f}")
    for op, s in by_op.most_common(25): print(f"  {op:12s} {s:9.0f} {100*s/max(tot,1):5.1f}%")
    print("stall reasons:")
    for c, s in by_reason.most_common(20): print(f"  {c:60s} {s:9.0f}")
    print("costliest instructions:")
    top = sorted(rows, key=lambda r: -num(r.get(key, 0)))[:40]
    for r in top: print(f"  {num(r.get(key,0)):7.0f}  {r.get('Address','')}  {r.get('Source','')[:90]}")
    ex = [c for c in cols if c.strip() == "Instructions Executed"]
    if ex:
        by_ex = collections.Counter(); tex = 0.0
        for r in rows:
            n = num(r.get(ex[0], 0)); tex += n
            src = r.get("Source", "") or "?"
            op = src.split()[1] if src.startswith("@") and len(src.split()) > 1 else src.split()[0]
            by_ex[op.split(".")[0]] += n
        print(f"warp instructions executed {tex:.0f}")
        for op, n in by_ex.most_common(30): print(f"  {op:12s} {n:12.0f} {100*n/max(tex,1):5.1f}%")
        if listing:
            with open(listing, "w") as out:
                for r in rows:
                    stalls = num(r.get(key, 0)) if key else 0
                    out.write(f"{r.get('Address','')}  {num(r.get(ex[0], 0)):11.0f}  {stalls:7.0f}  "
                              f"{r.get('Source','')}\n")

if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
