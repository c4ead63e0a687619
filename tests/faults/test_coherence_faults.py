"""The coherence checker (tests/support/coherence.py) under faults: the relay
SIGKILLed, Redis cut off (its connections dropped, its data kept) while the
gunicorn workers are SIGKILLed, Redis restarted, PostgreSQL restarted, and
writes from psql throughout. The bounds that must hold whatever died: L2 a
second, L1 its 6 s (a lost refresh costs items their 1 s), PostgreSQL and a
writer's own reads never behind, and stale-if-error within its 60 s."""

import os
import signal
import time

import pytest
import redis

from tests.support.bounds import L1_BOUND, L2_BOUND, STALE_IF_ERROR_BOUND
from tests.support.coherence import Checker
from tests.support.servers import Link
from tests.support.stack import app_socket, setting


class RedisCut:
    """Puts a link between the stack and its Redis (the socket renamed, every
    client made to reconnect through the link), which ``cut`` and ``mend``."""

    def __init__(self, stack):
        self.sock = str(stack.dir / "redis" / "redis.sock")
        self.real = self.sock + ".real"

    def __enter__(self):
        os.rename(self.sock, self.real)
        self.link = Link(self.real, path=self.sock)
        self._reconnect_everyone()
        return self.link

    def __exit__(self, *exc):
        self.link.close()
        os.unlink(self.sock)
        os.rename(self.real, self.sock)
        self._reconnect_everyone()

    def _reconnect_everyone(self):
        redis.Redis(unix_socket_path=self.real if os.path.exists(self.real) else self.sock).client_kill_filter(
            _type="normal", skipme=True)


def kill_all(pids):
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def checker(stack):
    return Checker(stack.base_url, app_socket(), setting("DATABASE_URL"), seed=20)


def test_bounds_hold_whatever_dies(stack, checker, figures):
    events = []

    def at(second, what, action):
        delay = started + second - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        action()
        events.append((round(time.monotonic() - started, 1), what))

    def faults():
        relay_pid = int((stack.dir / "relay" / "relay.pid").read_text())
        at(3, "relay SIGKILLed", lambda: kill_all([relay_pid]))
        at(6, "relay started", lambda: stack.service("start", "relay"))
        with RedisCut(stack) as link:
            at(10, "redis cut off", link.cut)
            at(11, "gunicorn workers SIGKILLed", lambda: kill_all(stack.gunicorn_workers()))
            at(15, "redis reachable", link.mend)
        at(20, "redis stopped", lambda: stack.service("stop", "redis"))
        at(21, "redis started (empty)", lambda: stack.service("start", "redis"))
        at(27, "postgresql stopped", lambda: stack.service("stop", "postgres"))
        at(30, "postgresql started", lambda: stack.service("start", "postgres"))

    started = time.monotonic()
    checker.run(40, during=faults)
    summary, table = checker.figures()
    figures.update(summary, events=events, **{name: row for name, row in table.items()})
    checker.report("40 s under faults")

    def worst(*names):
        return max((table[name]["worst_s"] for name in names if name in table), default=0.0)

    assert all(row["impossible"] == 0 for row in table.values()), table
    assert worst("L2 item", "L2 list") <= L2_BOUND, table
    assert worst("L1 item", "L1 list") <= L1_BOUND, table
    assert worst("db item", "db list", "own write, nginx", "own write, app") == 0.0, table
    assert worst("L1 stale-if-error item", "L1 stale-if-error list") <= STALE_IF_ERROR_BOUND, table
    assert table["L2 item"]["reads"] > 0 and table["L1 item"]["reads"] > 0, table
