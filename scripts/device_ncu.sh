#!/bin/bash
# device_ncu.sh KERNEL_REGEX [NAME] -- SQEXP ARGS...: profile one launch of the kernel with Nsight
# Compute on the GPU machine (full set, clocks left alone: --clock-control none) and write to $OUT:
# NAME-details.txt (the sections: memory and shared-memory traffic, pipe use, occupancy) and
# NAME-stalls.txt (scripts/ncu_stalls.py: the stall samples by opcode and reason, the instructions
# executed by opcode) and NAME-sass.txt (every instruction with both). Run from the
# repo root with .bundle unpacked (scripts/device_run.sh unpacks a packed one).
set -u
re=$1 name=${2:-ncu}
shift 2
[ "${1:-}" = -- ] && shift
source scripts/device_env.sh
ncu=$(command -v ncu || ls /usr/local/cuda/bin/ncu /usr/local/cuda-*/bin/ncu 2> /dev/null | head -1)
rep=/tmp/$name
"$ncu" -k "regex:$re" --launch-count 1 --set full --clock-control none --import-source no -f -o "$rep" .bundle/sqexp "$@" > /tmp/$name.log 2>&1
echo "ncu exit $? ($(tail -1 /tmp/$name.log))"
"$ncu" -i "$rep.ncu-rep" --page details > "$OUT/$name-details.txt" 2>&1
"$ncu" -i "$rep.ncu-rep" --page source --csv --print-source sass > /tmp/$name-src.csv 2>&1
python3 scripts/ncu_stalls.py /tmp/$name-src.csv "$OUT/$name-sass.txt" > "$OUT/$name-stalls.txt" 2>&1
