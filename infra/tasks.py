"""Celery wiring: each Flask app gets a Celery app whose tasks run inside its app context.

The API only sends tasks by name (``send``); the worker (worker.py) runs them.
Tasks themselves live with their domain (e.g. blueprints/orders.py).
"""

import logging
import time

from celery import Celery, Task
from flask import current_app, has_request_context, request

from infra import redis_url

log = logging.getLogger(__name__)

ORDERS_QUEUE = "orders"


def init_app(app):
    class FlaskTask(Task):
        def __call__(self, *args, **kwargs):
            with app.app_context():
                return self.run(*args, **kwargs)

    cfg = app.config
    timeout = cfg["CACHE_TIMEOUT"] * 4
    broker_url, broker_options = redis_url.for_kombu(cfg["QUEUE_REDIS_URL"] or cfg["REDIS_URL"])
    celery = Celery(app.import_name, task_cls=FlaskTask)
    celery.conf.update(
        broker_url=broker_url,
        task_default_queue=ORDERS_QUEUE,
        task_ignore_result=True,
        # A task is acknowledged after it ran, and handed to another worker if
        # its worker dies: with idempotent tasks, every order is processed.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        worker_prefetch_multiplier=1,
        broker_transport_options={
            "visibility_timeout": 300,
            # A publish that cannot connect fails at once instead of retrying.
            "max_retries": 0,
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            **broker_options,
        },
        broker_connection_timeout=timeout,
        broker_connection_retry_on_startup=True,
        # The API must not hang on a broker that is down: publishing fails at
        # once and the worker's sweep picks the work up later.
        task_publish_retry=False,
        worker_hijack_root_logger=False,
        # With `-B`, the worker also queues orders.sweep (blueprints/orders.py)
        # every 30 s, catching orders whose task could not be queued, and
        # idempotency.purge (infra/idempotency.py), which deletes expired keys.
        beat_schedule={"orders-sweep": {"task": "orders.sweep", "schedule": 30.0},
                       "idempotency-purge": {"task": "idempotency.purge", "schedule": 600.0}},
    )
    celery.set_default()
    app.extensions["celery"] = celery
    return celery


def send(name, *args):
    """Queue a task by name; False (logged) when the broker cannot take it now.

    The message carries when it was queued (the worker's queue-wait metric)
    and the id of the request that queued it, which every log line of the
    task repeats (worker.py)."""
    headers = {"queued_at": time.time()}
    if has_request_context() and request.headers.get("X-Request-ID"):
        headers["request_id"] = request.headers["X-Request-ID"]
    try:
        current_app.extensions["celery"].send_task(name, args=args, queue=ORDERS_QUEUE, headers=headers)
        return True
    except Exception as error:  # noqa: BLE001 (kombu raises several unrelated types for a lost broker)
        log.error("could not queue %s%r: %s", name, args, error)
        return False
