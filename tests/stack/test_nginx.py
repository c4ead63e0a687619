"""L1: the stack's nginx in front of gunicorn, reached over HTTP at BASE_URL."""

import os
import re
import subprocess
import time
import urllib.parse
import uuid

import pytest

from tests.support import ROOT
from tests.support.accounts import signed_up
from tests.support.bounds import L1_BOUND, L1_ITEM_BOUND, UNPROMISED_WAIT
from tests.support.http import FRESH
from tests.support.waiting import eventually


def stored(send, path):
    """The entry the last GET filled, seen as a HIT. nginx stores an entry just
    after it answered, so a request sent at once may still find none (MISS,
    after waiting out proxy_cache_lock) or the old one (UPDATING)."""
    return eventually(lambda: send("GET", path), lambda r: r.l1 == "HIT", seconds=UNPROMISED_WAIT).value


def within_l1_item_bound(send, path, until, since):
    """``until`` holds of every read of ``path`` begun later than L1's item bound after ``since``: the answer that did."""
    seen = eventually(lambda: send("GET", path), until, seconds=UNPROMISED_WAIT, since=since)
    assert seen.unmet_for <= L1_ITEM_BOUND, seen
    return seen.value


def test_every_response_says_what_l1_did(send, new_user):
    assert send("GET", f"/users/{new_user}").l1 in {"MISS", "HIT", "EXPIRED", "UPDATING"}
    assert send("POST", "/users", {"name": "x"}).l1 == "NONE"
    assert send("GET", "/users/0").l1 == "MISS"
    assert send("POST", "/users", b"x", {"Content-Type": "text/plain"}).l1 == "NONE"


def test_get_is_cached_and_head_shares_the_entry(send, new_user):
    path = f"/users/{new_user}"
    first = send("HEAD", path)
    assert (first.status, first.l1, first.body) == (200, "MISS", b"")
    got = stored(send, path)
    assert (got.l1, got.json()["id"]) == ("HIT", new_user)
    assert send("HEAD", path).l1 == "HIT"


def test_a_key_read_once_after_a_quiet_spell_is_answered_fresh(send, new_user):
    path = f"/users/{new_user}"
    send("GET", path)
    stored(send, path)
    time.sleep(L1_BOUND + 0.2)  # past all of the entry's life
    # No stale copy for the first request after expiry: it waits for the app.
    assert send("GET", path).l1 == "EXPIRED"
    stored(send, path)


def test_a_404_is_stored_only_from_the_relays_refresh(send):
    path = f"/users/{10**15 + int(time.time())}"
    for headers in ({}, {}, {"Cache-Control": "no-cache"}, {"X-L1-Refresh": "guessed"}, {}):
        reply = send("GET", path, headers=headers)
        assert reply.status == 404 and reply.l1 in ("MISS", "BYPASS")


def test_authorized_requests_neither_read_nor_fill_the_cache(send, new_user):
    path = f"/users/{new_user}"
    auth = {"Authorization": "Bearer anything"}
    assert send("GET", path, headers=auth).l1 == "BYPASS"
    assert send("GET", path, headers=auth).l1 == "BYPASS"
    assert send("GET", path).l1 == "MISS"  # the authorized answers were not stored
    stored(send, path)
    assert send("GET", path, headers=auth).l1 == "BYPASS"  # nor served from the entry


def test_no_cache_bypasses_and_refreshes_the_entry(send, new_user):
    path = f"/users/{new_user}"
    send("GET", path)
    stored(send, path)
    renamed = send("PUT", path, {"name": "Renamed"})
    assert renamed.status == 200
    fresh = send("GET", path, headers=FRESH)
    assert (fresh.l1, fresh.json()["name"]) == ("BYPASS", "Renamed")
    # Stored by the bypass, or by the relay's refresh, which may land just after it.
    within_l1_item_bound(send, path, lambda r: (r.l1, r.json()["name"]) == ("HIT", "Renamed"), renamed.ended)


def test_every_client_sees_a_changed_or_deleted_item_within_a_second(send, new_user):
    path = f"/users/{new_user}"
    send("GET", path)
    stored(send, path)
    put = send("PUT", path, {"name": "Changed"})
    assert put.status == 200
    changed = within_l1_item_bound(send, path, lambda r: r.json()["name"] == "Changed", put.ended)
    assert changed.l1 == "HIT"  # refreshed in L1, not merely expired
    deleted = send("DELETE", path)
    assert deleted.status == 200
    gone = within_l1_item_bound(send, path, lambda r: r.status == 404, deleted.ended)
    assert gone.json()["code"] == 404


def test_a_list_read_once_after_a_quiet_spell_is_within_its_lifetime(send):
    listed = send("GET", "/users?page_size=1000")
    send("GET", "/users?page_size=1000")
    tag = uuid.uuid4().hex[:10]
    created = send("POST", "/users", {"name": f"Quiet {tag}", "email": f"quiet-{tag}@example.com"})
    assert listed.status == 200 and created.status == 201
    time.sleep(L1_BOUND + 0.1)
    later = send("GET", "/users?page_size=1000")
    assert later.l1 in {"EXPIRED", "MISS"} and created.json()["id"] in [u["id"] for u in later.json()]


def test_the_apps_cache_control_is_for_l1_only(send, new_user):
    assert "Cache-Control" not in send("GET", f"/users/{new_user}").headers
    assert send("GET", "/health").headers["Cache-Control"] == "no-store"


def test_request_ids_are_kept_or_made(send):
    mine = send("GET", "/health", headers={"X-Request-ID": "trace-123"})
    assert mine.headers["X-Request-ID"] == "trace-123"
    made = send("GET", "/health", headers={"X-Request-ID": "bad id\twith spaces"})
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["X-Request-ID"])


def test_health_is_never_answered_from_the_cache(send):
    assert {send("GET", "/health").l1 for _ in range(3)} == {"NONE"}


def test_nginx_errors_are_json_too(send):
    reply = send("POST", "/users", b"x" * (2 * 1024 * 1024), {"Content-Type": "application/json"})
    assert reply.status == 413
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.json()["code"] == 413


def test_errors_through_nginx_keep_the_api_shape(send):
    reply = send("GET", "/users/abc")
    assert (reply.status, reply.headers["Content-Type"]) == (404, "application/json")
    assert reply.json()["code"] == 404


def test_one_accounts_order_never_reaches_another_through_either_cache(nginx, send):
    """Warm L1 and L2 with A's order, then ask as B and as nobody."""
    alice, bob = signed_up(nginx, "l1")["headers"], signed_up(nginx, "l1")["headers"]
    order = send("POST", "/api/orders/", {"items": [{"name": "Secret", "quantity": 1, "price": 1}], "total_price": 1},
                 alice)
    assert order.status == 201
    path = f"/api/orders/{order.json()['id']}/"
    # The stack's worker processes it, which invalidates L2 (no promised time).
    eventually(lambda: send("GET", path, headers=alice).json(), lambda o: o["processed_at"] is not None,
               seconds=UNPROMISED_WAIT, step=0.2)
    # Warm L2: a read racing the worker's invalidation is rightly not stored,
    # so a few reads may pass before the entry settles.
    reads = []

    def read():
        reads.append(send("GET", path, headers=alice))
        return reads[-1]

    eventually(read, lambda r: r.l2 == "HIT", seconds=UNPROMISED_WAIT)
    assert all((r.status, r.l1, r.headers["Cache-Control"]) == (200, "BYPASS", "private, no-store") for r in reads)

    theirs = send("GET", path, headers=bob)
    assert (theirs.status, theirs.l1) == (404, "BYPASS")
    assert b"Secret" not in theirs.body
    nobody = send("GET", path)
    assert nobody.status == 401 and b"Secret" not in nobody.body
    assert send("GET", path).l1 == "MISS"  # the 401 was not stored either


@pytest.mark.parametrize("path", ["/users/1", "/users/abc", "/nothing/here"])
def test_security_headers_are_set_by_nginx_on_every_answer(send, path):
    headers = send("GET", path).headers
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"


def test_another_stack_is_refused_the_port_this_one_listens_on(base_url, tmp_path):
    """nginx listens with reuseport (nginx/local.conf.template), which would
    let a second nginx share the port: scripts/stack.sh asks first."""
    address = urllib.parse.urlsplit(base_url)
    (tmp_path / "stack.env").write_text("")  # a stack of its own, whose nginx is all that would start
    env = {**os.environ, "STACK_DIR": str(tmp_path), "LISTEN_HOST": address.hostname, "PORT": str(address.port)}
    try:
        run = subprocess.run([ROOT / "scripts" / "stack.sh", "start", "nginx"], env=env, capture_output=True,
                             text=True, timeout=60)
        assert run.returncode != 0 and f"port {address.port} is taken" in run.stderr, run.stderr
        assert not (tmp_path / "nginx" / "nginx.pid").exists()
    finally:
        subprocess.run([ROOT / "scripts" / "stack.sh", "stop", "nginx"], env=env, capture_output=True, timeout=60)
