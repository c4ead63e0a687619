"""Serves a part's metrics (metrics.py) to Prometheus, on a port of its own
(``APP_METRICS_BIND``, ``RELAY_METRICS_BIND``, ``WORKER_METRICS_BIND``),
never nginx's public one, so nothing of it passes through L1.

gunicorn and Celery run several processes: with ``PROMETHEUS_MULTIPROC_DIR``
set, every process writes its samples to files there and the one server, in
gunicorn's master or Celery's main process, adds them up (prometheus-client's
multiprocess mode). The directory must be empty when the part starts, or a
dead process's samples would count: make up empties it, compose mounts a
fresh tmpfs there. This module defines no metric: gunicorn's master imports
it and no module of the app, which its workers import afresh.
"""

import logging

from prometheus_client import REGISTRY, CollectorRegistry, multiprocess, start_http_server

import settings

log = logging.getLogger(__name__)

def serve(bind_setting):
    """Serve this part's metrics (``bind_setting``: e.g. "app_bind") from this
    process, summed over its processes in multiprocess mode."""
    config = settings.metrics_settings()
    bind = config[bind_setting]
    if not config["enabled"] or not bind:
        return None
    registry = REGISTRY
    if config["multiproc_dir"]:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    host, _, port = bind.rpartition(":")
    try:
        server, _ = start_http_server(int(port), addr=host, registry=registry)
    except OSError as error:  # a port taken must not take the API down with it
        log.error("metrics: cannot serve on %s: %s", bind, error)
        return None
    return server


def process_ended(pid):
    """A gunicorn worker or Celery child exited: its live gauges go with it."""
    if settings.metrics_settings()["multiproc_dir"]:
        multiprocess.mark_process_dead(pid)
