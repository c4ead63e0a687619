"""Fault drills on a whole stack: scripts/test.sh starts one of their own
(`make faults`, and the last stage of `make test`) and exports STACK_DIR and
its settings. The drills stop, kill and restart its services."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psycopg2
import pytest
import redis

ROOT = Path(__file__).resolve().parents[2]
FIGURES = {}  # scenario -> its figures, printed at the end of the run


@pytest.fixture(scope="session")
def stack():
    if not os.environ.get("STACK_DIR") or not os.environ.get("BASE_URL"):
        pytest.exit("STACK_DIR and BASE_URL are not set: run the drills with 'make faults'", returncode=2)
    return Stack(Path(os.environ["STACK_DIR"]), os.environ["BASE_URL"])


@pytest.fixture
def figures(request):
    """The figures of this scenario, reported whether it passes or not."""
    entry = FIGURES.setdefault(request.node.name, {})
    return entry


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
        """Queue a task on the stack's broker, as the app does."""
        from worker import celery  # the stack's settings are in the environment

        celery.send_task(name, args=args, queue="orders")

    def log_size(self, name):
        path = self.dir / name
        return path.stat().st_size if path.exists() else 0

    def log_since(self, name, offset):
        with open(self.dir / name, "rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    def db(self):
        """The database as an operator's psql reaches it: as the schema's owner."""
        conn = psycopg2.connect(os.environ["MIGRATE_DATABASE_URL"])
        conn.autocommit = True
        return conn

    def redis(self):
        """The cache Redis (L2)."""
        return redis.Redis.from_url(os.environ["REDIS_URL"], socket_timeout=2)

    def state_redis(self):
        """The Redis of rate-limit counters and queued tasks."""
        return redis.Redis.from_url(os.environ["RATE_LIMIT_STORAGE_URL"], socket_timeout=2)


def wait_until(condition, seconds, step=0.05):
    """Seconds until ``condition()`` held, or None if it did not within ``seconds``."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if condition():
            return round(time.monotonic() - started, 2)
        time.sleep(step)
    return None


def pytest_terminal_summary(terminalreporter):
    if not FIGURES:
        return
    terminalreporter.section("fault drill figures")
    for name, entry in FIGURES.items():
        terminalreporter.write_line(f"{name}: {json.dumps(entry)}")
