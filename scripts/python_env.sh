#!/usr/bin/env bash
# Creates or updates the git-ignored .venv with the pinned packages of scripts/requirements.txt.
# Idempotent and silent when the environment already matches the requirements (a stamp file holds
# the hash of what was installed). Usage: scripts/python_env.sh [--light]
#   --light: only numpy, h5py, tqdm (lines marked "# light"): enough to read dumps, not to make them.
# First full install here: ~70 s, 5.3 GB (torch's CUDA wheels; see requirements.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
req=scripts/requirements.txt
mode=full
[ "${1:-}" = "--light" ] && mode=light
[ $# -gt 0 ] && [ "$1" != "--light" ] && { echo "usage: scripts/python_env.sh [--light]" >&2; exit 2; }
stamp=.venv/.sqexp-requirements
want="$mode $(sha256sum "$req" | cut -d' ' -f1)"
have=$(cat "$stamp" 2>/dev/null || true)
# A full install satisfies a light request too.
if [ "$have" = "$want" ] || { [ "$mode" = light ] && [ "$have" = "full ${want#light }" ]; }; then
  exit 0
fi
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv || { echo "python_env: '$PY -m venv' failed (Debian: apt-get install python3-venv)" >&2; exit 1; }
fi
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
if [ "$mode" = light ]; then grep -E '#[[:space:]]*light' "$req" | sed 's/#.*//' > "$tmp"; else sed 's/#.*//' "$req" > "$tmp"; fi
echo "python_env: installing the $mode requirements into .venv" >&2
.venv/bin/python -m pip install -q --disable-pip-version-check -r "$tmp" >&2
echo "$want" > "$stamp"
