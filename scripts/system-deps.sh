#!/usr/bin/env bash
# Install the Debian packages gatekeeper's demo and tests need, when what they provide is missing.
# Usage: scripts/system-deps.sh PACKAGE...   (package names as in Debian 12)
# Packaged services that start on install (redis-server, postgresql, prometheus) are left alone: the demo
# and the tests start private instances on free loopback ports and never use or stop shared ones.
set -euo pipefail

present() {
  case "$1" in
    redis-server) command -v redis-server >/dev/null && command -v redis-cli >/dev/null ;;
    python3-venv) dpkg -s python3-venv >/dev/null 2>&1 ;;
    postgresql) compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null ;;
    prometheus) command -v prometheus >/dev/null && command -v promtool >/dev/null ;;
    chromium) command -v chromium >/dev/null ;;
    systemd) command -v systemd-analyze >/dev/null ;;
    *) command -v "$1" >/dev/null ;;
  esac
}

missing=()
for pkg in "$@"; do
  present "$pkg" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing Debian packages: ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
