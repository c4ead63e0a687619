"""Serves a part's metrics (infra/metrics.py) to Prometheus, on a port of its own
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

import contextlib
import glob
import logging
import os

from prometheus_client import REGISTRY, CollectorRegistry, multiprocess, start_http_server

from infra import settings

log = logging.getLogger(__name__)


class _RunningProcessesCollector(multiprocess.MultiProcessCollector):
    """The sum over the part's processes, where a live gauge (connections in
    use) counts only for processes still running. Checked at each scrape, so
    a process that ended without saying so counts no more: a Celery child
    killed with SIGKILL runs no shutdown signal, a gunicorn worker's end is
    seen by its master only once reaped."""

    def collect(self):
        for path in glob.glob(os.path.join(self._path, "gauge_live*_*.db")):  # gauge_<mode>_<pid>.db
            if not _running(int(path.rsplit("_", 1)[1].removesuffix(".db"))):
                with contextlib.suppress(FileNotFoundError):  # a scrape beside this one removed it first
                    os.remove(path)
        return super().collect()


def _running(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # running, as another user
        pass
    return True


def registry():
    """What this part serves: in multiprocess mode, the sum over its processes."""
    if not settings.metrics_settings()["multiproc_dir"]:
        return REGISTRY
    summed = CollectorRegistry()
    _RunningProcessesCollector(summed)
    return summed


def serve(bind_setting):
    """Serve this part's metrics (``bind_setting``: e.g. "app_bind") from this
    process, summed over its processes in multiprocess mode."""
    config = settings.metrics_settings()
    bind = config[bind_setting]
    if not config["enabled"] or not bind:
        return None
    host, _, port = bind.rpartition(":")
    try:
        server, _ = start_http_server(int(port), addr=host, registry=registry())
    except OSError as error:  # a port taken must not take the API down with it
        log.error("metrics: cannot serve on %s: %s", bind, error)
        return None
    return server
