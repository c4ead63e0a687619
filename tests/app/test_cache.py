"""L2: cache-aside in Redis, invalidated after every write, and never a reason to fail."""

import os
import socket
import struct
import threading
import time

import psycopg2
import redis

from blueprints import users
from tests.app.conftest import wait_applied, wait_caught_up
from tests.support.bounds import L2_BOUND, UNPROMISED_WAIT
from tests.support.servers import SilentRedis
from tests.support.waiting import eventually


def l2(response):
    return response.headers["X-Cache-L2"]


def test_item_is_cached_and_invalidated_by_update_and_delete(app, client):
    assert l2(client.get("/users/2")) == "MISS"
    assert l2(client.get("/users/2")) == "HIT"

    client.put("/users/2", json={"name": "Robert"})
    after_update = client.get("/users/2")
    assert (l2(after_update), after_update.get_json()["name"]) == ("MISS", "Robert")  # the writer's own invalidation
    wait_applied(app)  # the relay's second application may retire the value just stored
    client.get("/users/2")
    assert l2(client.get("/users/2")) == "HIT"

    client.delete("/users/2")
    assert client.get("/users/2").status_code == 404


def test_lists_are_cached_per_query_and_retired_by_every_write(client):
    assert l2(client.get("/users")) == "MISS"
    assert l2(client.get("/users")) == "HIT"
    assert l2(client.get("/users?page_size=2")) == "MISS"

    created = client.post("/users", json={"name": "Dana", "email": "dana@example.com"}).get_json()
    listed = client.get("/users")
    assert l2(listed) == "MISS"
    assert "Dana" in [u["name"] for u in listed.get_json()]

    client.put(f"/users/{created['id']}", json={"name": "Dana B."})
    assert "Dana B." in [u["name"] for u in client.get("/users").get_json()]

    client.delete(f"/users/{created['id']}")
    assert created["id"] not in [u["id"] for u in client.get("/users").get_json()]
    assert l2(client.get("/users?page_size=2")) == "MISS"


def test_values_over_the_size_limit_are_served_but_never_stored(make_app, test_redis_url):
    """Before, long-named users made 250 kB list pages, and a flood of them
    crowded everything else out of L2."""
    client = make_app(CACHE_MAX_VALUE_BYTES=200).test_client()
    big = client.post("/users", json={"name": "é" * 100, "email": "e" * 60 + "@example.com"}).get_json()
    small, large = client.get("/users/1"), client.get(f"/users/{big['id']}")
    assert len(small.get_data()) < 200 < len(large.get_data())
    assert (l2(small), l2(client.get("/users/1"))) == ("MISS", "HIT")
    assert [l2(large)] + [l2(client.get(f"/users/{big['id']}"))] == ["MISS", "MISS"]
    assert [l2(client.get("/users")) for _ in range(2)] == ["MISS", "MISS"]
    assert not redis.Redis.from_url(test_redis_url).exists(f"v1:users:item:{big['id']}")


def test_each_generation_stores_a_bounded_number_of_lists(make_app):
    """Before, any number of cursor and page_size combinations were stored:
    ~1,400 of them filled the cache Redis. Past the limit, a list is served
    from PostgreSQL until a change starts a new generation."""
    app = make_app(CACHE_MAX_LISTS=3)
    client = app.test_client()
    queries = [f"/users?page_size={n}" for n in range(1, 6)]
    assert [l2(client.get(q)) for q in queries] == ["MISS"] * 5
    assert [l2(client.get(q)) for q in queries] == ["HIT"] * 3 + ["MISS"] * 2

    client.post("/users", json={"name": "Dana", "email": "dana@example.com"})
    wait_applied(app)
    assert [l2(client.get(q)) for q in queries[3:]] == ["MISS"] * 2
    assert [l2(client.get(q)) for q in queries[3:]] == ["HIT"] * 2


def test_a_missing_user_is_not_cached(client):
    assert client.get("/users/4").status_code == 404
    client.post("/users", json={"name": "Dana", "email": "dana@example.com"})
    assert client.get("/users/4").get_json()["name"] == "Dana"


def test_cache_entries_expire_after_the_ttl(make_app):
    client = make_app(CACHE_TTL=1).test_client()
    assert l2(client.get("/users/1")) == "MISS"
    assert l2(client.get("/users/1")) == "HIT"
    time.sleep(1.2)
    assert l2(client.get("/users/1")) == "MISS"


def test_a_reader_that_loaded_before_a_write_does_not_store_the_old_row(app, client, monkeypatch):
    """The refill race, forced: the read loads Alice, the write commits, then the read stores."""
    loaded, release = threading.Event(), threading.Event()
    real_load = users.USERS.load

    def load_then_wait(user_id):
        body = real_load(user_id)
        loaded.set()
        assert release.wait(UNPROMISED_WAIT)
        return body

    monkeypatch.setattr(users.USERS, "load", load_then_wait)
    answers = []
    reader = threading.Thread(target=lambda: answers.append(app.test_client().get("/users/1")))
    reader.start()
    assert loaded.wait(UNPROMISED_WAIT)
    monkeypatch.setattr(users.USERS, "load", real_load)

    assert client.put("/users/1", json={"name": "Alicia"}).status_code == 200
    release.set()
    reader.join(UNPROMISED_WAIT)

    assert answers[0].get_json()["name"] == "Alice"  # it answered with what it read...
    fresh = client.get("/users/1")  # ...but did not leave it in the cache
    assert fresh.get_json()["name"] == "Alicia"
    assert client.get("/users/1").get_json()["name"] == "Alicia"


def test_a_list_loaded_before_a_write_is_not_served_after_it(app, client, monkeypatch):
    loaded, release = threading.Event(), threading.Event()
    real_load = users._load_page

    def load_then_wait(args):
        packed = real_load(args)
        loaded.set()
        assert release.wait(UNPROMISED_WAIT)
        return packed

    monkeypatch.setattr(users, "_load_page", load_then_wait)
    reader = threading.Thread(target=lambda: app.test_client().get("/users"))
    reader.start()
    assert loaded.wait(UNPROMISED_WAIT)
    monkeypatch.setattr(users, "_load_page", real_load)

    client.post("/users", json={"name": "Dana", "email": "dana@example.com"})
    release.set()
    reader.join(UNPROMISED_WAIT)
    assert "Dana" in [u["name"] for u in client.get("/users").get_json()]


def test_redis_stopped_mid_test_means_slower_not_broken(make_app, redis_server, relay_for):
    app = make_app(REDIS_URL=redis_server.url)
    relay_for(app)
    wait_caught_up(redis_server.url)
    client = app.test_client()
    assert l2(client.get("/users/1")) == "MISS"
    assert l2(client.get("/users/1")) == "HIT"

    redis_server.stop()
    read = client.get("/users/1")
    assert (read.status_code, l2(read)) == (200, "DOWN")
    assert client.get("/users").status_code == 200
    created = client.post("/users", json={"name": "Dana", "email": "dana@example.com"})
    assert created.status_code == 201
    user_id = created.get_json()["id"]
    assert client.put(f"/users/{user_id}", json={"name": "Dana B."}).status_code == 200
    assert client.get(f"/users/{user_id}").get_json()["name"] == "Dana B."
    health = client.get("/health")
    assert health.status_code == 200 and health.get_json()["cache"] == "down"

    redis_server.start()  # empty, and L2 unused until the relay has caught up with it
    eventually(lambda: client.get("/users/1"), lambda r: l2(r) == "MISS", seconds=UNPROMISED_WAIT)
    assert l2(client.get("/users/1")) == "HIT"
    assert client.get("/health").get_json()["cache"] == "ok"


def test_a_write_whose_invalidation_redis_missed_is_applied_by_the_relay(make_app, redis_server, redis_link, relay_for):
    """The writer cut off from Redis (a partition: Redis keeps the old entry),
    then gone before it could try again: the change still reaches L2."""
    relay_for(make_app(REDIS_URL=redis_server.url))
    wait_caught_up(redis_server.url)
    client = make_app(REDIS_URL=redis_link.url).test_client()
    client.get("/users/1")
    assert l2(client.get("/users/1")) == "HIT"

    redis_link.cut()
    assert client.put("/users/1", json={"name": "Alice Cut Off"}).status_code == 200
    written = time.monotonic()
    redis_link.mend()
    # A new process (the writer was killed): it has no memory of the write.
    other = make_app(REDIS_URL=redis_link.url).test_client()

    def read():
        started = time.monotonic()
        response = other.get("/users/1")
        # The old name is allowed only within L2's bound of the write.
        assert response.get_json()["name"] == "Alice Cut Off" or started - written < L2_BOUND, l2(response)
        return response

    hit = eventually(read, lambda r: l2(r) == "HIT" and r.get_json()["name"] == "Alice Cut Off",
                     seconds=UNPROMISED_WAIT).value
    assert redis.Redis.from_url(redis_server.url).get("v1:users:item:1").decode() == hit.get_data(as_text=True).strip()


def test_a_relay_cut_off_from_redis_makes_l2_unused_within_a_second(make_app, redis_server, redis_link, relay_for):
    """Nothing applies the changes while the relay is cut off: L2 must not be read."""
    relay_for(make_app(REDIS_URL=redis_link.url))
    wait_caught_up(redis_server.url)
    client = make_app(REDIS_URL=redis_server.url).test_client()
    client.get("/users/1")
    assert l2(client.get("/users/1")) == "HIT"

    redis_link.cut()
    cut = time.monotonic()
    write_with_psql("UPDATE users SET name = 'Alice by psql' WHERE id = 1")
    unused = eventually(lambda: client.get("/users/1"), lambda r: l2(r) == "DOWN", seconds=UNPROMISED_WAIT, since=cut)
    assert unused.unmet_for <= L2_BOUND
    assert unused.value.get_json()["name"] == "Alice by psql"

    redis_link.mend()
    read = eventually(lambda: client.get("/users/1"), lambda r: l2(r) != "DOWN", seconds=UNPROMISED_WAIT).value
    assert (l2(read), read.get_json()["name"]) == ("MISS", "Alice by psql")


def write_with_psql(sql):
    """A write that bypasses the API, on a connection of its own (as psql would)."""
    conn = psycopg2.connect(os.environ["TEST_DATABASE_URL"])
    with conn, conn.cursor() as cur:
        cur.execute(sql)
    conn.close()


def test_a_write_from_psql_reaches_l2_within_a_second(client):
    def within_l2_bound(read, until):
        """``until`` holds of every read begun later than L2's bound after the write."""
        assert eventually(read, until, seconds=UNPROMISED_WAIT).unmet_for <= L2_BOUND

    client.get("/users/2")
    assert l2(client.get("/users/2")) == "HIT"
    write_with_psql("UPDATE users SET name = 'Robert by psql' WHERE id = 2")
    within_l2_bound(lambda: client.get("/users/2"), lambda r: r.get_json()["name"] == "Robert by psql")
    client.get("/users")
    write_with_psql("DELETE FROM users WHERE id = 3")
    within_l2_bound(lambda: client.get("/users"), lambda r: 3 not in [u["id"] for u in r.get_json()])
    write_with_psql("TRUNCATE users CASCADE")
    within_l2_bound(lambda: client.get("/users/2"), lambda r: r.status_code == 404)


def test_changes_wait_for_a_stopped_relay_and_l2_is_unused_meanwhile(client, session_relay, test_redis_url):
    client.get("/users/1")
    session_relay.stop()
    write_with_psql("UPDATE users SET name = 'Alice later' WHERE id = 1")
    read = eventually(lambda: client.get("/users/1"), lambda r: l2(r) == "DOWN", seconds=UNPROMISED_WAIT).value
    assert read.get_json()["name"] == "Alice later"
    with psycopg2.connect(os.environ["TEST_DATABASE_URL"]) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM cache_changes WHERE table_name = 'users' AND row_key = '1'")
        assert cur.fetchone()[0] >= 1  # kept for the relay
    session_relay.start()
    wait_caught_up(test_redis_url)
    read = client.get("/users/1")
    assert (l2(read), read.get_json()["name"]) == ("MISS", "Alice later")


def test_a_redis_that_never_answers_costs_one_short_timeout(make_app):
    """The read waits out CACHE_TIMEOUT once, gives that connection up, and
    the next reads skip Redis for CACHE_RETRY_AFTER (here, longer than the test)."""
    silent = SilentRedis()
    try:
        client = make_app(REDIS_URL=silent.url, CACHE_TIMEOUT=0.2, CACHE_RETRY_AFTER=UNPROMISED_WAIT).test_client()
        started = time.monotonic()
        first = client.get("/users/1")
        waited = time.monotonic() - started
        assert (first.status_code, l2(first)) == (200, "DOWN")
        assert 0.2 <= waited < UNPROMISED_WAIT, waited  # the timeout held, as the kernel's (see below)
        tried = eventually(lambda: list(silent.connections), lambda seen: seen and all(c["given_up"] for c in seen),
                           seconds=UNPROMISED_WAIT).value
        assert len(tried) == 1 and tried[0]["bytes"] > 0, tried
        assert [l2(client.get("/users/1")) for _ in range(5)] == ["DOWN"] * 5
        assert silent.connections == tried, "a read within CACHE_RETRY_AFTER went to Redis"
    finally:
        silent.close()


def test_the_cache_waits_for_redis_in_the_kernel_with_the_configured_timeout(make_app):
    """Its sockets block, with SO_RCVTIMEO and SO_SNDTIMEO set to
    CACHE_TIMEOUT (cache/l2.py: no poll before each send and receive), on
    the first connection and on a reconnect of the same client."""
    app = make_app(CACHE_TIMEOUT=0.35)
    cache = app.extensions["cache"].l2

    def timeouts(sock):
        """Python's timeout, and the kernel's two (rounded up to its clock's tick)."""
        limits = [struct.unpack("ll", sock.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("ll")))
                  for option in (socket.SO_RCVTIMEO, socket.SO_SNDTIMEO)]
        return sock.gettimeout(), [seconds + micros / 1e6 for seconds, micros in limits]

    connection = cache.client.connection
    for reconnected in (False, True):
        if reconnected:
            connection.disconnect()
            assert cache.client.execute_command("PING")
        python, kernel = timeouts(connection._sock)
        assert python is None and all(0.35 <= limit < 0.36 for limit in kernel), (python, kernel)


def test_a_redis_that_forgot_the_scripts_is_taught_them_again(app, client, test_redis_url, session_relay):
    """Scripts run by their SHA (cache/l2.py), which a restarted or
    promoted Redis does not know: the cache sends their text then."""
    client.get("/users/1")
    redis.Redis.from_url(test_redis_url).script_flush()
    assert l2(client.get("/users/1")) == "HIT"  # the lookup's script
    client.put("/users/1", json={"name": "Alice again"})  # the invalidation's
    wait_applied(app)  # else the relay's second application may retire the value read below
    redis.Redis.from_url(test_redis_url).script_flush()
    assert (l2(read := client.get("/users/1")), read.get_json()["name"]) == ("MISS", "Alice again")  # the store's
    assert l2(client.get("/users/1")) == "HIT"


def test_writes_invalidate_with_no_key_scans(client, test_redis_url):
    """Invalidation touches known keys only: no KEYS or SCAN on a request path."""

    def calls():
        stats = redis.Redis.from_url(test_redis_url).info("commandstats")
        count = {name: stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("keys", "scan", "incr", "incrby")}
        count["incr"] += count.pop("incrby")  # Redis reports some INCRs as INCRBY
        return count

    before = calls()
    client.get("/users")
    client.get("/users/1")
    client.put("/users/1", json={"name": "Alicia"})
    client.delete("/users/2")
    after = calls()
    assert after["incr"] >= before["incr"] + 2  # the writer's own, and the relay's again
    assert (after["keys"], after["scan"]) == (before["keys"], before["scan"])


def test_entries_carry_the_configured_ttl(app, client, test_redis_url):
    stored = time.monotonic()
    client.get("/users/1")
    client.get("/users")
    r = redis.Redis.from_url(test_redis_url)
    ttls = [r.ttl("v1:users:item:1")] + [r.ttl(key) for key in r.keys("v1:users:list:*")]
    # Counted down, in whole seconds, from CACHE_TTL when they were stored.
    lowest = app.config["CACHE_TTL"] - (time.monotonic() - stored) - 1
    assert len(ttls) > 1 and all(lowest <= ttl <= app.config["CACHE_TTL"] for ttl in ttls), ttls


def test_cache_enabled_false_serves_everything_from_postgresql(make_app, test_redis_url):
    client = make_app(CACHE_ENABLED=False).test_client()
    assert [l2(client.get("/users/1")) for _ in range(2)] == ["OFF", "OFF"]
    client.put("/users/1", json={"name": "Alicia"})
    assert client.get("/users/1").get_json()["name"] == "Alicia"
    stored = redis.Redis.from_url(test_redis_url).keys("v1:users:*")
    assert [key for key in stored if not key.endswith(b":ver") and b":gen" not in key] == []  # the relay's own
