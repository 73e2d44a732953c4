#!/usr/bin/env bash
# Install the Debian packages gatekeeper's demo and tests need, when their commands are missing.
# Usage: scripts/system-deps.sh PACKAGE...   (package names as in Debian 12)
set -euo pipefail
declare -A provides=(
  [redis-server]=redis-server
  [python3-venv]=""
)
missing=()
for pkg in "$@"; do
  cmd=${provides[$pkg]-$pkg}
  if [ -n "$cmd" ] && command -v "$cmd" >/dev/null 2>&1; then continue; fi
  if [ -z "$cmd" ] && dpkg -s "$pkg" >/dev/null 2>&1; then continue; fi
  missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing Debian packages: ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
# Debian starts a packaged redis-server as a service; the tests and the demo use private instances.
