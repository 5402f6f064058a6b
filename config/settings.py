"""ailuro settings: one file, driven by the environment, defaulting to the embedded run.

Every value an operator may set is read through the `env_*` readers of `config/env.py`, which raise
ImproperlyConfigured naming the variable when the value is malformed, so a bad deployment stops at
start-up instead of failing on the first request. The README's configuration table lists them.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from config.env import caches, env_bool, env_float, env_int, env_list, env_mapping, env_str, networks
from config.loops import LOOPS

BASE_DIR = Path(__file__).resolve().parent.parent


# The data directory holds the embedded SQLite database, the generated secret key, collected
# static files and spooled logs. Production deployments point it at persistent storage.
DATA_DIR = Path(env_str("AILURO_DATA_DIR", str(BASE_DIR / "var"))).resolve()


def _secret_key() -> str:
    """The configured key, or one generated once and kept in DATA_DIR for the embedded run."""
    configured = os.environ.get("SECRET_KEY")
    if configured:
        return configured
    key_file = DATA_DIR / "secret_key"
    if key_file.exists():
        return key_file.read_text().strip()
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(50)
    key_file.write_text(key)
    key_file.chmod(0o600)
    return key


SECRET_KEY = _secret_key()
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI served from static/, no CDN (works offline, under the CSP)
    "django_htmx",
    "template_partials",
    "core",
    "dispatcher",
    "campaigns",
    "harvester",
    "pandamon",
    "pandacompat",
    "embedded",  # the top floor: `manage.py up`, `manage.py run_loops` and the demos
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


# What this web process serves (docs/decisions/0022-pilot-lane-on-granian.md). "all": every path
# (gunicorn, the ailuro-web service). "pilot": the pilot lane only (granian, the ailuro-pilot
# service): the paths of AILURO_PILOT_LANE and the probes; any other path is answered 404 before its
# body is read, and every database statement of the process ends after
# AILURO_PILOT_STATEMENT_TIMEOUT_MS, the call then answered 503 with Retry-After (the pilot retries).
AILURO_WEB_ROLE = env_str("AILURO_WEB_ROLE", "all")
if AILURO_WEB_ROLE not in ("all", "pilot"):
    raise ImproperlyConfigured(f"AILURO_WEB_ROLE must be 'all' or 'pilot', got {AILURO_WEB_ROLE!r}")
AILURO_PILOT_STATEMENT_TIMEOUT_MS = env_int("AILURO_PILOT_STATEMENT_TIMEOUT_MS", 30_000, minimum=100)


def _database() -> dict[str, Any]:
    url = env_str("DATABASE_URL", f"sqlite:///{DATA_DIR / 'ailuro.sqlite3'}")
    if "://" not in url:
        raise ImproperlyConfigured(f"DATABASE_URL must look like postgres://user:pass@host/db, got {url!r}")
    try:
        config: dict[str, Any] = dict(dj_database_url.parse(url, conn_max_age=60))
    except Exception as exc:  # dj_database_url raises several types for a malformed URL
        raise ImproperlyConfigured(f"DATABASE_URL is not a valid database URL ({exc}): {url!r}") from None
    engine = config.get("ENGINE", "")
    if engine == "django.db.backends.sqlite3":
        Path(config["NAME"]).parent.mkdir(parents=True, exist_ok=True)
        # WAL lets the web server read while the loops write; IMMEDIATE transactions take the
        # write lock up front so read-then-write services never fail with SQLITE_BUSY mid-way.
        config["OPTIONS"] = {
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;",
        }
        config["CONN_MAX_AGE"] = 0
    elif engine == "django.db.backends.postgresql":
        config.setdefault("OPTIONS", {})
        # The pilot hot path runs server-side prepared statements (dispatcher/services/prepared.py),
        # each written to have one good generic plan. Django leaves psycopg's prepare_threshold at
        # None, which disables preparing altogether (even `prepare=True`): a threshold no query
        # reaches prepares exactly the statements that ask. And PostgreSQL would otherwise keep
        # re-planning them (custom plans, ~0.5 ms each). Django's own queries are bound on the
        # client and never prepared, so neither setting touches them.
        config["OPTIONS"].setdefault("prepare_threshold", 2**31 - 1)
        generic = "-c plan_cache_mode=force_generic_plan"
        # No JIT: every statement here is OLTP-sized or a monitor read of milliseconds, but a LIMIT
        # over a long index walk is costed as the whole walk and crosses jit_above_cost; compiling
        # took ~100 ms of a 15 ms job-list read on the 10M-job benchmark.
        no_jit = "-c jit=off"
        # The pilot lane's time limit: neither server ends a request that runs too long (gunicorn's
        # gthread worker answers its timeout from its main loop while a thread waits), so the
        # lane's processes bound each statement instead.
        limit = (
            f"-c statement_timeout={AILURO_PILOT_STATEMENT_TIMEOUT_MS}" if AILURO_WEB_ROLE == "pilot" else ""
        )
        config["OPTIONS"]["options"] = " ".join(
            part for part in (config["OPTIONS"].get("options", ""), generic, no_jit, limit) if part
        )
        config["CONN_HEALTH_CHECKS"] = True
        # A database host that does not answer at all (not even a refusal) fails a request within
        # seconds, as a 503 (core.unavailable), instead of holding it for the kernel's TCP timeout.
        config["OPTIONS"].setdefault("connect_timeout", 5)
    else:
        raise ImproperlyConfigured(
            f"DATABASE_URL must be a sqlite:// or postgres:// URL, got engine {engine!r}"
        )
    config["TEST"] = {"NAME": os.environ.get("AILURO_TEST_DATABASE_NAME") or None}
    return config


DATABASES = {"default": _database()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
# Container images collect static files at build time into a read-only folder of their own.
STATIC_ROOT = Path(env_str("AILURO_STATIC_ROOT", str(DATA_DIR / "static"))).resolve()
# whitenoise warns on every start when the folder is missing; collectstatic fills it.
with contextlib.suppress(OSError):
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Content-hashed, gzipped and cached for a year once collected; plain names before that.
    "staticfiles": {"BACKEND": "core.staticfiles.HashedStaticFilesStorage"},
}
# Serve straight from the app folders when nothing was collected (embedded run, tests).
WHITENOISE_USE_FINDERS = True

LOGIN_URL = "/admin/login/"

# --- Security headers (production values; `manage.py check --deploy` must be clean) ---
SECURE_HTTPS = env_bool("AILURO_HTTPS", False)
SESSION_COOKIE_SECURE = SECURE_HTTPS
CSRF_COOKIE_SECURE = SECURE_HTTPS
SECURE_SSL_REDIRECT = SECURE_HTTPS and env_bool("AILURO_SSL_REDIRECT", True)
# Probes call the pod or the host over plain HTTP; a redirect would count as success (core/health.py).
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
SECURE_HSTS_SECONDS = env_int("AILURO_HSTS_SECONDS", 31536000 if SECURE_HTTPS else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HTTPS
SECURE_HSTS_PRELOAD = SECURE_HTTPS
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("AILURO_BEHIND_PROXY", False) else None
)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
# Request bodies: pilots batch, workflow specs can be large; everything else stays small.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("AILURO_MAX_BODY_BYTES", 64 * 1024 * 1024, minimum=1024)

# --- REST API ---
REST_FRAMEWORK: dict[str, Any] = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "core.auth.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "ailuro API",
    "DESCRIPTION": "Workflows, tasks, jobs, sites, queues and campaigns of the ailuro workload manager.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # The campaign states are three choice sets all named `status`: one enum name each.
    "ENUM_NAME_OVERRIDES": {
        "CampaignStatusEnum": "campaigns.models.CampaignStatus",
        "StepStatusEnum": "campaigns.models.StepStatus",
        "GroupStatusEnum": "campaigns.models.GroupStatus",
    },
}

# --- Celery (the loops: config/loops.py, docs/architecture.md#loops) ---
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "memory://")
if CELERY_BROKER_URL.split("://", 1)[0] not in {"memory", "redis", "rediss", "amqp", "amqps", "pyamqp"}:
    raise ImproperlyConfigured(
        f"CELERY_BROKER_URL must be a redis://, amqp:// or memory:// URL, got {CELERY_BROKER_URL!r}"
    )
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Defaults for a task without limits of its own; each loop's task has its loop's (config/loops.py).
CELERY_TASK_SOFT_TIME_LIMIT = env_int("AILURO_TASK_SOFT_TIME_LIMIT", 120, minimum=1)
CELERY_TASK_TIME_LIMIT = env_int("AILURO_TASK_TIME_LIMIT", 180, minimum=1)
# How stale each loop may get before /readyz names it and the monitor's loop strip turns red
# (core.loop_health, decision 0007): the loop table's periods, carried here as plain data so the
# lower layers (core, pandamon) read them without importing config. A loop is stalled when its
# last completed run is older than max(LAG_FACTOR × period, period + hard time limit); a loop
# that has not completed a run yet is measured from this process's start and gets GRACE_S more,
# the time a fresh deployment's workers and beat take to come up.
AILURO_LOOP_LAG_FACTOR = env_int("AILURO_LOOP_LAG_FACTOR", 3, minimum=1)
AILURO_LOOP_GRACE_S = env_int("AILURO_LOOP_GRACE_S", 300, minimum=0)
AILURO_LOOPS: dict[str, dict[str, float]] = {
    loop.name: {"period_s": loop.period_s, "max_lag_s": loop.max_lag_s(AILURO_LOOP_LAG_FACTOR)}
    for loop in LOOPS
}

# --- ailuro domain limits (every input is bounded: docs/architecture.md#security) ---
AILURO = {
    "ANONYMOUS_READ": env_bool("AILURO_ANONYMOUS_READ", True),
    "MAX_DAG_JOBS": env_int("AILURO_MAX_DAG_JOBS", 200_000, minimum=1),
    "MAX_DAG_EDGES": env_int("AILURO_MAX_DAG_EDGES", 2_000_000, minimum=1),
    # A workflow spec body above this is refused (413) before it is read.
    "MAX_SPEC_BYTES": env_int("AILURO_MAX_SPEC_BYTES", 64 * 1024 * 1024, minimum=1024),
    "TASK_CHUNK_SIZE": env_int("AILURO_TASK_CHUNK_SIZE", 30_000, minimum=1),
    "MAX_JSON_DEPTH": env_int("AILURO_MAX_JSON_DEPTH", 32, minimum=2),
    "DEFAULT_HEARTBEAT_TIMEOUT_S": env_int("AILURO_HEARTBEAT_TIMEOUT", 7200, minimum=60),
    "SENT_TIMEOUT_S": env_int("AILURO_SENT_TIMEOUT", 1800, minimum=60),
    "DEFAULT_MAX_ATTEMPTS": env_int("AILURO_DEFAULT_MAX_ATTEMPTS", 3, minimum=1),
    "PAYLOAD_LOG_CAP_BYTES": env_int("AILURO_PAYLOAD_LOG_CAP", 1024 * 1024, minimum=1024),
    # An out-of-memory retry asks the attempt's measured peak RSS × margin, rounded up to a multiple
    # of ROUND_MB, and at least the previous request + STEP_MB (dispatcher.retry.memory_request).
    "OOM_RETRY_MARGIN": env_float("AILURO_OOM_RETRY_MARGIN", 1.25, minimum=1.0),
    "OOM_RETRY_ROUND_MB": env_int("AILURO_OOM_RETRY_ROUND_MB", 100, minimum=1),
    "OOM_RETRY_STEP_MB": env_int("AILURO_OOM_RETRY_STEP_MB", 500, minimum=1),
    # The failure budget of a label that sets none (docs/user-guide/workflows.md#failure-budgets):
    # off by default (0); a site may set core-hours and/or a fraction for every label.
    "FAILURE_BUDGET_CORE_HOURS": env_float("AILURO_FAILURE_BUDGET_CORE_HOURS", 0.0, minimum=0.0),
    "FAILURE_BUDGET_FRACTION": env_float("AILURO_FAILURE_BUDGET_FRACTION", 0.0, minimum=0.0),
    "FAILURE_BUDGET_MIN_ATTEMPTS": env_int("AILURO_FAILURE_BUDGET_MIN_ATTEMPTS", 10, minimum=1),
    # Every monitor page's reads (PostgreSQL) stop after this long: the page answers 503 saying
    # what to narrow (0: no limit). A selection the summaries cannot answer whose row estimate is
    # above WEB_SCAN_WARN_ROWS says so on the page (decision 0013).
    "WEB_STATEMENT_TIMEOUT_MS": env_int("AILURO_WEB_STATEMENT_TIMEOUT_MS", 10_000, minimum=0),
    "WEB_SCAN_WARN_ROWS": env_int("AILURO_WEB_SCAN_WARN_ROWS", 1_000_000, minimum=1),
}

# --- Loops: the watcher's and the janitor's limits (the loop table itself is config/loops.py) ---
# PanDA fails `holding` jobs after 3 h (copyArchive.py); the janitor's retentions keep the database
# from growing with payload output nobody reads any more.
AILURO["HOLDING_TIMEOUT_S"] = env_int("AILURO_HOLDING_TIMEOUT", 3 * 3600, minimum=60)
AILURO["PAYLOAD_LOG_RETENTION_DAYS"] = env_int("AILURO_PAYLOAD_LOG_RETENTION_DAYS", 30, minimum=1)
AILURO["ARCHIVE_AFTER_DAYS"] = env_int("AILURO_ARCHIVE_AFTER_DAYS", 90, minimum=1)
# Whole final workflows ended this many days ago move their jobs to the archive tables
# (dispatcher/services/archive.py; 0: never); archive partitions (months) whose every workflow ended
# more than RETENTION days ago are dropped (0: kept forever). Each janitor run moves at most
# BATCH_JOBS jobs, one transaction per batch of workflows.
AILURO["JOB_ARCHIVE_AFTER_DAYS"] = env_int("AILURO_JOB_ARCHIVE_AFTER_DAYS", 30, minimum=0)
AILURO["JOB_ARCHIVE_RETENTION_DAYS"] = env_int("AILURO_JOB_ARCHIVE_RETENTION_DAYS", 0, minimum=0)
AILURO["JOB_ARCHIVE_BATCH_JOBS"] = env_int("AILURO_JOB_ARCHIVE_BATCH_JOBS", 200_000, minimum=1)
# --- end of the loops block ---

# --- Pilot protocol (dispatcher/protocol) ---
# AILURO_PILOT_AUTH: `token` (pilot bearer tokens; the default, also for the embedded run, whose
# provisioner hands its local pilots a token) or `open` (no check; a demo behind a firewall).
# AILURO_PILOT_TRF_BASE_URL: base URL put in front of a job's transformation name (default: this
# server's /trf/user/, taken from the request). Pilot 3.7.0.36 only accepts hard-coded base URLs,
# so sites running it set the DOMA one and stage the wrapper locally.
AILURO_PILOT: dict[str, Any] = {
    "AUTH": env_str("AILURO_PILOT_AUTH", "token"),
    "TOKEN_CACHE_S": env_int("AILURO_PILOT_TOKEN_CACHE_S", 10, minimum=0),
    "TRF_BASE_URL": env_str("AILURO_PILOT_TRF_BASE_URL", ""),
    "MAX_JOBS_PER_CALL": env_int("AILURO_PILOT_MAX_JOBS", 1000, minimum=1),
    # The heartbeats of a web process's concurrent requests written by one statement, each request
    # answered once it committed (dispatcher/services/pilot_calls/coalesce.py, decision 0014).
    "COALESCE_HEARTBEATS": env_bool("AILURO_PILOT_COALESCE_HEARTBEATS", True),
    # A heartbeat statement that changes no job's state commits without waiting for its WAL flush
    # (synchronous_commit off for that transaction, decision 0020): a database crash may lose the
    # last ~0.6 s of plain heartbeats, never a state change. false: every heartbeat waits.
    "LAZY_HEARTBEAT_FLUSH": env_bool("AILURO_PILOT_LAZY_HEARTBEAT_FLUSH", True),
    # Path of the local storage endpoint in /cache/ddmendpoints.json (`mv` stage-out, --output-dir).
    "SE_PATH": env_str("AILURO_PILOT_SE_PATH", str(DATA_DIR / "se") + "/"),
}
if AILURO_PILOT["AUTH"] not in {"token", "open"}:
    raise ImproperlyConfigured(f"AILURO_PILOT_AUTH must be token or open, got {AILURO_PILOT['AUTH']!r}")
# --- end pilot protocol ---

# --- Prometheus (/metrics, config/metrics.py) ---
# AILURO_METRICS_TOKEN: when set, /metrics answers only `Authorization: Bearer <token>` (401 else);
# empty, it answers anyone who reaches it (nginx keeps it off the public address).
AILURO_METRICS_TOKEN = env_str("AILURO_METRICS_TOKEN", "")
# PROMETHEUS_MULTIPROC_DIR (read by prometheus_client itself): under gunicorn or Celery, the folder
# where every process of the host writes its counters, which /metrics sums. It must exist before a
# process counts anything, so every process that loads these settings makes it.
PROMETHEUS_MULTIPROC_DIR = env_str("PROMETHEUS_MULTIPROC_DIR", "")
if PROMETHEUS_MULTIPROC_DIR:
    Path(PROMETHEUS_MULTIPROC_DIR).mkdir(parents=True, exist_ok=True)

# --- Harvester provisioner (harvester/) ---
# AILURO_HARVESTER_SERVER_URL: the URL pilots use to reach this server (what worker nodes see,
# e.g. https://ailuro.example.org); the `provisioner` loop (config/loops.py) does nothing without it.
# AILURO_HARVESTER_LOST_AFTER: seconds a worker may be unknown to its batch system before it is
# marked missed (sacct lags sbatch by ~1 s with slurmdbd; be generous).
AILURO_HARVESTER: dict[str, Any] = {
    "SERVER_URL": env_str("AILURO_HARVESTER_SERVER_URL", ""),
    "LOST_AFTER_S": env_int("AILURO_HARVESTER_LOST_AFTER", 120, minimum=10),
    "PILOT_HEARTBEAT_S": env_int("AILURO_HARVESTER_PILOT_HEARTBEAT", 60, minimum=1),
}
# --- end harvester provisioner ---

# --- Logging: one JSON object per line on stdout (docs/architecture.md#errors-and-logs) ---
LOG_LEVEL = env_str("AILURO_LOG_LEVEL", "INFO").upper()
if LOG_LEVEL not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
    raise ImproperlyConfigured(
        f"AILURO_LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {LOG_LEVEL!r}"
    )
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "redact": {"()": "core.logging.RedactSecretsFilter"},
        "context": {"()": "core.logging.LogContextFilter"},
    },
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            # `severity` (what Cloud Logging reads; ECS shippers map it to log.level) and `time`, the
            # record's UTC time in RFC 3339 (2026-12-06T10:27:36.185336+00:00).
            "fmt": "%(levelname)s %(name)s %(message)s",
            "rename_fields": {"levelname": "severity", "name": "logger"},
            "timestamp": "time",
        },
    },
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
            "formatter": "json",
            "filters": ["redact", "context"],
        },
    },
    "root": {"handlers": ["stdout"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # Request lines for every pilot heartbeat would drown the events operators need.
        "django.server": {"level": "WARNING"},
        "gunicorn.access": {"level": "WARNING"},
    },
}


# --- campaigns ---------------------------------------------------------------------------------------
def _campaign_catalogs() -> dict[str, Any]:
    """AILURO_CAMPAIGN_CATALOGS: JSON {"name": {"table": t, "column": c, "filters": [col, …]}}, or
    `"columns": [c1, c2, …]` instead of `column` for a catalog of several dimensions (rows are
    tuples; a column is named as the dimension it holds).

    The only tables and columns a campaign's `data: {query: …}` (and a step's `gather: {query: …}`)
    may read; the campaign manager quotes these names and passes every value as a parameter.
    """
    raw = env_str("AILURO_CAMPAIGN_CATALOGS", "{}")
    try:
        catalogs = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ImproperlyConfigured(f"AILURO_CAMPAIGN_CATALOGS is not valid JSON: {exc}") from exc
    if not isinstance(catalogs, dict) or not all(
        isinstance(v, dict)
        and isinstance(v.get("table"), str)
        and (
            isinstance(v.get("column"), str)
            or (
                isinstance(v.get("columns"), list)
                and bool(v["columns"])
                and all(isinstance(c, str) for c in v["columns"])
            )
        )
        for v in catalogs.values()
    ):
        raise ImproperlyConfigured(
            'AILURO_CAMPAIGN_CATALOGS must map names to {"table": …, "column": …} or {"table": …, "columns": […]}'
        )
    return catalogs


CAMPAIGNS: dict[str, Any] = {
    # Data files named by `data: {file: {path: …}}` are read only from under this folder.
    "DATA_DIR": Path(env_str("AILURO_CAMPAIGN_DATA_DIR", str(DATA_DIR / "campaign-data"))).resolve(),
    "CATALOGS": _campaign_catalogs(),
    # Webhook calls of the advancer: short, so a dead receiver cannot stall a round.
    "WEBHOOK_TIMEOUT_S": env_int("AILURO_CAMPAIGN_WEBHOOK_TIMEOUT", 5, minimum=1),
    # Groups submitted per advancer round and campaign, so one huge step cannot hog a round.
    "SUBMIT_PER_ROUND": env_int("AILURO_CAMPAIGN_SUBMIT_PER_ROUND", 50, minimum=1),
    # Size caps, checked from the spec before any id or group is made: over them is 413.
    "MAX_DATA_IDS": env_int("AILURO_CAMPAIGN_MAX_DATA_IDS", 1_000_000, minimum=1),
    "MAX_GROUPS": env_int("AILURO_CAMPAIGN_MAX_GROUPS", 100_000, minimum=1),
}
# --- end campaigns ---------------------------------------------------------------------------------

# ==== Identity and access: OIDC, bearer tokens, hardening (docs/deployment/oidc.md) ====
# OIDC is on when OIDC_ISSUER is set; unset, the embedded run works without an identity provider
# (admin password login and `ail_` API tokens only). Endpoints come from the issuer's discovery
# document unless set one by one (OIDC_OP_*_ENDPOINT), read lazily so a provider that is down at
# start-up costs a 503 on login, not a crash.
OIDC_ISSUER = env_str("OIDC_ISSUER", "").rstrip("/")
OIDC_ENABLED = bool(OIDC_ISSUER)
OIDC_RP_CLIENT_ID = env_str("OIDC_RP_CLIENT_ID", "")  # the browser login's confidential client
OIDC_RP_CLIENT_SECRET = env_str("OIDC_RP_CLIENT_SECRET", "")
# Accepted `aud` values of bearer JWTs: the API's resource/audience, plus e.g. the CLI client id when
# clients send ID tokens as bearer (panda-client does).
OIDC_AUDIENCE = env_list("OIDC_AUDIENCE", [])
OIDC_ALGORITHMS = env_list("OIDC_ALGORITHMS", ["RS256"])
if not set(OIDC_ALGORITHMS) <= {"RS256", "RS384", "RS512", "ES256", "ES384", "PS256"}:
    raise ImproperlyConfigured(
        f"OIDC_ALGORITHMS may only name RS*, ES* or PS256 algorithms, got {OIDC_ALGORITHMS}"
    )
OIDC_CLI_CLIENT_ID = env_str("OIDC_CLI_CLIENT_ID", "")  # public client of `ailuro login`, shown to the CLI
OIDC_TIMEOUT = env_int("OIDC_TIMEOUT", 5, minimum=1)
OIDC_LEEWAY_SECONDS = env_int("OIDC_LEEWAY_SECONDS", 30, minimum=0)
OIDC_JWKS_CACHE_SECONDS = env_int("OIDC_JWKS_CACHE_SECONDS", 300, minimum=10)
OIDC_USERINFO_CACHE_SECONDS = env_int("OIDC_USERINFO_CACHE_SECONDS", 60, minimum=0)
OIDC_ACCEPT_OPAQUE_TOKENS = env_bool("OIDC_ACCEPT_OPAQUE_TOKENS", True)


# IdP group → ailuro role, e.g. "atlas/production=operator,atlas/admin=admin". Users whose groups map
# to no role get OIDC_DEFAULT_ROLE ("reader" makes unmapped users read-only).
OIDC_ROLE_GROUPS = env_mapping("OIDC_ROLE_GROUPS")
OIDC_DEFAULT_ROLE = env_str("OIDC_DEFAULT_ROLE", "user")
OIDC_RP_SIGN_ALGO = "RS256"
OIDC_RP_SCOPES = env_str("OIDC_RP_SCOPES", "openid email profile groups")
OIDC_USE_PKCE = True
OIDC_USE_NONCE = True
OIDC_AUTHENTICATION_CALLBACK_URL = "core:oidc-callback"
OIDC_OP_AUTHORIZATION_ENDPOINT = env_str("OIDC_OP_AUTHORIZATION_ENDPOINT", "")
OIDC_OP_TOKEN_ENDPOINT = env_str("OIDC_OP_TOKEN_ENDPOINT", "")
OIDC_OP_USER_ENDPOINT = env_str("OIDC_OP_USER_ENDPOINT", "")
OIDC_OP_JWKS_ENDPOINT = env_str("OIDC_OP_JWKS_ENDPOINT", "")
OIDC_OP_DEVICE_AUTHORIZATION_ENDPOINT = env_str("OIDC_OP_DEVICE_AUTHORIZATION_ENDPOINT", "")
LOGIN_URL = "/login/"
# Browser roles are synced from the provider's groups at login, so sessions are kept short enough
# that a removal at the provider takes effect within a working day.
SESSION_COOKIE_AGE = env_int("AILURO_SESSION_SECONDS", 12 * 3600, minimum=300)
LOGIN_REDIRECT_URL = "/"
LOGIN_REDIRECT_URL_FAILURE = "/login/failed/"
LOGOUT_REDIRECT_URL = "/"
AUTHENTICATION_BACKENDS = ["django.contrib.auth.backends.ModelBackend"]
if OIDC_ENABLED:
    AUTHENTICATION_BACKENDS.insert(0, "core.oidc.AiluroOIDCBackend")
# OIDC bearer tokens after `ail_` tokens; each class leaves the other kind alone.
REST_FRAMEWORK["DEFAULT_AUTHENTICATION_CLASSES"].insert(1, "core.auth.OIDCBearerAuthentication")
REST_FRAMEWORK["DEFAULT_PARSER_CLASSES"] = [
    "core.parsers.GuardedJSONParser",  # depth, NaN and NUL guard: nested JSON is a 400, not a 500
    "rest_framework.parsers.FormParser",
    "rest_framework.parsers.MultiPartParser",
]

# Hardening. Body caps per path prefix (longest prefix wins), checked before any view reads the body;
# AILURO_BODY_CAPS adds or overrides entries ("/api/v1/workflows=67108864,/=1048576").
AILURO_BODY_CAPS = {
    "/": 1024 * 1024,
    "/login/": 16 * 1024,
    "/logout/": 16 * 1024,
    "/oidc/": 16 * 1024,
    "/server/panda/": 16 * 1024 * 1024,  # pilots batch job updates with metadata
    "/api/v1/pilot/": 16 * 1024 * 1024,
    "/api/v1/workflows": DATA_UPLOAD_MAX_MEMORY_SIZE,  # DAG submission: bounded by MAX_DAG_JOBS too
    "/api/v1/campaigns": DATA_UPLOAD_MAX_MEMORY_SIZE,
    "/admin/": 4 * 1024 * 1024,
}
for _prefix, _size in env_mapping("AILURO_BODY_CAPS").items():
    if not _size.isdigit() or not _prefix.startswith("/"):
        raise ImproperlyConfigured(f"AILURO_BODY_CAPS entries must be /path=bytes, got {_prefix}={_size}")
    AILURO_BODY_CAPS[_prefix] = int(_size)
# Per-identity rate limits ("count/second|minute|hour"): login per client address, pilot calls per
# pilot token or robot (a whole fleet shares one identity, hence the high default).
AILURO_RATE_LIMITS = {
    "login": env_str("AILURO_RATE_LOGIN", "20/minute"),
    "pilot": env_str("AILURO_RATE_PILOT", "300000/minute"),
    # panda-client and `bps submitcmd` uploads per user: `bps` retries a failed upload in a tight
    # loop (~140 requests/s) and must meet a 429, not the disk.
    "cache_upload": env_str("AILURO_RATE_CACHE_UPLOAD", "30/minute"),
}


# --- State shared by every web process ---
# Rate-limit windows, OIDC token claims and memoised reads live in Django's cache. Several
# processes (gunicorn workers, web hosts behind a balancer) must share one: AILURO_CACHE_URL =
# redis://host:6379/1 (core/shared_cache.py; a cache that goes away is a miss, never a 500).
# Unset, each process keeps its own: fine for the embedded run, warned by check --deploy.
AILURO_CACHE_URL = env_str("AILURO_CACHE_URL", "")
CACHES = caches(AILURO_CACHE_URL)


# Behind a balancer every request comes from the balancer's address. The client's own address
# (rate limits of anonymous callers, logs) is then the last X-Forwarded-For entry added by a
# proxy listed here (CIDRs); a header from anyone else is ignored (core/ratelimit.client_address).
AILURO_TRUSTED_PROXIES = networks("AILURO_TRUSTED_PROXIES")
AILURO_CSP = env_str(
    "AILURO_CSP",
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; "
    "frame-ancestors 'none'",
)
# Seconds a client should wait before retrying when the database or the broker is unavailable: the
# Retry-After of the 503 every interface answers with then (core.unavailable).
AILURO_RETRY_AFTER_S = env_int("AILURO_RETRY_AFTER_S", 5, minimum=1)
# Outermost first: headers on every response (also the JSON errors and 413s of the next two), and
# the 503 for a database or broker that is down (core.middleware.DependencyUnavailableMiddleware).
MIDDLEWARE[1:1] = [
    "core.middleware.SecurityHeadersMiddleware",
    "core.middleware.ApiJsonErrorsMiddleware",
    "core.middleware.BodySizeLimitMiddleware",
    "core.middleware.DependencyUnavailableMiddleware",
]
# Outermost of all: counts and times every response by route name and status (core/metrics.py).
# Not in the pilot lane below: the pilot calls have their own families (dispatcher/protocol/metrics.py).
MIDDLEWARE.insert(0, "core.metrics.RequestMetricsMiddleware")
# Outermost of all: every log line of a request carries its id, echoed as X-Request-ID.
MIDDLEWARE.insert(0, "core.middleware.RequestIdMiddleware")
# The pilot protocol's calls (token-authenticated, CSRF-exempt, no session or user) run only these
# middleware when served by config.wsgi (core.middleware.PilotLaneWSGIHandler): the security ones
# and the 503 for a database that is down.
AILURO_PILOT_MIDDLEWARE = [
    "core.middleware.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "core.middleware.SecurityHeadersMiddleware",
    "core.middleware.ApiJsonErrorsMiddleware",
    "core.middleware.BodySizeLimitMiddleware",
    "core.middleware.DependencyUnavailableMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
AILURO_PILOT_LANE = [
    "/server/panda/getJob",
    "/server/panda/updateJob",
    "/server/panda/updateJobsInBulk",
    "/server/panda/getStatus",
    "/server/panda/updateWorkerPilotStatus",
    "/api/v1/pilot/acquire_jobs",
    "/api/v1/pilot/update_job",
    "/api/v1/pilot/update_jobs_bulk",
    "/api/v1/pilot/get_job_status",
    "/api/v1/pilot/update_worker_status",
]
# --- PanDA client compatibility (pandacompat/; docs/user-guide/coming-from-panda.md) ---
AILURO_PANDACOMPAT: dict[str, Any] = {
    # Bytes the iDDS relay may inflate per request: the gzip body plus every idds_zip field.
    "RELAY_MAX_DECODED_BYTES": env_int("AILURO_RELAY_MAX_DECODED_BYTES", 256 * 1024 * 1024, minimum=1024),
    "RELAY_MAX_DEPTH": env_int("AILURO_RELAY_MAX_DEPTH", 64, minimum=8),
    # The user file cache (sandboxes of prun and `bps submitcmd`), served at /cache/<name>.
    "CACHE_DIR": Path(env_str("AILURO_PANDA_CACHE_DIR", str(DATA_DIR / "panda-cache"))).resolve(),
    "CACHE_MAX_FILE_BYTES": env_int("AILURO_PANDA_CACHE_MAX_FILE", 768 * 1024 * 1024, minimum=1024),
    "CACHE_QUOTA_BYTES": env_int("AILURO_PANDA_CACHE_QUOTA", 4 * 1024**3, minimum=1024),
    # Days a cache file is kept after its upload (the cache_expiry loop deletes it then).
    "CACHE_KEEP_DAYS": env_int("AILURO_PANDA_CACHE_KEEP_DAYS", 30, minimum=1),
    # How long the dependency maps of a BPS workflow sent in steps wait for its main workflow.
    "STEP_TTL_S": env_int("AILURO_RELAY_STEP_TTL", 24 * 3600, minimum=60),
    # GET /auth/<VO>_auth_config.json: the public client panda-client's device flow logs in with.
    "AUTH_VOS": env_list("AILURO_PANDA_AUTH_VOS", []),
    "AUTH_CLIENT_ID": env_str("AILURO_PANDA_AUTH_CLIENT_ID", OIDC_CLI_CLIENT_ID),
    "AUTH_AUDIENCE": env_str("AILURO_PANDA_AUTH_AUDIENCE", ""),
    # Where prun's jobs fetch their sandbox (<url>/cache/<name>); empty: the URL the task came to.
    "SOURCE_URL": env_str("AILURO_PANDA_SOURCE_URL", ""),
}
AILURO_BODY_CAPS.setdefault(
    "/api/v1/file_server/upload_cache_file", AILURO_PANDACOMPAT["CACHE_MAX_FILE_BYTES"] + 64 * 1024
)
# Client.submitJobs: up to pandacompat.jobspec.MAX_JOBS_PER_CALL jobs of about 1.5 KiB each.
AILURO_BODY_CAPS.setdefault("/api/v1/job/submit", 16 * 1024 * 1024)
# --- end PanDA client compatibility ---
SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"] = [
    "drf_spectacular.hooks.postprocess_schema_enums",
    "core.schema.error_responses_hook",  # the one error format, documented on every operation
]
# ==== end of identity and access ====
