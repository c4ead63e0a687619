"""The cache Redis fails over (Sentinel): what its primary acknowledged but
its replica never received is lost, and the cache must not serve what that
loss brings back (cache/l2.py: replicas confirm, epochs)."""

import signal
import tempfile
import time

import pytest
import redis

from cache.l2 import CAUGHT_UP, EPOCH
from infra import db

from tests.app.test_cache import l2, write_with_psql
from tests.support.bounds import L2_BOUND, UNPROMISED_WAIT
from tests.support.servers import SentinelGroup
from tests.support.waiting import eventually

USER = "/users/1"


@pytest.fixture
def sentinel_group():
    with tempfile.TemporaryDirectory(prefix="sentinel-") as directory:
        group = SentinelGroup(directory)
        yield group
        group.stop()


def name_of(response):
    return response.get_json()["name"]


def relay_forgets_within(app, seconds):
    """Whether cache_changes empties within ``seconds``: a relay that forgets
    a change the replica lacks does so at once; one that waits for the
    replica never does while it is stalled."""
    deadline = time.monotonic() + seconds
    with app.app_context():
        while time.monotonic() < deadline:
            if db.fetch_one("SELECT count(*) AS n FROM cache_changes")["n"] == 0:
                return True
            time.sleep(0.02)
    return False


def test_an_invalidation_the_replica_missed_is_not_undone_by_a_failover(make_app, sentinel_group, relay_for):
    """Replication stalls, the primary takes a change's invalidation, then
    dies: the replica becomes primary without it. Neither the item nor the
    list cached before the change may be served after L2's bound."""
    app = make_app(REDIS_URL=sentinel_group.url, CACHE_REPLICA_WAIT_MS=100)
    relay_for(app)
    client = app.test_client()
    eventually(lambda: client.get(USER), lambda r: l2(r) == "MISS", seconds=UNPROMISED_WAIT)
    assert l2(client.get(USER)) == "HIT"
    client.get("/users")
    assert l2(client.get("/users")) == "HIT"
    primary, replica = sentinel_group.primary(), sentinel_group.replica()
    eventually(lambda: sentinel_group.client(replica).exists("v1:users:item:1"), seconds=UNPROMISED_WAIT)

    sentinel_group.stall_replication()
    write_with_psql("UPDATE users SET name = 'Alice after' WHERE id = 1")
    written = time.monotonic()
    # The primary acknowledges the invalidation (the relay's: psql has no app).
    eventually(lambda: not sentinel_group.client(primary).exists("v1:users:item:1"), seconds=UNPROMISED_WAIT)
    forgotten = relay_forgets_within(app, seconds=2)
    sentinel_group.signal(primary, signal.SIGKILL)
    sentinel_group.wait_failover(primary)
    failed_over = time.monotonic()

    def read(path):
        started = time.monotonic()
        response = client.get(path)
        assert response.status_code == 200
        names = [response.get_json()["name"]] if path == USER else [u["name"] for u in response.get_json()]
        assert "Alice after" in names or started - written < L2_BOUND, (path, l2(response), names)
        return response

    for path in (USER, "/users"):
        eventually(lambda: read(path), lambda r: l2(r) == "HIT", seconds=UNPROMISED_WAIT)
    print(f"\nfailover: the relay had {'forgotten' if forgotten else 'kept'} the change; "
          f"L2 answered again {time.monotonic() - failed_over:.1f} s after the new primary took over")


def test_a_redis_holding_another_epochs_data_is_flushed_before_it_is_read(make_app, redis_server, relay_for):
    """A Redis restarted from an older snapshot, or another server's: the run
    id differs from the one its data recorded, so none of it is served."""
    app = make_app(REDIS_URL=redis_server.url)
    relay_for(app)
    client = app.test_client()
    eventually(lambda: client.get(USER), lambda r: l2(r) == "MISS", seconds=UNPROMISED_WAIT)
    cache = redis.Redis.from_url(redis_server.url)
    stale = b'{"id": 1, "name": "Alice from the past"}'
    with cache.pipeline() as pipe:  # at once, as a restart loads a snapshot, its last mark expired
        pipe.set(EPOCH, b"0123abcd:" + cache.get(EPOCH).partition(b":")[2])
        pipe.set("v1:users:item:1", stale)
        pipe.delete(CAUGHT_UP)
        pipe.execute()
    assert name_of(eventually(lambda: client.get(USER), lambda r: l2(r) != "DOWN", seconds=UNPROMISED_WAIT).value) == "Alice"
    assert cache.get("v1:users:item:1") != stale
