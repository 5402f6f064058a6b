#!/usr/bin/env bash
# scripts/clients.sh install|path — the released PanDA/BPS clients (lsst-ctrl-bps-panda,
# lsst-ctrl-bps, panda-client and the iDDS client packages) in their own virtualenv,
# var/clients-venv, pinned with hashes in scripts/clients/requirements.txt. Never in the server's
# requirements: the interoperability tests (tests/interop/test_released_clients.py) run these
# clients unmodified, each call under `timeout`, against gunicorn.
#
# `install` (the default) creates or refreshes the venv when the pins changed and does nothing
# otherwise; `path` prints the venv's directory. The test suite calls `install` through its fixture,
# so a clean machine gets the venv on the first run (~530 MB, about a minute here).
source "$(dirname "$0")/lib/common.sh"

VENV="${AILURO_CLIENTS_VENV:-$ROOT/var/clients-venv}"
REQ="$ROOT/scripts/clients/requirements.txt"

install_clients() {
  local stamp
  stamp="$VENV/.installed-$(sha1sum "$REQ" | cut -c1-12)"
  [ -e "$stamp" ] && return 0
  if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then apt_install python3-venv python3-pip; fi
  say "installing the released PanDA/BPS clients into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  # --no-deps: the file lists every package the clients need, each with its hash.
  "$VENV/bin/pip" install -q --disable-pip-version-check --require-hashes --no-deps -r "$REQ"
  touch "$stamp"
}

case "${1:-install}" in
  install) install_clients ;;
  path) echo "$VENV" ;;
  *) echo "usage: $0 install|path" >&2; exit 2 ;;
esac
