#!/bin/sh
# Installs Debian's flake8 (npm run lint:py) and black (the Python formatter), if missing.
# Idempotent; needs root (or sudo) and the Debian archive. Prints what it found or installed.
set -eu

if command -v flake8 >/dev/null 2>&1 && command -v black >/dev/null 2>&1; then
  echo "flake8 $(flake8 --version | head -n 1 | cut -d' ' -f1) and $(black --version | head -n 1) already installed"
  exit 0
fi

as_root=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "install-python-lint.sh: need root or sudo to apt-get install black flake8" >&2; exit 1; }
  as_root="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$as_root apt-get update -qq
$as_root apt-get install -y -qq black flake8 >/dev/null
echo "flake8 $(flake8 --version | head -n 1 | cut -d' ' -f1) and $(black --version | head -n 1) installed"
