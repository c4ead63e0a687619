"""What the app, the relay and the worker measure, in the Prometheus format
(prometheus-client); infra/metrics_server.py serves it.

Each app holds its metrics in ``app.extensions["metrics"]`` (``init_app``),
and hands them to what records: the pool, L2, the request log, the relay, the
worker. ``METRICS_ENABLED=false`` gives an app ``OFF``, whose every call does
nothing: the cost of the instrumentation is measured against it (make bench).
prometheus-client registers each metric once per process, so the recording
set is built once and shared by the apps of a process that record.
"""

import functools

from prometheus_client import Counter, Gauge, Histogram

# Latency buckets from a cached answer (a fraction of a millisecond) to
# gunicorn's timeout.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """Every metric of the service, by name; ``kinds`` builds each (Counter,
    Gauge, Histogram, or a stand-in that records nothing)."""

    def __init__(self, counter=Counter, gauge=Gauge, histogram=Histogram):
        self.REQUESTS = histogram(
            "api_request_duration_seconds", "Requests the app answered, by route and status, and how long each took.",
            ["method", "route", "status"], buckets=LATENCY_BUCKETS)
        self.L2_READS = counter(
            "api_l2_reads_total", "L2 lookups by resource and result: hit, miss, down (Redis failing or "
            "the relay behind), off (L2 turned off).", ["resource", "result"])
        self.REDIS_ERRORS = counter(
            "api_redis_errors_total", "Redis calls of the cache that failed, by what was tried.", ["action"])
        self.POSTGRES_ERRORS = counter(
            "api_postgres_errors_total", "PostgreSQL errors by kind: unavailable, conflict, data, other.", ["kind"])
        self.POOL_IN_USE = gauge(
            "api_db_pool_connections_in_use", "Connections of the pools taken by a request or task.",
            multiprocess_mode="livesum")
        self.POOL_WAIT = histogram(
            "api_db_pool_wait_seconds", "How long taking a connection from the pool waited.",
            buckets=(0.0001, 0.001, 0.01, 0.1, 0.5, 1, 2, 5))
        self.POOL_TIMEOUTS = counter(
            "api_db_pool_timeouts_total", "Requests that found no free connection in time (a 503).")

        self.RELAY_APPLIED = counter(
            "api_relay_changes_applied_total", "Committed changes the relay applied to the caches: "
            "each invalidated in L2 and, where L1 held it, refreshed there.")
        self.RELAY_LAG = histogram(
            "api_relay_lag_seconds", "From a change's commit to the relay applying it (the longest of each batch).",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.RELAY_BACKLOG = gauge(
            "api_relay_backlog_changes", "Changes waiting for the relay at its last look, "
            "at most one batch (1000): 1000 means at least that many.", multiprocess_mode="liveall")
        self.RELAY_EPOCHS = counter(
            "api_relay_l2_epochs_total", "Times the relay flushed L2 for a new epoch: another Redis "
            "primary or run, or another PostgreSQL timeline (cache/l2.py).")

        self.CONSISTENCY_CHECKS = counter(
            "api_consistency_checks_total", "Sampled changed items the consistency monitor read back from a "
            "cache level past its bound and compared with PostgreSQL, by level (l1, l2) and host.",
            ["level", "host"])
        self.CONSISTENCY_INCONSISTENT = counter(
            "api_consistency_inconsistent_total", "Of those checks, the answers that differed from what "
            "PostgreSQL had held for longer than the level's bound.", ["level", "host"])
        self.CONSISTENCY_PAST_BOUND = histogram(
            "api_consistency_past_bound_seconds", "How long past its level's bound each inconsistent answer was "
            "(at least).", ["level"], buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300))
        self.CONSISTENCY_SKIPPED = counter(
            "api_consistency_skipped_total", "Checks not counted: the item changed again too recently to prove "
            "an answer wrong.", ["level"])
        self.CONSISTENCY_UNREACHABLE = counter(
            "api_consistency_unreachable_total", "L1 peeks that got no answer from that nginx.", ["host"])

        self.TASKS = counter(
            "api_worker_tasks_total", "Tasks the worker ran, by task and outcome: succeeded, failed, retried.",
            ["task", "outcome"])
        self.TASK_QUEUE_WAIT = histogram(
            "api_worker_queue_wait_seconds", "From a task's queueing to a worker starting it.", ["task"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300))
        self.TASK_DURATION = histogram(
            "api_worker_task_duration_seconds", "How long a task ran.", ["task"], buckets=LATENCY_BUCKETS)

        # Every known label value from the start: a dashboard's error rate is 0, not "no data".
        for action in ("read", "store", "invalidate"):
            self.REDIS_ERRORS.labels(action)
        for kind in ("unavailable", "conflict", "data", "other"):
            self.POSTGRES_ERRORS.labels(kind)
        for level in ("l1", "l2"):
            self.CONSISTENCY_SKIPPED.labels(level)


class _Nothing:
    """A metric that records nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def labels(self, *args, **kwargs):
        return self

    def inc(self, *args):
        pass

    dec = set = observe = inc


OFF = Metrics(_Nothing, _Nothing, _Nothing)


class _Children:
    """A labelled metric whose ``labels()`` makes each child once: prometheus-
    client's takes a lock and builds a key on every call, a cost on every
    request (docs/performance.md). It keeps a child per label values anyway."""

    def __init__(self, metric):
        self._metric, self._children = metric, {}

    def labels(self, *values):
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


def _remembering(kind):
    """``kind``, its labelled metrics as ``_Children``."""
    def make(name, documentation, labelnames=(), **kwargs):
        metric = kind(name, documentation, labelnames, **kwargs)
        return _Children(metric) if labelnames else metric
    return make


@functools.cache
def recording():
    """This process's recording metrics, registered on first use."""
    return Metrics(_remembering(Counter), _remembering(Gauge), _remembering(Histogram))


def init_app(app):
    app.extensions["metrics"] = recording() if app.config["METRICS_ENABLED"] else OFF
