#!/bin/sh
# Installs Debian's CPU PyTorch for the PyTorch-backend tests (test/integration/torch/), if missing.
# Also installs OpenBLAS: python3-torch alone links the reference BLAS, many times slower.
# Idempotent; needs root (or sudo) and the Debian archive. Prints what it found or installed.
set -eu

sh "$(dirname "$0")/../../../.ci/apt-install.sh" python3 python3-torch libopenblas0-pthread
python=/usr/bin/python3
echo "python3-torch: $("$python" -c 'import torch; print(torch.__version__)'); BLAS: $(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 2>/dev/null || echo unknown)"
