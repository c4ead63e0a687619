"""Every producer of an error body, through nginx, answers the one error shape
(infra/errors.py, error_body) to the byte: the app's handlers, the cache's
fast path, the token check, gunicorn's own refusals and nginx's template."""

import json
import re
import uuid

import pytest
from werkzeug.http import HTTP_STATUS_CODES

from infra.errors import error_body
from tests.support import ROOT

NGINX_HTTP_CONF = ROOT / "nginx" / "http.conf"

MISSING_ID = 2**62

# Who answers -> (method, path, body, headers, status).
PRODUCERS = {
    "app: abort() in a view": ("PUT", f"/users/{MISSING_ID}", {"name": "x"}, None, 404),
    "app: routing, no such path": ("GET", "/no/such/path", None, None, 404),
    "app: validation, with its errors": ("POST", "/users", {"name": ""}, None, 422),
    "app: body parser, not JSON": ("POST", "/users", b"x", {"Content-Type": "text/plain"}, 415),
    "app: method handler": ("DELETE", "/users", None, None, 405),
    "app: the refused method nginx asks about": ("TRACE", "/users", None, None, 405),
    "app: database handler, a conflict": ("POST", "/users", "duplicate", None, 409),
    "app: token check": ("GET", "/api/user/me", None, None, 401),
    "cache: the fast path's missing item": ("GET", f"/users/{MISSING_ID}", None, None, 404),
    "nginx: body too large": ("POST", "/users", b"x" * (300 * 1024), {"Content-Type": "application/json"}, 413),
    "nginx: header too large": ("GET", "/users/1", None, {"X-Padding": "a" * 9000}, 431),
    "nginx: its internal location asked for": ("GET", "/_nginx-error", None, None, 404),
}


def assert_error_shape(status, content_type, body, expected_status):
    assert status == expected_status, body
    assert content_type == "application/json", body
    parsed = json.loads(body)
    assert parsed["code"] == status
    assert body.rstrip(b"\n").decode() == error_body(status, parsed.get("message"), parsed.get("errors")), body


@pytest.mark.parametrize("producer", PRODUCERS)
def test_every_producer_answers_the_one_error_shape(send, producer):
    method, path, body, headers, status = PRODUCERS[producer]
    if body == "duplicate":
        body = {"name": "Twice", "email": f"twice-{uuid.uuid4().hex[:8]}@example.com"}
        assert send(method, path, body).status == 201
    reply = send(method, path, body, headers)
    assert_error_shape(reply.status, reply.headers["Content-Type"], reply.body, status)


def test_gunicorns_own_refusal_answers_the_one_error_shape(nginx):
    # More header fields than gunicorn takes: nginx passes them on, gunicorn refuses.
    fields = b"".join(b"X-%d: a\r\n" % i for i in range(150))
    raw = nginx.raw(b"GET /users?many=1 HTTP/1.1\r\nHost: x\r\n" + fields + b"Connection: close\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    assert_error_shape(int(lines[0].split()[1]), headers["content-type"], body, 431)


def test_nginx_names_every_status_it_answers_as_the_app_does():
    """The statuses nginx's template can answer, beyond those sent above."""
    block = re.search(r"map \$status \$api_error_status \{(.*?)\}", NGINX_HTTP_CONF.read_text(), re.S).group(1)
    names = dict(re.findall(r'^\s*(\d{3}) "([^"]*)";', block, re.M))
    assert len(names) >= 15
    assert {int(code): name for code, name in names.items()} == {int(code): HTTP_STATUS_CODES[int(code)] for code in names}
