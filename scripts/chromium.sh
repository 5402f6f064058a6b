#!/usr/bin/env bash
# scripts/chromium.sh start|stop — Debian's chromium for the monitor's Playwright browser tests
# (`playwright install` cannot download browsers here; the tests launch /usr/bin/chromium).
# `start` installs it when missing and prints nothing: there is no daemon to stop.
source "$(dirname "$0")/lib/common.sh"

case "${1:-start}" in
  start) [ -x /usr/bin/chromium ] || apt_install chromium ;;
  stop) ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
