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
    limiter_keys = [key for key in stack.redis().scan_iter("LIMITS:*", count=1000)]
    figures.update(
        requests=len(statuses), limit_per_minute=limit, answered_before_429=len(answered),
        gunicorn_workers=len(stack.gunicorn_workers()), client_addresses_the_app_saw=sorted({l["client"] for l in lines}),
    )
    # One count for the whole app: with a count per worker, twice the limit would pass.
    assert len(answered) <= limit and statuses[-1] == 429, figures
    assert limiter_keys, "the limiter keeps its counts in Redis, where every worker sees them"
    # nginx set the address: the forged headers never reached the limiter's key.
    assert figures["client_addresses_the_app_saw"] == ["127.0.0.1"]
