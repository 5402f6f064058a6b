#!/usr/bin/env bash
# The full test suite, as CI runs it: installs what is missing, starts PostgreSQL and Redis when
# they are down (and stops what it started), then lint, types, migrations, deploy checks, docs and
# pytest against PostgreSQL. Extra arguments go to pytest.
source "$(dirname "$0")/lib/common.sh"

ensure_venv requirements-dev.txt

STARTED=()
cleanup() {
  for service in "${STARTED[@]}"; do say "stopping $service (started by this run)"; "scripts/$service.sh" stop || true; done
}
trap cleanup EXIT
# Each service script installs and starts its service when missing and prints STARTED if it did.
# Optional ones (slurm, oidc, chromium) join the list as their scripts are added.
for service in postgres redis slurm oidc chromium; do
  [ -x "scripts/$service.sh" ] || continue
  if "scripts/$service.sh" start | grep -q STARTED; then STARTED+=("$service"); fi
done

export DATABASE_URL="${DATABASE_URL:-postgres://ailuro:ailuro@127.0.0.1:5432/ailuro}"
export CELERY_BROKER_URL="${CELERY_BROKER_URL:-redis://127.0.0.1:6379/0}"
export AILURO_LOG_LEVEL="${AILURO_LOG_LEVEL:-WARNING}"

say "ruff"
ruff check .
ruff format --check .
say "mypy"
mypy .
say "migrations are up to date"
python manage.py makemigrations --check --dry-run >/dev/null
say "check --deploy with production-like settings"
SECRET_KEY="ci-$(head -c 48 /dev/urandom | base64 | tr -d '/+=')" DEBUG=false AILURO_CACHE_URL=redis://127.0.0.1:6379/1 AILURO_HTTPS=true AILURO_ANONYMOUS_READ=false \
  ALLOWED_HOSTS=ailuro.example.org python manage.py check --deploy --fail-level WARNING
say "docs (warnings are errors)"
NO_MKDOCS_2_WARNING=1 mkdocs build --strict --quiet --site-dir "$ROOT/var/docs-site"
# Parallel workers (pytest-xdist): most of the suite's time is spent waiting on servers, pilots and
# clients it starts, so more workers than cores pay. Each worker has its own test database and
# broker database (tests/workers.py); AILURO_TEST_WORKERS=0 runs in one process.
WORKERS="${AILURO_TEST_WORKERS:-3}"
say "pytest against $(echo "$DATABASE_URL" | sed -E 's#://[^@]*@#://#') with $WORKERS workers"
python -m pytest -n "$WORKERS" --dist loadgroup "$@"
