"""The Celery worker's entry point: ``celery -A worker worker -Q orders -B``.

It builds the same Flask app as gunicorn, so tasks use the same settings,
database pool and cache; the tasks are defined with their domains. Here, the
worker's side of what infra/tasks.py's send puts in each message: the request id of the
request that queued the task, in every log line of the task, and its
metrics (infra/metrics.py), served by the main process on WORKER_METRICS_BIND.
"""

import logging
import time

from celery import current_task, signals

from app import create_app
from infra import metrics_server

# Celery's -A needs an app at import: this process entry point builds it.
flask_app = create_app()
metrics = flask_app.extensions["metrics"]
# Named `celery`, and no attribute named `app`: that is what `celery -A worker` looks for.
celery = flask_app.extensions["celery"]


class TaskRequestId(logging.Filter):
    """Adds the request id of the request that queued the running task to its log lines."""

    def filter(self, record):
        task = current_task
        request_id = getattr(task.request, "request_id", None) if task else None
        if request_id:
            record.request_id = request_id
        return True


for _handler in logging.getLogger().handlers:
    _handler.addFilter(TaskRequestId())


@signals.worker_init.connect
def _serve_metrics(**_):
    metrics_server.serve("worker_bind")  # in the main process, before its pool's children exist


@signals.task_prerun.connect
def _task_started(task, **_):
    task.request.started_at = time.time()
    queued_at = getattr(task.request, "queued_at", None)
    if queued_at:
        metrics.TASK_QUEUE_WAIT.labels(task.name).observe(max(0.0, task.request.started_at - queued_at))


@signals.task_postrun.connect
def _task_ended(task, state, **_):
    outcome = {"SUCCESS": "succeeded", "RETRY": "retried"}.get(state, "failed")
    metrics.TASKS.labels(task.name, outcome).inc()
    started_at = getattr(task.request, "started_at", None)
    if started_at:
        metrics.TASK_DURATION.labels(task.name).observe(time.time() - started_at)
