#!/usr/bin/env bash
# scripts/oidc.sh install|start|stop — the test OIDC provider (panva oidc-provider, pinned in
# scripts/oidc/package-lock.json) on 127.0.0.1. `install` puts node and the npm packages into
# var/oidc-provider; `start` also runs the provider on $OIDC_PORT (default 9400) and prints STARTED
# when it started it; `stop` ends the provider this script started (by its pid file).
# The test suite starts its own providers on free ports (tests/interop/conftest.py); this one is for
# trying the browser login and `ailuro login` by hand: OIDC_ISSUER=http://127.0.0.1:9400.
source "$(dirname "$0")/lib/common.sh"

DIR="$ROOT/var/oidc-provider"
PORT="${OIDC_PORT:-9400}"
PIDFILE="$DIR/server.pid"

install_provider() {
  command -v node >/dev/null && command -v npm >/dev/null || apt_install nodejs npm
  mkdir -p "$DIR"
  cp scripts/oidc/server.mjs scripts/oidc/package.json scripts/oidc/package-lock.json "$DIR/"
  if [ ! -d "$DIR/node_modules/oidc-provider" ] || ! cmp -s scripts/oidc/package-lock.json "$DIR/.installed-lock"; then
    say "installing oidc-provider into $DIR"
    (cd "$DIR" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    cp scripts/oidc/package-lock.json "$DIR/.installed-lock"
  fi
}

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

case "${1:-start}" in
  install) install_provider ;;
  start)
    install_provider
    if curl -fsS "http://127.0.0.1:$PORT/jwks" >/dev/null 2>&1; then
      say "a provider already answers on port $PORT (another checkout's?); leaving it alone"
    elif ! running; then
      say "starting the test OIDC provider on http://127.0.0.1:$PORT"
      (cd "$DIR"; OIDC_PORT="$PORT" OIDC_KEYS="$DIR/jwks.json" exec nohup node server.mjs >"$DIR/server.log" 2>&1) &
      echo $! >"$PIDFILE"
      for _ in $(seq 50); do
        curl -fsS "http://127.0.0.1:$PORT/jwks" >/dev/null 2>&1 && break
        running || { cat "$DIR/server.log" >&2; exit 1; }
        sleep 0.2
      done
      echo STARTED
    fi
    ;;
  stop)
    if running; then kill "$(cat "$PIDFILE")"; fi
    rm -f "$PIDFILE"
    ;;
  *) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac
