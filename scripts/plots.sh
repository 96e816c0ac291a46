#!/usr/bin/env bash
# make plots: redraw every figure of every results directory from its .gp script and .dat files
# (results/*/figures/*.gp), so hand edits to a script are kept. A directory whose figures were
# never written (a run made without gnuplot has its .gp files; one interrupted before its report
# has none) gets them from `sqexp report` first, which reads only the stored rows.
set -u
cd "$(dirname "$0")/.."
if ! command -v gnuplot >/dev/null 2>&1; then
  echo "plots: gnuplot not found (apt-get install gnuplot-nox); nothing drawn" >&2
  exit 1
fi
SQEXP=${SQEXP:-./sqexp}
status=0 drawn=0 dirs=0
for dir in results/*/; do
  dir=${dir%/}
  [ -f "$dir/run.json" ] || continue
  dirs=$((dirs + 1))
  if ! ls "$dir"/figures/*.gp >/dev/null 2>&1; then
    if [ -x "$SQEXP" ]; then
      "$SQEXP" report "$dir" --quiet || status=1
    else
      echo "plots: $dir has no figures yet and $SQEXP is not built" >&2
      status=1
      continue
    fi
  fi
  for gp in "$dir"/figures/*.gp; do
    [ -e "$gp" ] || continue
    if (cd "$dir/figures" && gnuplot "$(basename "$gp")"); then
      drawn=$((drawn + 1))
    else
      echo "plots: gnuplot failed on $gp" >&2
      status=1
    fi
  done
done
echo "plots: redrew $drawn figures in $dirs results directories (png + pdf beside each .gp)"
exit $status
