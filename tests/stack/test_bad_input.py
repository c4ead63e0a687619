"""Bad input through nginx: each gets a clear 4xx JSON error and changes nothing."""

import json

import pytest

from tests.support.errors import assert_error
from tests.support.http import FRESH


@pytest.fixture
def unchanged(send, new_user):
    """A user of the test's own; afterwards it and the user count must be as they were."""

    def state():  # past L1, so "unchanged" is checked at the source
        user = send("GET", f"/users/{new_user}", headers=FRESH)
        listing = send("GET", "/users?page_size=1", headers=FRESH)
        return user.body, json.loads(listing.headers["X-Pagination"])["total"]

    before = state()
    yield new_user
    assert state() == before


NESTED = b"[" * 100_000 + b"]" * 100_000
BIG = 2**63


@pytest.mark.parametrize(
    "method, path, body, headers, code",
    [
        ("POST", "/users", b'{"name": "x",', {"Content-Type": "application/json"}, 400),
        ("POST", "/users", b"\xff\xfe\x00", {"Content-Type": "application/json"}, 400),
        ("POST", "/users", b"[" * 5_000 + b"]" * 5_000, {"Content-Type": "application/json"}, 400),
        ("POST", "/users", NESTED, {"Content-Type": "application/json"}, 413),
        ("POST", "/users", b"name=x&email=x@example.com", {"Content-Type": "application/x-www-form-urlencoded"}, 415),
        ("POST", "/users", b'{"name": "x"}', {"Content-Type": "text/plain"}, 415),
        ("POST", "/users", b"{" + b" " * (1024 * 1024) + b"}", {"Content-Type": "application/json"}, 413),
        ("POST", "/users", {"name": "x", "email": "x@example.com", "id": 1}, None, 422),
        ("POST", "/users", {"name": "Tab\there", "email": "tab@example.com"}, None, 422),
        ("POST", "/users", {"name": "NUL\u0000", "email": "nul@example.com"}, None, 422),
        ("POST", "/users", {"name": ["x"], "email": "list@example.com"}, None, 422),
        ("PUT", "/users/{id}", {"email": "'; DROP TABLE users; --"}, None, 422),
        ("PUT", "/users/{id}", [1, 2], None, 422),
        ("PUT", f"/users/{BIG}", {"name": "x"}, None, 404),
        ("DELETE", f"/users/{BIG * 10}", None, None, 404),
        ("DELETE", "/users/-1", None, None, 404),
        ("GET", f"/users?page={BIG}", None, None, 422),
        ("GET", f"/users?cursor={BIG}", None, None, 422),
        ("GET", "/users?page_size=0", None, None, 422),
        ("GET", "/users?page=1e3", None, None, 422),
        ("GET", f"/incident/get/{BIG}", None, None, 404),
        ("PATCH", f"/incident/update-status?incident_id={BIG}&status=new", None, None, 422),
        ("GET", "/addr_by_phone?phone=%27%20OR%201%3D1--", None, None, 422),
        ("GET", "/users/%F0%9F%98%80", None, None, 404),
        ("GET", "/users/%ff", None, None, 404),
        ("GET", "/users/1%00", None, None, 400),
        ("GET", "/users/" + "9" * 9000, None, None, 414),
        ("GET", "/docs/assets/../../settings.py", None, None, 404),
        ("GET", "/docs/assets/..%2f..%2fsettings.py", None, None, 404),
        ("GET", "/docs/assets/%2e%2e/%2e%2e/etc/passwd", None, None, 404),
        ("GET", "/../../../etc/passwd", None, None, 400),
        ("GET", "/users/1", None, {"X-Padding": "a" * 9000}, 431),
        ("TRACE", "/users/{id}", None, None, 405),
    ],
)
def test_bad_input_gets_a_json_4xx_and_changes_nothing(send, unchanged, method, path, body, headers, code):
    reply = send(method, path.replace("{id}", str(unchanged)), body, headers)
    assert_error(reply, code)


def test_a_refused_method_names_the_allowed_ones(send, new_user):
    reply = send("TRACE", f"/users/{new_user}")
    assert set(reply.headers["Allow"].split(", ")) == {"GET", "HEAD", "PUT", "DELETE"}
    assert reply.headers["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"


@pytest.mark.parametrize("name", ["Zoë 👩\u200d💻 王", "Robert'); DROP TABLE users;--", "<script>alert(1)</script>"])
def test_text_is_stored_and_returned_verbatim(send, name):
    created = send("POST", "/users", {"name": name, "email": f"verbatim-{abs(hash(name))}@example.com"})
    assert created.status == 201
    reply = send("GET", f"/users/{created.json()['id']}")
    assert reply.json()["name"] == name
    # JSON, never sniffed as HTML by a browser.
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.headers["X-Content-Type-Options"] == "nosniff"


def test_a_header_value_cannot_inject_response_headers(nginx, new_user):
    # The id is echoed back: a CR LF in it must not start a header of its own.
    response = nginx.raw(
        f"GET /users/{new_user} HTTP/1.1\r\nHost: t\r\nX-Request-ID: abc%0d%0aSet-Cookie:%20a=1\r\n"
        "Connection: close\r\n\r\n".encode(),
    )
    head = response.split(b"\r\n\r\n", 1)[0].lower()
    assert head.startswith(b"http/1.1 200")
    assert b"set-cookie" not in head
    assert b"x-request-id: abc" not in head  # not a valid id: replaced by one of nginx's


def test_a_bare_carriage_return_in_a_header_is_a_json_400(nginx):
    response = nginx.raw(b"GET /users/1 HTTP/1.1\r\nHost: t\r\nX-Bad: a\rSet-Cookie: b\r\nConnection: close\r\n\r\n")
    head, body = response.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 400") and b"application/json" in head
    assert json.loads(body)["code"] == 400
