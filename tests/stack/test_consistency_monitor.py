"""The relay's consistency monitor (cache/monitor.py) on the running stack:
each level made inconsistent on purpose is reported with its level and host,
and a healthy stack under mixed load reports none.

Detection: a sampled change is checked monitor.CHECK_AFTER after the relay
saw it. Each drill keeps the wrong answer in place for longer than that
(L1: an entry stays fresh l1.FRESH_SECONDS from its fill; L2: the stale
value stays until its TTL), so the first check finds it; the test asserts
the monitor's own figure of how far past the bound it was, which the drill's
constants bound, and waits for the report no longer than UNPROMISED_WAIT.
"""

import subprocess
import threading
import time
import uuid

import psycopg2
import redis

from cache import l1, monitor
from cache.l2 import CAUGHT_UP
from tests.stack.test_metrics import scrape, value
from infra import settings
from tests.support.bounds import L1_BOUND, UNPROMISED_WAIT
from tests.support.reporting import report
from tests.support.stack import setting
from tests.support.waiting import eventually

LEVEL_HOST_L1 = "unix:{}/nginx/refresh.sock"


def _l1_host():
    return LEVEL_HOST_L1.format(setting("STACK_DIR"))


def _counts(level, host):
    samples = scrape("RELAY")
    return (value(samples, "api_consistency_checks_total", level=level, host=host),
            value(samples, "api_consistency_inconsistent_total", level=level, host=host))


def _cache():
    return redis.Redis.from_url(setting("REDIS_URL"))


def _write_as_psql(user_id, name):
    """A change no request made: only the relay applies it."""
    conn = psycopg2.connect(setting("DATABASE_URL"))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("UPDATE users SET name = %s WHERE id = %s", (name, user_id))
    conn.close()


def _reported(level, host, before):
    """Waits for one more inconsistency of ``level`` on ``host``; returns the
    seconds it took and what /health then says."""
    started = time.monotonic()
    eventually(lambda: _counts(level, host)[1], lambda bad: bad > before, seconds=UNPROMISED_WAIT, step=0.1)
    return time.monotonic() - started


def _sampled_next():
    """Until the monitor's token bucket holds a token for the drill's change:
    the monitor checks a sample, and the test's own POST or a previous test's
    writes may have just taken the tokens. One token comes back each 1/rate s."""
    time.sleep(1 / settings.app_settings()["CONSISTENCY_CHECKS_PER_S"] + 0.05)


def _recovered():
    """After Redis returns: the relay has caught up, every app process reads
    L2 again (CACHE_RETRY_AFTER), and every L1 entry filled meanwhile (with no
    :l1 mark, so never refreshed after a change) has expired. Until then the
    item bound is not promised, and the monitor rightly reports what breaks it."""
    eventually(lambda: _cache().exists(CAUGHT_UP), seconds=UNPROMISED_WAIT, step=0.05)
    time.sleep(settings.app_settings()["CACHE_RETRY_AFTER"] + L1_BOUND)


def _health(send):
    return send("GET", "/health").json()["consistency"]


def test_an_l1_whose_refresh_was_dropped_is_reported_on_that_host(send, new_user):
    host = _l1_host()
    _, before = _counts("l1", host)
    assert send("GET", f"/users/{new_user}", headers={"Cache-Control": "no-cache"}).status == 200
    # The relay refreshes only what the :l1 mark says L1 holds: without it
    # (Redis evicted it, say), this change's refresh is never sent.
    _cache().delete(f"v1:users:item:{new_user}:l1")
    _sampled_next()
    _write_as_psql(new_user, "Refresh dropped")
    took = _reported("l1", host, before)
    seen = _health(send)
    assert seen["state"] == "inconsistent"
    last = seen["last_inconsistency"]
    assert (last["level"], last["host"], last["resource"], last["key"]) == ("l1", host, "users", str(new_user))
    # Found while the stale entry was still fresh: no later than its freshness allows.
    assert 0 <= last["past_bound_s"] <= l1.FRESH_SECONDS + 1 - monitor.L1_BOUND
    report("consistency monitor, L1 refresh dropped", f"reported {took:.2f} s after the write, "
           f"{last['past_bound_s']:.2f} s past the {monitor.L1_BOUND:.1f} s bound")


def test_an_l2_value_stored_past_the_version_fence_is_reported(send, new_user):
    _, before = _counts("l2", monitor.L2_HOST)
    old = send("GET", f"/users/{new_user}")
    assert old.status == 200
    key = f"v1:users:item:{new_user}"
    cache = _cache()
    _sampled_next()
    version = cache.get(f"{key}:ver")
    _write_as_psql(new_user, "Fence bypassed")
    # The relay's invalidation (a new version token), then its L1 refresh's
    # refill of L2 with the new row: a stale value set before that refill
    # would be overwritten by it, and nothing would be left to report.
    eventually(lambda: cache.get(f"{key}:ver"), lambda now: now != version, seconds=UNPROMISED_WAIT, step=0.01)
    eventually(lambda: cache.get(key), lambda held: held and b"Fence bypassed" in held,
               seconds=UNPROMISED_WAIT, step=0.01)
    # What a refill that read the row before the change would store with the fence turned off.
    cache.set(key, old.body.decode().rstrip("\n"), ex=60)
    took = _reported("l2", monitor.L2_HOST, before)
    # The relay's second refresh (AGAIN_AFTER later) may carry the stale value into L1 too: the last one reported.
    last = _health(send)["last_inconsistency"]
    assert last["key"] == str(new_user) and last["past_bound_s"] >= 0
    assert send("GET", f"/users/{new_user}", headers={"Cache-Control": "no-cache"}).json()["name"] == old.json()["name"]
    cache.delete(key)
    report("consistency monitor, L2 fence bypassed", f"reported {took:.2f} s after the write, "
           f"{last['past_bound_s']:.2f} s past the {monitor.L2_BOUND:.1f} s bound")


def test_a_change_the_relay_cannot_apply_is_reported_on_the_l1_that_kept_its_entry(send, new_user):
    """The relay stops applying (its Redis is gone: changes wait in
    cache_changes), a change is made, and the L1 keeps its entry."""
    host = _l1_host()
    _, before = _counts("l1", host)
    stack = ["scripts/stack.sh"]
    subprocess.run([*stack, "stop", "redis"], check=True, capture_output=True)
    try:
        _sampled_next()
        assert send("GET", f"/users/{new_user}", headers={"Cache-Control": "no-cache"}).status == 200
        _write_as_psql(new_user, "Relay cannot apply")
        took = _reported("l1", host, before)
        last = _health(send)["last_inconsistency"]
        assert (last["level"], last["host"], last["key"]) == ("l1", host, str(new_user))
        assert 0 <= last["past_bound_s"] <= l1.FRESH_SECONDS + 1 - monitor.L1_BOUND
    finally:
        subprocess.run([*stack, "start", "redis"], check=True, capture_output=True)
        _recovered()
    report("consistency monitor, relay cannot apply", f"reported {took:.2f} s after the write")


def test_a_healthy_stack_under_mixed_load_reports_no_inconsistency(send, nginx):
    """A soak: writers (the API and psql) and readers on SOAK_USERS users for SOAK_SECONDS."""
    users = []
    for _ in range(SOAK_USERS):
        tag = uuid.uuid4().hex[:10]
        users.append(send("POST", "/users", {"name": f"Soak {tag}", "email": f"soak-{tag}@example.com"}).json()["id"])
    l1_host = _l1_host()
    time.sleep(monitor.CHECK_AFTER + 1)  # the checks of earlier tests' changes are done
    before = {level: _counts(level, host) for level, host in (("l1", l1_host), ("l2", monitor.L2_HOST))}
    stop = threading.Event()
    failures = []

    def write_through_the_api():
        i = 0
        while not stop.is_set():
            i += 1
            reply = send("PUT", f"/users/{users[i % len(users)]}", {"name": f"Soak api {i}"})
            if reply.status != 200:
                failures.append(reply)
            stop.wait(0.05)

    def write_as_psql():
        i = 0
        while not stop.is_set():
            i += 1
            _write_as_psql(users[(i * 3) % len(users)], f"Soak psql {i}")
            stop.wait(0.05)

    def read():
        i = 0
        while not stop.is_set():
            i += 1
            send("GET", f"/users/{users[i % len(users)]}")

    threads = [threading.Thread(target=write_through_the_api), threading.Thread(target=write_as_psql)]
    threads += [threading.Thread(target=read) for _ in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(SOAK_SECONDS)
    stop.set()
    for thread in threads:
        thread.join()
    time.sleep(monitor.CHECK_AFTER + 1)  # the last sampled changes are checked too
    after = {level: _counts(level, host) for level, host in (("l1", l1_host), ("l2", monitor.L2_HOST))}
    checks = {level: after[level][0] - before[level][0] for level in after}
    bad = {level: after[level][1] - before[level][1] for level in after}
    report("consistency monitor soak", f"{SOAK_SECONDS} s of mixed load: checks {checks}, inconsistent {bad}")
    assert not failures
    assert bad == {"l1": 0, "l2": 0}
    assert checks["l1"] > 0 and checks["l2"] > 0


SOAK_SECONDS = 30
# Enough that a key rarely changes again within a check's wait (such a check is skipped).
SOAK_USERS = 40
