"""The consistency monitor's verdict (cache/monitor.py, ``check``) on real
PostgreSQL and Redis, with the session's relay handing it every change:
a stale L2 answer is counted, one that differs only because a newer write
landed between the database read and the cache read is skipped, and an L1
the monitor could not reach is peeked again until it answers."""

import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler

import pytest
from prometheus_client import REGISTRY

from cache import monitor
from infra import db
from tests.app.conftest import wait_applied
from tests.support.bounds import UNPROMISED_WAIT
from tests.support.waiting import eventually


def _count(name, **labels):
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def users(app):
    return app.extensions["cache"].resources.by_table["users"][0]


@pytest.fixture
def relay_monitor(session_relay):
    """The session relay's own monitor: the one the relay hands every change to."""
    watching = session_relay.relay.monitor
    assert watching.enabled
    return watching


def _settled(app):
    """Every change of the seed rows applied, and older than the L2 bound."""
    wait_applied(app)
    time.sleep(monitor.L2_BOUND + 0.1)


def test_a_stale_l2_value_is_counted_as_inconsistent(app, users, relay_monitor, test_redis_url):
    _settled(app)
    with app.app_context():
        truth = users.load("1")
        stale = truth.replace('"Alice"', '"Not Alice"')
        assert stale != truth
        app.extensions["cache"].l2.client.set(users.item_keys("1")[0], stale, ex=60)
        before = _count("api_consistency_inconsistent_total", level="l2", host=monitor.L2_HOST)
        relay_monitor.check(users, "1")
    assert _count("api_consistency_inconsistent_total", level="l2", host=monitor.L2_HOST) >= before + 1


def test_an_answer_newer_than_the_database_read_is_skipped_not_counted(app, users, relay_monitor, monkeypatch):
    """A write lands after the monitor read PostgreSQL and before it read L2:
    L2 then rightly holds something else than what was read. Step 4 sees the
    newer change (the relay handed it over) and does not count it."""
    _settled(app)
    original = relay_monitor._l2_answer

    def a_write_lands_first(resource, item_id, body):
        db.write_one("UPDATE users SET name = 'Newer' WHERE id = 1")
        wait_applied(app)
        newer = resource.load(item_id)
        app.extensions["cache"].l2.client.set(resource.item_keys(item_id)[0], newer, ex=60)  # as a refill would
        return original(resource, item_id, body)

    monkeypatch.setattr(relay_monitor, "_l2_answer", a_write_lands_first)
    bad = _count("api_consistency_inconsistent_total", level="l2", host=monitor.L2_HOST)
    skipped = _count("api_consistency_skipped_total", level="l2")
    with app.app_context():
        relay_monitor.check(users, "1")
    assert _count("api_consistency_skipped_total", level="l2") >= skipped + 1
    assert _count("api_consistency_inconsistent_total", level="l2", host=monitor.L2_HOST) == bad


class _HeldL1(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """An nginx's peek, stood in for (tests/stack peeks the real one): it
    holds ``body`` fresh, as an L1 that missed the change's refresh would."""

    daemon_threads = True

    def __init__(self, path, body):
        class Peek(BaseHTTPRequestHandler):
            def do_GET(self):
                assert self.path == monitor.PEEK_URI
                self.send_response(200)
                self.send_header("X-Cache-Status", "HIT")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def address_string(self):
                return "l1"

            def log_message(self, *args):
                pass

        super().__init__(path, Peek)


def test_an_l1_cut_off_at_the_check_is_peeked_again_and_reported_once_back(app, users, relay_monitor, tmp_path,
                                                                           monkeypatch):
    """A host cut off from the relay misses the change's refresh and the
    monitor's first peek; back while the entry it kept is still fresh, the
    monitor's next peek finds it, on that host."""
    _settled(app)
    # No other key's check pending: the first peek that fails after the write is this key's.
    eventually(lambda: relay_monitor._pending, lambda pending: not pending, seconds=UNPROMISED_WAIT, step=0.05)
    path = tmp_path / "l1.sock"
    host = f"unix:{path}"
    monkeypatch.setattr(relay_monitor, "_l1_targets", lambda: [host])
    with app.app_context():
        held = (users.load("2") + "\n").encode()
    before = _count("api_consistency_inconsistent_total", level="l1", host=host)
    time.sleep(1 / app.config["CONSISTENCY_CHECKS_PER_S"] + 0.05)  # a token for this change
    with app.app_context():
        db.write_one("UPDATE users SET name = 'Cut off' WHERE id = 2")
    written = time.monotonic()
    # The first check: it finds nobody at the host's address.
    eventually(lambda: _count("api_consistency_unreachable_total", host=host), bool, seconds=UNPROMISED_WAIT,
               step=0.01)
    back = time.monotonic() - written
    server = _HeldL1(str(path), held)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        eventually(lambda: _count("api_consistency_inconsistent_total", level="l1", host=host),
                   lambda bad: bad > before, seconds=UNPROMISED_WAIT, step=0.05)
    finally:
        server.shutdown()
        server.server_close()
    # Back before the entry it kept could have expired: the retries' deadline.
    assert back < monitor.L1_FRESH_FOR
