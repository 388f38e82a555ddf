#!/bin/sh
# Installs each named Debian package that dpkg does not list as installed, as root or through
# sudo, without prompts. Every package is checked on its own, so one already present never hides
# another that is missing. Used by the scripts that prepare CI and the test layers.
set -eu

missing=""
for package in "$@"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $package"
done
[ -z "$missing" ] && exit 0

as_root=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "apt-install.sh: need root or sudo to apt-get install$missing" >&2; exit 1; }
  as_root="sudo"
fi
# env, not export: sudo drops the caller's environment, and debconf must not prompt.
$as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
# shellcheck disable=SC2086 # one word per package
$as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
echo "apt-install.sh: installed$missing"
