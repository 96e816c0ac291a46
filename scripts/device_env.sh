#!/bin/bash
# device_env.sh (sourced): library path for the bundled binaries on the GPU machine: .bundle/lib
# for HDF5/GSL/inih/jansson/Criterion, and the machine's own CUDA 13 cuBLAS (the toolkit's, or
# the one PyTorch's wheels carry).
SQEXP_CUBLAS_DIR=""
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-13*/lib64 \
         /opt/torch/.venv/lib/python3*/site-packages/nvidia/cu13/lib \
         /opt/torch/.venv/lib/python3*/site-packages/nvidia/cublas/lib; do
  if [ -e "$d/libcublas.so.13" ]; then SQEXP_CUBLAS_DIR=$d; break; fi
done
if [ -z "$SQEXP_CUBLAS_DIR" ]; then
  f=$(find / -xdev -name 'libcublas.so.13' 2>/dev/null | head -1)
  [ -n "$f" ] && SQEXP_CUBLAS_DIR=$(dirname "$f")
fi
export SQEXP_CUBLAS_DIR
export LD_LIBRARY_PATH="$PWD/.bundle/lib${SQEXP_CUBLAS_DIR:+:$SQEXP_CUBLAS_DIR}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
