#!/usr/bin/env bash
# scripts/redis.sh start|stop — Redis on 127.0.0.1:6379 for the Celery broker. `start` installs
# Debian's server when missing and prints STARTED when it started one (stop stops only that one).
source "$(dirname "$0")/lib/common.sh"
PIDFILE="$ROOT/var/redis-test.pid"

redis_up() { command -v redis-cli >/dev/null && [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = PONG ]; }

case "${1:-start}" in
  start)
    if ! redis_up; then
      command -v redis-server >/dev/null || apt_install redis-server
      mkdir -p "$ROOT/var"
      say "starting Redis"
      redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
        --pidfile "$PIDFILE" --dir "$ROOT/var" --logfile "$ROOT/var/redis-test.log"
      for _ in $(seq 30); do redis_up && break; sleep 0.2; done
      echo STARTED
    fi
    ;;
  stop)
    [ -f "$PIDFILE" ] && kill "$(cat "$PIDFILE")" && rm -f "$PIDFILE"
    ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
