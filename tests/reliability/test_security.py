"""Security on the whole stack: rate limits shared by every gunicorn worker and
keyed on the address nginx saw, and passwords that never reach a log.

Runs after the fault drills: it uses up the sign-in limit for a minute."""

import json
import os
import time
import uuid

from tests.reliability.load import Client

LOGS = ("app/app.log", "worker/worker.log", "nginx/access.log", "nginx/error.log")


def test_passwords_are_never_logged_nor_returned(stack, figures):
    password = f"never-log-{uuid.uuid4().hex}"
    email = f"secret-{uuid.uuid4().hex[:8]}@example.com"
    offsets = {name: stack.log_size(name) for name in LOGS}
    client = Client(stack.base_url)
    calls = [
        client.call("account", "POST", "/api/user/register", {"name": "Secret", "email": email, "password": password}),
        client.call("account", "POST", "/api/user/token/", form={"username": email, "password": password}),
        client.call("account", "POST", "/api/user/token/", form={"username": email, "password": password + "x"}),
        client.call("account", "POST", "/api/user/register", {"name": "Secret", "email": email, "password": password}),
    ]
    client.close()
    time.sleep(1.5)  # nginx writes its access log once a second
    written = {name: stack.log_since(name, offset) for name, offset in offsets.items()}
    assert written["nginx/access.log"].count("/api/user/") == len(calls), "the search would find nothing"
    figures.update(statuses=[c.status for c in calls], log_bytes_searched=sum(map(len, written.values())))
    for call in calls:
        assert password.encode() not in call.body and b"password_hash" not in call.body
    for name, text in written.items():
        assert password not in text, f"the password is in {name}"


def test_the_sign_in_limit_holds_across_workers_whatever_x_forwarded_for_says(stack, figures):
    limit = int(os.environ["RATE_LIMIT_AUTH"].split()[0])  # "20 per minute"
    client = Client(stack.base_url)
    log_offset = stack.log_size("app/app.log")
    statuses = []
    for n in range(limit + 10):
        # A new forged client address every time, as someone dodging the limit would send.
        forged = {"X-Forwarded-For": f"203.0.113.{n}", "X-Real-IP": f"198.51.100.{n}"}
        call = client.call("token", "POST", "/api/user/token/", headers=forged,
                           form={"username": f"nobody-{n}@example.com", "password": "wrong password"})
        statuses.append(call.status)
    client.close()
    answered = [s for s in statuses if s != 429]
    lines = [json.loads(line) for line in stack.log_since("app/app.log", log_offset).splitlines()
             if '"path": "/api/user/token/"' in line]
    limiter_keys = [key for key in stack.state_redis().scan_iter("LIMITS:*", count=1000)]
    figures.update(
        requests=len(statuses), limit_per_minute=limit, answered_before_429=len(answered),
        gunicorn_workers=len(stack.gunicorn_workers()), client_addresses_the_app_saw=sorted({l["client"] for l in lines}),
    )
    # One count for the whole app: with a count per worker, twice the limit would pass.
    assert len(answered) <= limit and statuses[-1] == 429, figures
    assert limiter_keys, "the limiter keeps its counts in the state Redis, where every worker sees them"
    # nginx set the address: the forged headers never reached the limiter's key.
    assert figures["client_addresses_the_app_saw"] == ["127.0.0.1"]


def test_a_flood_of_cache_entries_evicts_no_limit(stack, figures):
    """Before, one Redis held L2 and the limits: ~1,400 large list pages
    evicted the sign-in counter of a client at 429, which then got 401s
    again. Now the counters live on the state Redis, which never evicts."""
    limit = int(os.environ["RATE_LIMIT_AUTH"].split()[0])
    client = Client(stack.base_url)
    form = {"username": "flood@example.com", "password": "wrong password"}
    statuses = [client.call("token", "POST", "/api/user/token/", form=form).status for _ in range(limit + 2)]
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
    after = client.call("token", "POST", "/api/user/token/", form=form).status
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

