#!/usr/bin/env bash
# Install the Debian packages listed in scripts/debian-packages.txt that are missing.
# As root: apt-get installs them. Otherwise: print exactly what to install and fail,
# unless DVMS_SKIP_DEBS=1 (then tests needing them skip with a reason).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
list="$here/debian-packages.txt"
mapfile -t wanted < <(grep -vE '^\s*(#|$)' "$list" | awk '{print $1}')
[ "${#wanted[@]}" -eq 0 ] && exit 0
command -v dpkg-query >/dev/null 2>&1 || { echo "debian-deps: not a Debian system, skipping: ${wanted[*]}"; exit 0; }
missing=()
for p in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ "${#missing[@]}" -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  if [ "${DVMS_SKIP_DEBS:-0}" = "1" ]; then
    echo "debian-deps: not root, skipping ${missing[*]} (tests that need them will skip)"
    exit 0
  fi
  echo "debian-deps: these Debian packages are missing and I am not root:" >&2
  echo "    sudo apt-get install -y ${missing[*]}" >&2
  echo "or run with DVMS_SKIP_DEBS=1 to skip the tests that need them." >&2
  exit 1
fi
echo "debian-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
