"""The consistency monitor's verdict (cache/monitor.py, ``check``) on real
PostgreSQL and Redis, with the session's relay handing it every change:
a stale L2 answer is counted, and one that differs only because a newer
write landed between the database read and the cache read is skipped."""

import time

import pytest
from prometheus_client import REGISTRY

from cache import monitor
from infra import db
from tests.app.conftest import wait_applied


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
