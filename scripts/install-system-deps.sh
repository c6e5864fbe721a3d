#!/usr/bin/env bash
# Installs the Debian packages callplane needs, only those missing.
#   runtime: what `callplane serve` uses (espeak-ng for TTS).
#   test:    runtime + the real peers and servers the test suite drives.
set -euo pipefail
want=(espeak-ng)
if [ "${1:-test}" = test ]; then
  want+=(sip-tester baresip-core kamailio postgresql sox)
fi
missing=()
for pkg in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing Debian packages: ${missing[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The Debian packages may start services on their default ports; the tests start their own instances.
for svc in kamailio postgresql; do
  $SUDO systemctl stop "$svc" >/dev/null 2>&1 || $SUDO service "$svc" stop >/dev/null 2>&1 || true
done
