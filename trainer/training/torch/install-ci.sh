#!/bin/sh
# Installs Debian's CPU PyTorch for the PyTorch-backend tests (test/integration/torch/), if missing.
# Also installs OpenBLAS: python3-torch alone links the reference BLAS, many times slower.
# Idempotent; needs root (or sudo) and the Debian archive. Prints what it found or installed.
set -eu

python=/usr/bin/python3
if [ -x "$python" ] && "$python" -c 'import torch' 2>/dev/null \
   && dpkg-query -W -f='${Status}' libopenblas0-pthread 2>/dev/null | grep -q 'install ok installed'; then
  echo "python3-torch: $("$python" -c 'import torch; print(torch.__version__)') already installed (with OpenBLAS)"
  exit 0
fi

as_root=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "install-ci.sh: need root or sudo to apt-get install python3-torch" >&2; exit 1; }
  as_root="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$as_root apt-get update -qq
$as_root apt-get install -y -qq python3 python3-torch libopenblas0-pthread >/dev/null
echo "python3-torch: $("$python" -c 'import torch; print(torch.__version__)') installed; BLAS: $(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 2>/dev/null || echo unknown)"
