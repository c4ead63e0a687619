"""Fault drills on a whole stack: scripts/test.sh starts one of their own
(`make faults`, and the last stage of `make test`) and exports STACK_DIR and
its settings. The drills stop, kill and restart its services."""

import os
import signal
import subprocess
from pathlib import Path

import psycopg2
import pytest
import redis

from tests.support import ROOT
from tests.support.bounds import REQUEST_SECONDS
from tests.support.stack import setting


@pytest.fixture(scope="session")
def stack():
    return Stack(Path(setting("STACK_DIR")), setting("BASE_URL"))


class Stack:
    def __init__(self, directory, base_url):
        self.dir, self.base_url = directory, base_url

    def service(self, action, name, **settings):
        """``scripts/stack.sh ACTION NAME``; ``settings`` override the environment it starts NAME with."""
        subprocess.run([ROOT / "scripts" / "stack.sh", action, name], check=True, capture_output=True, timeout=120,
                       env={**os.environ, **settings})

    def _pid(self, pidfile):
        return int((self.dir / pidfile).read_text().strip())

    def gunicorn_workers(self):
        master = str(self._pid("app/gunicorn.pid"))
        return [int(pid) for pid in subprocess.run(["pgrep", "-P", master], capture_output=True, text=True).stdout.split()]

    def kill_a_gunicorn_worker(self):
        pid = self.gunicorn_workers()[0]
        os.kill(pid, signal.SIGKILL)
        return pid

    def reload_app(self):
        """HUP: gunicorn starts new workers and lets the old ones finish."""
        os.kill(self._pid("app/gunicorn.pid"), signal.SIGHUP)

    def kill_celery(self):
        """SIGKILL to the worker and its pool (its own process group)."""
        os.killpg(os.getpgid(self._pid("worker/celery.pid")), signal.SIGKILL)

    def send_task(self, name, *args):
        """Queue a task on the stack's broker, as the app does; its id."""
        from worker import celery  # noqa: PLC0415 (builds an app from the stack's settings: only when a drill sends)

        return celery.send_task(name, args=args, queue="orders").id

    def log_size(self, name):
        path = self.dir / name
        return path.stat().st_size if path.exists() else 0

    def log_since(self, name, offset):
        with open(self.dir / name, "rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    def db(self):
        """The database as an operator's psql reaches it: as the schema's owner."""
        conn = psycopg2.connect(setting("MIGRATE_DATABASE_URL"))
        conn.autocommit = True
        return conn

    def redis(self):
        """The cache Redis (L2)."""
        return redis.Redis.from_url(setting("REDIS_URL"), socket_timeout=REQUEST_SECONDS)

    def state_redis(self):
        """The Redis of rate-limit counters and queued tasks."""
        return redis.Redis.from_url(setting("RATE_LIMIT_STORAGE_URL"), socket_timeout=REQUEST_SECONDS)
