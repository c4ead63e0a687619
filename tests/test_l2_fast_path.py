"""L2 hits of public items answered before Flask (l2_fast_path.py): the same
answers as the views give, and nothing else answered there."""

import json
import time
from types import SimpleNamespace

import pytest
from flask import Flask
from flask.views import MethodView
from flask_smorest import Api
from werkzeug.test import Client

import l2_fast_path
from blueprints import Blueprint


@pytest.fixture
def fast_path(app):
    return app.extensions["l2_fast_path"]


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
def flask_calls(fast_path, monkeypatch):
    """The paths of the requests the fast path handed to Flask."""
    return record_calls(monkeypatch, fast_path, "wsgi_app", lambda environ, start_response: environ["PATH_INFO"])


@pytest.fixture
def redis_reads(fast_path, monkeypatch):
    """The first key of every MGET this process sends, from either path."""
    return record_calls(monkeypatch, fast_path.backend, "mget", lambda *keys: keys[0])


def incident_path(client):
    created = client.post(
        "/incident/create", json={"incident_message": "Disk full", "incident_type": "new", "source": "operator"}
    )
    return f"/incident/get/{created.get_json()['incident_id']}"


def answer(response):
    return response.status, response.headers.to_wsgi_list(), response.get_data()


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("item", ["user", "incident"])
def test_a_hit_is_answered_before_flask_with_the_bytes_and_headers_the_view_sends(
    app, client, fast_path, flask_calls, item, method
):
    path = "/users/1" if item == "user" else incident_path(client)
    assert client.get(path).headers["X-Cache-L2"] == "MISS"
    flask_calls.clear()

    fast = client.open(path, method=method)
    assert flask_calls == []  # answered before Flask
    through_flask = Client(fast_path.wsgi_app).open(path, method=method)  # Flask's own path, the same hit
    assert flask_calls == [path]
    assert fast.headers["X-Cache-L2"] == "HIT"
    assert answer(fast) == answer(through_flask)
    if method == "GET":
        assert fast.get_json() == json.loads(through_flask.get_data())
    else:
        assert fast.get_data() == b""


def test_a_miss_is_looked_up_once_and_the_view_goes_on_from_it(client, flask_calls, redis_reads):
    first = client.get("/users/1")
    assert (first.headers["X-Cache-L2"], first.get_json()["name"]) == ("MISS", "Alice")
    assert redis_reads == ["v1:users:item:1"]  # the view did not ask again
    assert flask_calls == ["/users/1"]

    assert client.get("/users/1").headers["X-Cache-L2"] == "HIT"
    assert (len(redis_reads), len(flask_calls)) == (2, 1)


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


def test_while_the_cache_reads_nothing_from_redis_neither_does_the_fast_path(client, fast_path, flask_calls):
    client.get("/users/1")
    fast_path.backend.down_until = time.monotonic() + 30
    try:
        read = client.get("/users/1")
    finally:
        fast_path.backend.down_until = 0.0
    assert (read.status_code, read.headers["X-Cache-L2"]) == (200, "DOWN")
    assert "/users/1" in flask_calls


def test_its_answers_are_logged_like_every_other(make_app, capsys):
    app = make_app(LOG_LEVEL="INFO")
    client = app.test_client()
    client.get("/users/1")
    capsys.readouterr()
    client.get("/users/1", headers={"X-Request-ID": "fast-path-log-1"})
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if "fast-path-log-1" in line]
    assert [(line["path"], line["status"]) for line in lines] == [("/users/1", 200)]


def test_a_declaration_its_route_does_not_match_stops_the_start():
    app = Flask(__name__)
    app.extensions["cache"] = SimpleNamespace(enabled=True)
    app.config.update(API_TITLE="t", API_VERSION="1", OPENAPI_VERSION="3.0.3")
    blp = Blueprint("things", __name__)

    @blp.route("/things/<int:thing_id>")
    @blp.public_item("things", "id")
    class ThingById(MethodView):
        def get(self, thing_id):
            return {}

    Api(app).register_blueprint(blp)
    with pytest.raises(RuntimeError, match="things.ThingById: public_item names 'id'"):
        l2_fast_path.init_app(app)
