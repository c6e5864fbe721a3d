#!/usr/bin/env bash
# Installs the Debian packages callplane needs, only those missing.
#   runtime: what `callplane serve` uses (espeak-ng for TTS). Best effort: when it cannot install (no root and no
#            sudo, no apt-get, apt fails), it says how to do it by hand and exits 0, so `make run` still starts the
#            node; `<Say>` then reports that text-to-speech is unavailable.
#   test:    runtime + the real peers and servers the test suite drives. Any failure is an error.
set -euo pipefail
mode=${1:-test}
want=(espeak-ng)
if [ "$mode" = test ]; then
  want+=(sip-tester baresip-core kamailio postgresql sox)
fi
missing=()
for pkg in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
# espeak-ng from another source (not a Debian package) is as good for `make run`.
if [ "$mode" = runtime ] && command -v espeak-ng >/dev/null 2>&1; then
  exit 0
fi

cannot() {
  echo "callplane: could not install ${missing[*]} ($1)." >&2
  echo "callplane: install it yourself (Debian/Ubuntu: sudo apt-get install ${missing[*]}; macOS: brew install espeak-ng);" >&2
  echo "callplane: until then <Say> reports that text-to-speech is unavailable. Starting anyway." >&2
  exit 0
}

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  elif [ "$mode" = runtime ]; then
    cannot "not root, and sudo needs a password or is missing"
  else
    SUDO="sudo"
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  [ "$mode" = runtime ] && cannot "no apt-get on this machine"
  echo "install-system-deps: no apt-get; install ${missing[*]} by hand" >&2
  exit 1
fi
echo "installing Debian packages: ${missing[*]}"
if ! { $SUDO apt-get update -qq &&
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; then
  [ "$mode" = runtime ] && cannot "apt-get failed"
  exit 1
fi
# The Debian packages may start services on their default ports; the tests start their own instances.
for svc in kamailio postgresql; do
  $SUDO systemctl stop "$svc" >/dev/null 2>&1 || $SUDO service "$svc" stop >/dev/null 2>&1 || true
done
