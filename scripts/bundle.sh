#!/bin/bash
# bundle.sh [BUILD_DIR] [DEST]: copy sqexp (and the build's gpu_* executables; test_* with
# BUNDLE_TESTS=1), without debug info, plus every shared library they load that is neither
# glibc's nor the CUDA driver's into DEST (default .bundle/, git-ignored), so they run on a machine that lacks HDF5, GSL, inih, jansson, Criterion
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
pat=("$build"/gpu_*) # the cpu tests (test_*) run here, not there; BUNDLE_TESTS=1 takes them too
[ "${BUNDLE_TESTS:-0}" = 1 ] && pat+=("$build"/test_*)
for t in "${pat[@]}"; do
  [ -x "$t" ] && [ -f "$t" ] && bins+=("$t")
done
cp "${bins[@]}" "$dest/"
# debug info out: the working tree that travels to the GPU machine is limited to 64 MiB
if command -v strip > /dev/null; then strip -g "$dest"/sqexp "$dest"/gpu_* 2> /dev/null || true; fi
skip='^(linux-vdso|ld-linux|libc\.so|libm\.so|libdl\.so|libpthread\.so|librt\.so|libresolv\.so|libcuda\.so|libnvidia|libstdc\+\+|libgcc_s)'
cuda='^(libcublas|libcublasLt|libcusolver|libcudart|libcusparse|libnvJitLink)'
for b in "${bins[@]}"; do
  ldd "$b" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}'
done | sort -u | while read -r name path; do
  if [[ $name =~ $skip ]]; then continue; fi
  if [[ $name =~ $cuda ]] && [ "${BUNDLE_CUDA:-0}" != 1 ]; then continue; fi
  cp -L "$path" "$dest/lib/$name"
done
# PACK=1: also DEST-pack/bundle.tar.xz (about a third of the size), for calls whose working tree
# would pass the 64 MiB carry limit: carry DEST-pack instead, scripts/device_run.sh unpacks it
if [ "${PACK:-0}" = 1 ]; then
  mkdir -p "$dest-pack"
  tar cf - "$dest" | xz -6 -T0 > "$dest-pack/bundle.tar.xz"
  echo "bundle.sh: packed $(du -sh "$dest-pack/bundle.tar.xz" | cut -f1) in $dest-pack/bundle.tar.xz"
fi
echo "bundle.sh: ${#bins[@]} executables, $(ls "$dest/lib" | wc -l) libraries, $(du -sh "$dest" | cut -f1) in $dest"
