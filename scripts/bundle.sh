#!/bin/bash
# bundle.sh [BUILD_DIR] [DEST]: copy sqexp (and the build's gpu_* / test_* executables) plus every
# shared library they load that is neither glibc's nor the CUDA driver's into DEST (default
# .bundle/, git-ignored), so they run on a machine that lacks HDF5, GSL, inih, jansson, Criterion
# (the lent GPU machine: docs/cuda.md). Run there with LD_LIBRARY_PATH=DEST/lib.
# The CUDA toolkit libraries (cuBLAS is ~700 MB) are left out by default: the GPU machine's image
# has CUDA 13 (scripts/device_env.sh finds them). BUNDLE_CUDA=1 copies them too.
set -euo pipefail
build=${1:-build}
dest=${2:-.bundle}
[ -x "$build/sqexp" ] || { echo "bundle.sh: $build/sqexp not found (build first)" >&2; exit 2; }
rm -rf "$dest"
mkdir -p "$dest/lib"
bins=("$build/sqexp")
for t in "$build"/gpu_* "$build"/test_*; do
  [ -x "$t" ] && [ -f "$t" ] && bins+=("$t")
done
cp "${bins[@]}" "$dest/"
skip='^(linux-vdso|ld-linux|libc\.so|libm\.so|libdl\.so|libpthread\.so|librt\.so|libresolv\.so|libcuda\.so|libnvidia|libstdc\+\+|libgcc_s)'
cuda='^(libcublas|libcublasLt|libcusolver|libcudart|libcusparse|libnvJitLink)'
for b in "${bins[@]}"; do
  ldd "$b" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}'
done | sort -u | while read -r name path; do
  if [[ $name =~ $skip ]]; then continue; fi
  if [[ $name =~ $cuda ]] && [ "${BUNDLE_CUDA:-0}" != 1 ]; then continue; fi
  cp -L "$path" "$dest/lib/$name"
done
echo "bundle.sh: ${#bins[@]} executables, $(ls "$dest/lib" | wc -l) libraries, $(du -sh "$dest" | cut -f1) in $dest"
