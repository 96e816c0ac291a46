#!/usr/bin/env bash
# Installs every system package sqexp needs on Debian 12 (as root, or with sudo). Idempotent and
# silent when everything is already present.
set -euo pipefail
pkgs=(build-essential cmake pkg-config git libhdf5-dev hdf5-tools libgsl-dev libinih-dev
      libjansson-dev libcriterion-dev gnuplot-nox python3 python3-venv)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing: ${missing[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
