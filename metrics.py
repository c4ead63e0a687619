"""What the app, the relay and the worker measure, in the Prometheus format
(prometheus-client); metrics_server.py serves it.

``METRICS_ENABLED=false`` turns every metric into a no-op and serves none:
the cost of the instrumentation is measured against it (make bench).
"""

from prometheus_client import Counter, Gauge, Histogram

import settings

ENABLED = settings.metrics_settings()["enabled"]


class _Off:
    """A metric when METRICS_ENABLED is false: every call does nothing."""

    def labels(self, *args, **kwargs):
        return self

    def inc(self, *args):
        pass

    dec = set = observe = inc


def _metric(kind, *args, **kwargs):
    return kind(*args, **kwargs) if ENABLED else _Off()


# Latency buckets from a cached answer (a fraction of a millisecond) to
# gunicorn's timeout.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

REQUESTS = _metric(Histogram, "api_request_duration_seconds", "Requests the app answered, by route and status, and how long each took.",
                     ["method", "route", "status"], buckets=LATENCY_BUCKETS)
L2_READS = _metric(Counter, "api_l2_reads_total", "L2 lookups by resource and result: hit, miss, down (Redis failing or "
                   "the relay behind), off (L2 turned off).", ["resource", "result"])
REDIS_ERRORS = _metric(Counter, "api_redis_errors_total", "Redis calls of the cache that failed, by what was tried.", ["action"])
POSTGRES_ERRORS = _metric(Counter, "api_postgres_errors_total", "PostgreSQL errors by kind: unavailable, conflict, data, other.",
                          ["kind"])
POOL_IN_USE = _metric(Gauge, "api_db_pool_connections_in_use", "Connections of the pools taken by a request or task.",
                    multiprocess_mode="livesum")
POOL_WAIT = _metric(Histogram, "api_db_pool_wait_seconds", "How long taking a connection from the pool waited.",
                      buckets=(0.0001, 0.001, 0.01, 0.1, 0.5, 1, 2, 5))
POOL_TIMEOUTS = _metric(Counter, "api_db_pool_timeouts_total", "Requests that found no free connection in time (a 503).")

RELAY_APPLIED = _metric(Counter, "api_relay_changes_applied_total", "Committed changes the relay applied to the caches: "
                        "each invalidated in L2 and, where L1 held it, refreshed there.")
RELAY_LAG = _metric(Histogram, "api_relay_lag_seconds", "From a change's commit to the relay applying it (the longest of each batch).",
                      buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
RELAY_BACKLOG = _metric(Gauge, "api_relay_backlog_changes", "Changes waiting for the relay at its last look, "
                        "at most one batch (1000): 1000 means at least that many.",
                      multiprocess_mode="liveall")

TASKS = _metric(Counter, "api_worker_tasks_total", "Tasks the worker ran, by task and outcome: succeeded, failed, retried.",
                ["task", "outcome"])
TASK_QUEUE_WAIT = _metric(Histogram, "api_worker_queue_wait_seconds", "From a task's queueing to a worker starting it.", ["task"],
                            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300))
TASK_DURATION = _metric(Histogram, "api_worker_task_duration_seconds", "How long a task ran.", ["task"], buckets=LATENCY_BUCKETS)


# Every known label value from the start: a dashboard's error rate is 0, not "no data".
for _action in ("read", "store", "invalidate"):
    REDIS_ERRORS.labels(_action)
for _kind in ("unavailable", "conflict", "data", "other"):
    POSTGRES_ERRORS.labels(_kind)
