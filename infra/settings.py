"""Every setting the service reads from its environment: name, default and type.

Nothing else in the project reads ``os.environ``. ``.env.example`` documents
each variable; gunicorn.conf.py and infra/metrics_server.py read their own
knobs through this module too.
"""

import os

# The value shipped in .env.example. A production app refuses to start with it.
EXAMPLE_SECRET_KEY = "change-me-in-production"


# An empty value is an unset one: docker-compose.yml passes every setting
# through as `${NAME:-}`, and the defaults below are the only ones.
def _str(name, default):
    return os.environ.get(name) or default


def _int(name, default):
    return int(os.environ.get(name) or default)


def _float(name, default):
    return float(os.environ.get(name) or default)


def _bool(name, default):
    return _str(name, default).lower() in ("1", "true", "yes")


def web_settings():
    """gunicorn's knobs (read by gunicorn.conf.py before the app exists)."""
    return {
        "bind": _str("WEB_BIND", "127.0.0.1:8000"),
        "workers": _int("WEB_WORKERS", 2),
        "threads": _int("WEB_THREADS", 2),
        # Longer than nginx's upstream keepalive_timeout (60 s) so that nginx,
        # not gunicorn, closes idle connections: no request races a close.
        "keepalive": _int("WEB_KEEPALIVE", 75),
        "timeout": _int("WEB_TIMEOUT", 30),
    }


def metrics_settings():
    """Where each part serves its Prometheus metrics (infra/metrics_server.py):
    host:port, never nginx's public port; empty serves none."""
    return {
        "enabled": _bool("METRICS_ENABLED", "true"),
        "app_bind": _str("APP_METRICS_BIND", "127.0.0.1:9101"),
        "relay_bind": _str("RELAY_METRICS_BIND", "127.0.0.1:9102"),
        "worker_bind": _str("WORKER_METRICS_BIND", "127.0.0.1:9103"),
        # prometheus-client reads it too, itself: where each process of a part writes its samples.
        "multiproc_dir": _str("PROMETHEUS_MULTIPROC_DIR", ""),
    }


def app_settings():
    """The Flask config keys the application reads, from the environment."""
    return {
        "APP_ENV": _str("APP_ENV", "production"),
        # No usable default: production refuses to start without a real one.
        "SECRET_KEY": _str("SECRET_KEY", ""),
        "LOG_LEVEL": _str("LOG_LEVEL", "INFO"),
        # false records no metric (infra/metrics.py) and serves none.
        "METRICS_ENABLED": metrics_settings()["enabled"],
        # libpq connection string or URI; a unix-socket host works too.
        # The app's role, which may only read and write rows (migrate.py gives it them).
        "DATABASE_URL": _str("DATABASE_URL", "postgresql://api@localhost:5432/app"),
        # The schema's owner, as migrate.py connects; empty means DATABASE_URL.
        "MIGRATE_DATABASE_URL": _str("MIGRATE_DATABASE_URL", ""),
        # One connection per gunicorn thread: a thread never waits for another.
        "DB_POOL_SIZE": _int("DB_POOL_SIZE", web_settings()["threads"]),
        "DB_CONNECT_TIMEOUT": _int("DB_CONNECT_TIMEOUT", 2),
        "DB_STATEMENT_TIMEOUT_MS": _int("DB_STATEMENT_TIMEOUT_MS", 5000),
        # Where the phone -> address book lives.
        "ENDPOINT_PREFIX": _str("ENDPOINT_PREFIX", "/addr_by_phone"),
        # Every Redis URL may also name Sentinels (infra/redis_url.py).
        "REDIS_URL": _str("REDIS_URL", "redis://localhost:6379/0"),
        # Rate-limit counters live here; empty means REDIS_URL.
        "RATE_LIMIT_STORAGE_URL": _str("RATE_LIMIT_STORAGE_URL", ""),
        # Celery's broker (the orders queue); empty means REDIS_URL. Not named
        # CELERY_BROKER_URL: Celery would read that one itself, unspelled.
        "QUEUE_REDIS_URL": _str("QUEUE_REDIS_URL", ""),
        # false turns L2 off (benchmarks, debugging): set it alike on every instance.
        "CACHE_ENABLED": _bool("CACHE_ENABLED", "true"),
        "CACHE_TTL": _int("CACHE_TTL", 60),
        # What L2 stores at most: a larger value is served from PostgreSQL,
        # and lists past the count wait for the next change (cache/l2.py).
        "CACHE_MAX_VALUE_BYTES": _int("CACHE_MAX_VALUE_BYTES", 64 * 1024),
        "CACHE_MAX_LISTS": _int("CACHE_MAX_LISTS", 256),
        # How long the relay waits for the cache Redis's replicas to confirm an
        # invalidation before it keeps the change to apply again (cache/l2.py).
        "CACHE_REPLICA_WAIT_MS": _int("CACHE_REPLICA_WAIT_MS", 250),
        # Redis answers in well under a millisecond; past this it counts as down.
        "CACHE_TIMEOUT": _float("CACHE_TIMEOUT", 0.25),
        # After a Redis error, reads skip the cache this long instead of paying
        # the timeout on every request.
        "CACHE_RETRY_AFTER": _float("CACHE_RETRY_AFTER", 1.0),
        # Every nginx (L1) of the deployment, comma-separated (http://host:port
        # or unix:/path of its server for the relay): the relay asks each to
        # refresh what it holds of a changed item. Empty: L1 catches up within
        # its own 5 s bound.
        "L1_REFRESH_URLS": [url.strip() for url in _str("L1_REFRESH_URLS", "").split(",") if url.strip()],
        # The relay's consistency monitor (cache/monitor.py): how many sampled
        # changes a second it checks at every level; 0 turns it off.
        "CONSISTENCY_CHECKS_PER_S": _float("CONSISTENCY_CHECKS_PER_S", 2.0),
        "JWT_EXPIRES_MINUTES": _int("JWT_EXPIRES_MINUTES", 30),
        # How long the first answer to a POST with an Idempotency-Key is
        # replayed to its retries (seconds); the worker purges older ones.
        "IDEMPOTENCY_KEY_TTL": _int("IDEMPOTENCY_KEY_TTL", 24 * 3600),
        # Per client address, in flask-limiter's notation.
        "RATE_LIMIT_AUTH": _str("RATE_LIMIT_AUTH", "5 per minute"),
        "RATE_LIMIT_ORDERS": _str("RATE_LIMIT_ORDERS", "10 per minute"),
    }
