"""Reads of one item (cache/reads.py): the views and the fast path before
Flask give the same answers, and the fast path answers nothing else."""

import json
import time

import pytest
import redis
from werkzeug.test import Client

from blueprints.users import USERS
from cache import l2, reads
from tests.app.conftest import wait_applied


@pytest.fixture
def layer(app):
    """The fast path, among the app's WSGI layers."""
    wsgi = app.wsgi_app
    while not isinstance(wsgi, reads.FastItemReads):
        wsgi = getattr(wsgi, "wsgi_app", None) or wsgi.app
    return wsgi


def record_calls(monkeypatch, owner, name, note):
    """Replace ``owner.name`` with a wrapper that appends ``note(*args)`` to the returned list."""
    calls = []
    real = getattr(owner, name)

    def recorded(*args):
        calls.append(note(*args))
        return real(*args)

    monkeypatch.setattr(owner, name, recorded)
    return calls


@pytest.fixture
def flask_calls(layer, monkeypatch):
    """The paths of the requests the layer handed to Flask."""
    return record_calls(monkeypatch, layer, "wsgi_app", lambda environ, start_response: environ["PATH_INFO"])


@pytest.fixture
def lookups(layer, monkeypatch):
    """The value key of every item lookup in Redis, from either path."""
    return record_calls(monkeypatch, layer.app.extensions["cache"].l2, "lookup_item", lambda keys, uri: keys[0])


def incident_path(client):
    created = client.post(
        "/incident/create", json={"incident_message": "Disk full", "incident_type": "new", "source": "operator"}
    )
    return f"/incident/get/{created.get_json()['incident_id']}"


def answer(response):
    return response.status, response.headers.to_wsgi_list(), response.get_data()


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("item", ["user", "incident", "missing user"])
def test_answers_are_the_views_own_bytes_and_headers(app, client, layer, flask_calls, item, method):
    path = {"user": "/users/1", "missing user": "/users/404"}.get(item) or incident_path(client)
    wait_applied(app)  # else the relay's second application of the POST may retire the value read below
    flask_calls.clear()
    first = client.open(path, method=method)  # a miss (or a 404), answered by the layer
    through_flask = Client(layer.wsgi_app).open(path, method=method)  # Flask's own path
    cached = client.open(path, method=method)
    assert flask_calls == [path]
    assert first.headers["X-Cache-L2"] == "MISS"
    if item != "missing user":
        assert (through_flask.headers["X-Cache-L2"], cached.headers["X-Cache-L2"]) == ("HIT", "HIT")
        assert answer(cached) == answer(through_flask)
    else:
        assert answer(first) == answer(through_flask)
        assert first.status_code == 404 and "Cache-Control" not in first.headers  # L1 keeps no plain 404
    if method == "GET":
        assert json.loads(first.get_data()) == json.loads(through_flask.get_data())
    else:
        assert first.get_data() == b""


def test_with_l2_off_the_layer_answers_each_read_from_postgresql_as_the_view_does(make_app, monkeypatch):
    app = make_app(CACHE_ENABLED=False)
    layer = app.wsgi_app
    while not isinstance(layer, reads.FastItemReads):
        layer = getattr(layer, "wsgi_app", None) or layer.app
    through_flask = {path: answer(Client(layer.wsgi_app).get(path)) for path in ("/users/1", "/users/404")}
    calls = record_calls(monkeypatch, layer, "wsgi_app", lambda environ, start_response: environ["PATH_INFO"])
    client = app.test_client()
    for path, expected in through_flask.items():
        assert answer(client.get(path)) == answer(client.get(path)) == expected, path
        assert client.get(path).headers["X-Cache-L2"] == "OFF"
    assert calls == []


def test_a_miss_is_looked_up_once_and_loaded_once(client, flask_calls, lookups, monkeypatch):
    loads = record_calls(monkeypatch, USERS, "load", lambda user_id: user_id)
    first = client.get("/users/1")
    assert (first.headers["X-Cache-L2"], first.get_json()["name"]) == ("MISS", "Alice")
    assert (lookups, loads, flask_calls) == (["v1:users:item:1"], [1], [])
    assert client.get("/users/1").headers["X-Cache-L2"] == "HIT"
    assert (len(lookups), len(loads)) == (2, 1)


def test_l1_may_keep_an_item_under_its_canonical_uri_only(app, client, test_redis_url):
    marks = redis.Redis.from_url(test_redis_url)
    for other in ("/users/01", "/users/1?x=1"):
        read = client.get(other)
        assert read.status_code == 200 and "Cache-Control" not in read.headers, other
    assert marks.get("v1:users:item:1:l1") is None  # no refresh to plan for those
    read = client.get("/users/1")
    assert read.headers["Cache-Control"].startswith("s-maxage=4, stale-while-revalidate=1")
    assert marks.get("v1:users:item:1:l1") == b"1"


def test_the_paths_the_layer_remembers_are_bounded_whatever_clients_send(layer):
    for user_id in range(layer.REMEMBERED_PATHS + 1000):
        assert layer._item_read(f"/users/{user_id}")[1] == user_id
        assert len(layer.item_reads) <= layer.REMEMBERED_PATHS
    long_path = "/users/" + "0" * layer.REMEMBERED_PATH_LENGTH + "7"
    assert layer._item_read(long_path)[1] == 7 and long_path not in layer.item_reads
    assert layer._item_read("/no/such/route") is None and "/no/such/route" not in layer.item_reads


def test_a_read_l1_may_keep_leaves_the_mark_at_least_its_hold_and_writes_it_only_to_renew_it(client, test_redis_url):
    marks, mark = redis.Redis.from_url(test_redis_url), "v1:users:item:1:l1"
    client.get("/users/1")
    full = l2.L1_MARK_HOLD + l2.L1_MARK_RENEW
    assert full - 2 < marks.ttl(mark) <= full
    marks.expire(mark, l2.L1_MARK_HOLD + 5)  # as if written a while ago: still left past the hold
    client.get("/users/1")
    assert marks.ttl(mark) <= l2.L1_MARK_HOLD + 5  # not written again
    for left in (l2.L1_MARK_HOLD - 1, None):  # under the hold, or gone (evicted, flushed): renewed
        if left:
            marks.expire(mark, left)
        else:
            marks.delete(mark)
        client.get("/users/1")
        assert full - 2 < marks.ttl(mark) <= full


def test_a_404_is_kept_only_when_the_relay_refreshes_a_deleted_item(app, client):
    # A token that is not ASCII is a wrong one too, not an error.
    for headers in ({}, {"Cache-Control": "no-cache"}, {"X-L1-Refresh": "a guess"}, {"X-L1-Refresh": "caf\xe9"}):
        assert "Cache-Control" not in client.get("/users/404", headers=headers).headers
    relays = client.get("/users/404", headers={"X-L1-Refresh": app.extensions["cache"].refresh_token})
    assert relays.status_code == 404 and relays.headers["Cache-Control"].startswith("s-maxage=4")


@pytest.mark.parametrize(
    "path, headers, expected",
    [
        ("/users/1?fields=name", {}, "a query string"),
        ("/users/1", {"Authorization": "Bearer x"}, "an Authorization header"),
        ("/users/9223372036854775808", {}, "past the route's converter"),
        ("/users", {}, "a list"),
        ("/health", {}, "another route"),
    ],
)
def test_what_it_does_not_answer_goes_to_flask(client, flask_calls, path, headers, expected):
    client.get("/users/1")  # a cached item, so nothing below is a miss by accident
    flask_calls.clear()
    response = client.get(path, headers=headers)
    assert flask_calls == [path.split("?")[0]], expected
    assert response.content_type == "application/json"
    if "Authorization" in headers:
        assert (response.headers["X-Cache-L2"], response.headers["Cache-Control"]) == ("HIT", "private, no-store")


def test_writes_to_an_item_route_go_to_flask(client, flask_calls):
    client.get("/users/1")
    flask_calls.clear()
    assert client.put("/users/1", json={"name": "Al"}).status_code == 200
    assert flask_calls == ["/users/1"]
    assert client.get("/users/1").get_json()["name"] == "Al"


def test_while_the_cache_reads_nothing_from_redis_it_reads_postgresql(client, layer):
    client.get("/users/1")
    backend = layer.app.extensions["cache"].l2
    backend.down_until = time.monotonic() + 30
    try:
        read = client.get("/users/1")
    finally:
        backend.down_until = 0.0
    assert (read.status_code, read.headers["X-Cache-L2"]) == (200, "DOWN")


def test_its_answers_are_logged_like_every_other(make_app, capsys):
    app = make_app(LOG_LEVEL="INFO")
    client = app.test_client()
    client.get("/users/1")
    capsys.readouterr()
    client.get("/users/1", headers={"X-Request-ID": "fast-path-log-1"})
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if "fast-path-log-1" in line]
    assert [(line["path"], line["status"]) for line in lines] == [("/users/1", 200)]
