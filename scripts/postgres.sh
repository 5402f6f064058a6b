#!/usr/bin/env bash
# scripts/postgres.sh start|stop — a PostgreSQL ≥ 15 on 127.0.0.1:5432 with role and database
# "ailuro". `start` installs Debian's server when missing and starts the cluster when it is down;
# it prints STARTED when it started it, so the caller knows to stop it again.
source "$(dirname "$0")/lib/common.sh"

pg_up() { command -v pg_isready >/dev/null && pg_isready -q -h 127.0.0.1 -p 5432; }

case "${1:-start}" in
  start)
    if ! pg_up; then
      command -v pg_ctlcluster >/dev/null || apt_install postgresql
      version="$(ls /etc/postgresql | sort -n | tail -1)"
      say "starting PostgreSQL $version"
      as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start
      for _ in $(seq 30); do pg_up && break; sleep 1; done
      echo STARTED
    fi
    # The role and database the suite uses; CREATEDB so pytest-django can make its test database.
    as_root runuser -u postgres -- psql -q -v ON_ERROR_STOP=1 <<'SQL' >/dev/null
SELECT 'CREATE ROLE ailuro LOGIN CREATEDB PASSWORD ''ailuro''' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ailuro')\gexec
SELECT 'CREATE DATABASE ailuro OWNER ailuro' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'ailuro')\gexec
SQL
    ;;
  stop)
    version="$(ls /etc/postgresql | sort -n | tail -1)"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main stop
    ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
