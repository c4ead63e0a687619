"""The cache Redis fails over (Sentinel): what its primary acknowledged but
its replica never received is lost, and the cache must not serve what that
loss brings back (cache/l2.py: replicas confirm, epochs)."""

import signal
import tempfile
from concurrent.futures import ThreadPoolExecutor
import time

import pytest
import redis

from cache.l2 import CAUGHT_UP, EPOCH
from infra import db

from tests.app.test_cache import l2, write_with_psql
from tests.app.test_orders import start_worker, wait_processed
from tests.support.accounts import new_account, place
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


@pytest.fixture
def stop_after():
    """``stop_after(process)``: terminated when the test ends."""
    processes = []
    yield processes.append
    for process in processes:
        process.terminate()
        process.wait(UNPROMISED_WAIT)


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


def test_after_a_failover_every_thread_connects_anew_once_one_has_failed(make_app, sentinel_group, relay_for):
    """Each thread keeps its own connection: the first failure of one must
    not leave the others to fail, one by one, each pausing the process's reads."""
    app = make_app(REDIS_URL=sentinel_group.url, CACHE_RETRY_AFTER=0.2)
    relay_for(make_app(REDIS_URL=sentinel_group.url))  # its own failures must not renew this app's connections
    threads = [ThreadPoolExecutor(max_workers=1) for _ in range(2)]
    client = app.test_client()

    def read_in(thread):
        return l2(threads[thread].submit(client.get, USER).result())

    eventually(lambda: read_in(0), lambda status: status != "DOWN", seconds=UNPROMISED_WAIT)
    assert read_in(1) != "DOWN"  # both threads connected to the primary
    primary = sentinel_group.primary()
    sentinel_group.signal(primary, signal.SIGKILL)
    sentinel_group.wait_failover(primary)
    new_primary = sentinel_group.client(sentinel_group.primary())
    assert read_in(0) == "DOWN"  # its connection was to the old primary
    eventually(lambda: new_primary.exists(CAUGHT_UP), seconds=UNPROMISED_WAIT)
    time.sleep(0.2)  # the pause after thread 0's failure
    assert read_in(1) != "DOWN"
    for thread in threads:
        thread.shutdown()


def test_a_write_on_a_connection_the_failover_closed_still_invalidates_at_once(make_app, sentinel_group, relay_for):
    """Two processes of the app: the writer's still holds a connection to the
    old primary, the reader's already reads the new one. The writer's own
    invalidation must reach the new primary, or the reader may serve the old
    row after the write was acknowledged."""
    relay_for(make_app(REDIS_URL=sentinel_group.url))
    writer, reader = (make_app(REDIS_URL=sentinel_group.url).test_client() for _ in range(2))
    eventually(lambda: writer.get(USER), lambda r: l2(r) != "DOWN", seconds=UNPROMISED_WAIT)
    primary = sentinel_group.primary()
    sentinel_group.signal(primary, signal.SIGKILL)
    sentinel_group.wait_failover(primary)
    eventually(lambda: reader.get(USER), lambda r: l2(r) == "HIT", seconds=UNPROMISED_WAIT)
    assert writer.put(USER, json={"name": "Alice written"}).status_code == 200
    assert name_of(reader.get(USER)) == "Alice written"


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


def test_the_queue_and_the_limits_follow_a_failover_of_the_state_redis(make_app, sentinel_group, test_database_url,
                                                                       test_redis_url, tmp_path, stop_after):
    """Celery's broker and the rate limiter over Sentinel: an order queued
    before the primary dies is processed after, and so is one placed after."""
    app = make_app(QUEUE_REDIS_URL=sentinel_group.url, RATE_LIMIT_STORAGE_URL=sentinel_group.url)
    client = app.test_client()
    account = new_account(app)
    worker = start_worker(test_database_url, test_redis_url, tmp_path, state_redis_url=sentinel_group.url)
    stop_after(worker)
    first = place(client, account)
    assert "X-RateLimit-Remaining" in first.headers  # counted in the state Redis
    wait_processed(client, account, first.get_json()["id"])

    worker.terminate()
    worker.wait(UNPROMISED_WAIT)
    queued = place(client, account).get_json()["id"]
    primary = sentinel_group.primary()
    eventually(lambda: sentinel_group.client(sentinel_group.replica()).llen("orders"), seconds=UNPROMISED_WAIT)
    sentinel_group.signal(primary, signal.SIGKILL)
    sentinel_group.wait_failover(primary)

    after = eventually(lambda: place(client, account), lambda r: r.status_code == 201, seconds=UNPROMISED_WAIT).value
    assert "X-RateLimit-Remaining" in after.headers
    stop_after(start_worker(test_database_url, test_redis_url, tmp_path, state_redis_url=sentinel_group.url))
    for order_id in (queued, after.get_json()["id"]):
        wait_processed(client, account, order_id)
