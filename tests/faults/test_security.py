"""Security on the whole stack: rate limits shared by every gunicorn worker and
keyed on the address nginx saw, and passwords that never reach a log.

Each test is a client of its own address: a limit it reaches is its own, and
no other test's traffic counts toward it."""

import json
import re
import threading
import time
import uuid

import pytest

from tests.support import ROOT
from tests.support.bounds import L1_ITEM_BOUND, UNPROMISED_WAIT
from tests.support.http import FRESH, Client
from tests.support.stack import setting
from tests.support.waiting import Pace, eventually

LOGS = ("app/app.log", "worker/worker.log", "nginx/access.log", "nginx/error.log")


def test_passwords_are_never_logged_nor_returned(stack, figures):
    password = f"never-log-{uuid.uuid4().hex}"
    email = f"secret-{uuid.uuid4().hex[:8]}@example.com"
    offsets = {name: stack.log_size(name) for name in LOGS}
    with Client(stack.base_url) as client:
        calls = [
            client.request("POST", "/api/user/register", {"name": "Secret", "email": email, "password": password}),
            client.request("POST", "/api/user/token/", form={"username": email, "password": password}),
            client.request("POST", "/api/user/token/", form={"username": email, "password": password + "x"}),
            client.request("POST", "/api/user/register", {"name": "Secret", "email": email, "password": password}),
        ]
    # nginx writes its access log once a second: the search waits for every line.
    eventually(lambda: stack.log_since("nginx/access.log", offsets["nginx/access.log"]).count("/api/user/"),
               lambda lines: lines == len(calls), seconds=UNPROMISED_WAIT)
    written = {name: stack.log_since(name, offset) for name, offset in offsets.items()}
    figures.update(statuses=[c.status for c in calls], log_bytes_searched=sum(map(len, written.values())))
    for call in calls:
        assert password.encode() not in call.body and b"password_hash" not in call.body
    for name, text in written.items():
        assert password not in text, f"the password is in {name}"


def auth_limit():
    """How many sign-ins an address has (RATE_LIMIT_AUTH, "20 per hour" for the drills)."""
    return int(setting("RATE_LIMIT_AUTH").split()[0])


def test_the_sign_in_limit_holds_across_workers_whatever_x_forwarded_for_says(stack, figures):
    limit = auth_limit()
    client = Client(stack.base_url)
    log_offset = stack.log_size("app/app.log")
    statuses = []
    for n in range(limit + 10):
        # A new forged client address every time, as someone dodging the limit would send.
        forged = {"X-Forwarded-For": f"203.0.113.{n}", "X-Real-IP": f"198.51.100.{n}"}
        reply = client.request("POST", "/api/user/token/", headers=forged,
                               form={"username": f"nobody-{n}@example.com", "password": "wrong password"})
        statuses.append(reply.status)
    client.close()
    answered = [s for s in statuses if s != 429]
    lines = [json.loads(line) for line in stack.log_since("app/app.log", log_offset).splitlines()
             if '"path": "/api/user/token/"' in line]
    limiter_keys = [key for key in stack.state_redis().scan_iter("LIMITS:*", count=1000)]
    figures.update(
        requests=len(statuses), limit=setting("RATE_LIMIT_AUTH"), answered_before_429=len(answered),
        gunicorn_workers=len(stack.gunicorn_workers()),
        client_addresses_the_app_saw=sorted({line["client"] for line in lines}),
    )
    # One count for the whole app: with a count per worker, twice the limit would pass.
    assert len(answered) <= limit and statuses[-1] == 429, figures
    assert limiter_keys, "the limiter keeps its counts in the state Redis, where every worker sees them"
    # nginx set the address: the forged headers never reached the limiter's key.
    assert figures["client_addresses_the_app_saw"] == [client.source]


def test_a_flood_of_cache_entries_evicts_no_limit(stack, figures):
    """Before, one Redis held L2 and the limits: ~1,400 large list pages
    evicted the sign-in counter of a client at 429, which then got 401s
    again. Now the counters live on the state Redis, which never evicts."""
    client = Client(stack.base_url)
    form = {"username": "flood@example.com", "password": "wrong password"}
    statuses = [client.request("POST", "/api/user/token/", form=form).status for _ in range(auth_limit() + 2)]
    assert statuses[-1] == 429, statuses
    cache = stack.redis()
    maxmemory = int(cache.config_get("maxmemory")["maxmemory"])
    evicted_before = cache.info("stats")["evicted_keys"]
    blob = b"x" * (1024 * 1024)
    pipe = cache.pipeline(transaction=False)
    for n in range(maxmemory // len(blob) + 64):  # past maxmemory: the cache must evict
        pipe.set(f"flood:{n}", blob, ex=60)
        if n % 32 == 31:
            pipe.execute()
    pipe.execute()
    evicted = cache.info("stats")["evicted_keys"] - evicted_before
    after = client.request("POST", "/api/user/token/", form=form).status
    client.close()
    state = stack.state_redis()
    figures.update(cache_maxmemory_mb=maxmemory // 2**20, cache_keys_evicted=evicted, status_after_flood=after,
                   state_policy=state.config_get("maxmemory-policy")["maxmemory-policy"])
    for key in cache.scan_iter("flood:*", count=1000):
        cache.delete(key)
    assert evicted > 0, "the flood did not fill the cache"
    assert after == 429, "the flood evicted the limit"
    assert figures["state_policy"] == "noeviction"
    assert not list(cache.scan_iter("LIMITS:*")), "no counter is kept where eviction reaches"


def configured_burst():
    """The burst nginx allows one client (nginx/limits.conf)."""
    return int(re.search(r"limit_req zone=api_past_l1 burst=(\d+)", (ROOT / "nginx" / "limits.conf").read_text())[1])


@pytest.fixture
def strict_nginx(stack):
    """The stack's nginx, for this test, with a per-client rate that a burst
    meets however slow the machine (test.sh sets one past any other drill's
    reach): one a minute, so a client sending the burst and twenty more is
    refused unless sending them takes twenty minutes. Its requests a second."""
    stack.service("start", "nginx", RATE_LIMIT_PAST_L1="1r/m")
    yield 1 / 60
    stack.service("start", "nginx")


def burst_of(count, call):
    """``call(n)`` for n below ``count``, at once; (calls, seconds they took)."""
    started = time.monotonic()
    calls = [call(n) for n in range(count)]
    return calls, time.monotonic() - started


def assert_limited(calls, seconds, rate, answered):
    """At most the burst and what the rate refilled meanwhile were ``answered``;
    every other call got nginx's 429 in the API's error shape."""
    passed = [c for c in calls if c.status == answered]
    refused = [c for c in calls if c.status == 429]
    assert len(passed) + len(refused) == len(calls), sorted({c.status for c in calls})
    assert refused and len(passed) <= configured_burst() + 1 + rate * seconds, (len(passed), seconds)
    for call in refused:
        assert json.loads(call.body)["code"] == 429
    return len(passed)


def test_nginx_limits_each_client_on_what_l1_cannot_answer(stack, strict_nginx, figures):
    """Before, any client could send writes without end and force every read
    past L1 with `Cache-Control: no-cache` (or any Authorization header).
    Each client below sends from an address of its own."""
    rate, burst, tag = strict_nginx, configured_burst(), uuid.uuid4().hex[:8]
    writer, bypasser = Client(stack.base_url), Client(stack.base_url)
    writes, writes_s = burst_of(burst + 20, lambda n: writer.request(
        "POST", "/users", {"name": "Flood", "email": f"flood-{tag}-{n}@example.com"}))
    writes_answered = assert_limited(writes, writes_s, rate, 201)
    # A header nginx cannot verify buys nothing: a forged token is limited too.
    forged = writer.request("DELETE", "/users/1", headers={"Authorization": "Bearer forged"})
    reads = [writer.request("GET", "/users/1").status for _ in range(5)]

    bypasses, bypass_s = burst_of(burst + 20, lambda _: bypasser.request("GET", "/users/1", headers=FRESH))
    bypasses_answered = assert_limited(bypasses, bypass_s, rate, 200)
    by_authorization = bypasser.request("GET", "/users/1", headers={"Authorization": "Bearer forged"})
    with Client(stack.base_url) as another_client:
        another = another_client.request("GET", "/users/1", headers=FRESH)
    figures.update(rate_per_s=round(rate, 4), burst=burst, writes_answered=writes_answered,
                   bypasses_answered=bypasses_answered, refused=sum(c.status == 429 for c in writes + bypasses))
    assert forged.status == 429 and by_authorization.status == 429
    assert reads == [200] * 5, "plain reads are never limited"
    assert another.status == 200, "each address has a limit of its own"

    # The relay's refresh is no client's: while a client stays over its
    # limit, a change made with psql still reaches L1 within a second.
    user_id = next(c for c in writes if c.status == 201).json()["id"]
    reader, local = Client(stack.base_url), Client(stack.base_url)
    reader.request("GET", f"/users/{user_id}")
    assert reader.request("GET", f"/users/{user_id}").l1 == "HIT"
    over, _ = burst_of(burst + 5, lambda _: local.request("GET", "/users/1", headers=FRESH))
    assert over[-1].status == 429
    keep_over, hammered = threading.Event(), []

    def stay_over_the_limit():  # on another URI: a request let through would refresh this one
        pace = Pace(50)
        while not keep_over.is_set():
            pace.wait()
            hammered.append(local.request("GET", "/users/1", headers=FRESH).status)

    hammer = threading.Thread(target=stay_over_the_limit)
    hammer.start()
    try:
        with stack.db() as conn, conn.cursor() as cur:
            cur.execute("UPDATE users SET name = 'Renamed by psql' WHERE id = %s", (user_id,))
        seen = eventually(lambda: reader.request("GET", f"/users/{user_id}"),
                          lambda reply: reply.status == 200 and reply.json()["name"] == "Renamed by psql",
                          seconds=UNPROMISED_WAIT)
    finally:
        keep_over.set()
        hammer.join()
    for client in (writer, bypasser, reader, local):
        client.close()
    figures.update(l1_old_until_s=round(seen.unmet_for, 3), l1_status=seen.value.l1,
                   meanwhile_refused=f"{hammered.count(429)} of {len(hammered)}")
    assert seen.unmet_for <= L1_ITEM_BOUND, figures


def test_a_refused_method_past_the_limit_is_still_the_apis_json(stack, strict_nginx):
    """nginx refuses TRACE itself and asks the app which methods the path
    takes (@error_405); a client past its limit is refused there, and that
    429 was once nginx's HTML page."""
    with Client(stack.base_url) as tracer:
        calls, seconds = burst_of(configured_burst() + 20, lambda _: tracer.request("TRACE", "/users"))
    assert_limited(calls, seconds, strict_nginx, 405)
    assert {c.headers["Content-Type"] for c in calls} == {"application/json"}


def test_a_flood_of_oversized_writes_costs_the_app_no_reading(stack, figures):
    """Before, six clients sending two 1 MiB bodies of unknown keys a second
    held the workers and took a normal read from 3 ms to 2.4 s. Bodies are
    now refused by their size, before they are read, or parsed capped.
    Figures: a read the app must answer, without and with the flood."""
    # Unknown keys, each a field error if parsed: 1 MiB, 200 KiB, and 15 KiB (under the app's limit: parsed).
    bodies = [json.dumps({f"k{n}": 1 for n in range(keys)}).encode() for keys in (100_000, 20_000, 1_400)]
    flooders, sends, answers = 6, 10, []

    def flood(body):
        """A client sending ``body`` ``sends`` times, two a second."""
        pace = Pace(2)
        with Client(stack.base_url) as client:
            for _ in range(sends):
                pace.wait()
                reply = client.request("POST", "/users", body, headers={"Content-Type": "application/json"})
                answers.append((len(body), reply.status, len(reply.body)))

    def read_latencies(count):
        """``count`` reads the app must answer, ten a second: their milliseconds, sorted."""
        pace, took = Pace(10), []
        with Client(stack.base_url) as reader:
            for n in range(count):
                pace.wait()
                # A new URI each time: past L1 and L2, a query of PostgreSQL.
                reply = reader.request("GET", f"/users?page_size=5&cursor={n + 1}&t={uuid.uuid4().hex[:6]}")
                assert reply.status == 200, reply
                took.append(reply.seconds * 1000)
        return sorted(took)

    quiet = read_latencies(30)
    threads = [threading.Thread(target=flood, args=(body,)) for body in bodies * (flooders // len(bodies))]
    for thread in threads:
        thread.start()
    try:
        loaded = read_latencies(sends * 5)  # while the flood lasts, at its pace
    finally:
        for thread in threads:
            thread.join()
    percentile = lambda values, p: round(values[min(len(values) - 1, int(len(values) * p))], 1)  # noqa: E731
    figures.update(
        flood_requests=len(answers),
        flood_statuses=sorted({(size, status) for size, status, _ in answers}),
        largest_answer_bytes=max(length for _, _, length in answers),
        read_ms_quiet={"p50": percentile(quiet, 0.5), "p99": percentile(quiet, 0.99), "max": quiet[-1]},
        read_ms_flooded={"p50": percentile(loaded, 0.5), "p99": percentile(loaded, 0.99), "max": loaded[-1]},
    )
    assert len(answers) == flooders * sends, figures
    assert {status for _, status, _ in answers} <= {413, 422}, figures
    assert figures["largest_answer_bytes"] < 4096, figures
