#!/usr/bin/env bash
# Installs llama.cpp for the GGUF export test: node-llama-cpp and its prebuilt linux-x64 CPU
# binary, pinned by this folder's lockfile. --omit=optional leaves out the CUDA, Vulkan and ARM
# binaries (about 600 MB); the CPU one is a direct dependency. No download or build at install:
# NODE_LLAMA_CPP_SKIP_DOWNLOAD and --ignore-scripts keep the postinstall from fetching llama.cpp.
# `npm install` with the lockfile, not `npm ci`: the registry mirror lacks the mac, windows and
# riscv64 binaries, so the lockfile cannot list them and `npm ci` would refuse it as out of sync.
# Idempotent: skips when the lockfile has not changed since the last install.
set -euo pipefail
cd "$(dirname "$0")"
marker="node_modules/.idiom-llama-installed"
if [[ ! -f "$marker" || package-lock.json -nt "$marker" ]]; then
  NODE_LLAMA_CPP_SKIP_DOWNLOAD=true npm install --omit=optional --ignore-scripts --no-audit --no-fund
  touch "$marker"
fi
echo "llama runtime: node-llama-cpp $(node -p "require('./node_modules/node-llama-cpp/package.json').version")"
