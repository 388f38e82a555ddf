#!/bin/sh
# Installs Debian's flake8 (npm run lint:py) and black (the Python formatter), if missing.
set -eu
sh "$(dirname "$0")/apt-install.sh" black flake8
echo "flake8 $(flake8 --version | head -n 1 | cut -d' ' -f1) and $(black --version | head -n 1)"
