"""The running stack from outside: HTTP through its nginx at BASE_URL."""

import http.client
import json
import uuid
from urllib.parse import urlsplit

import pytest

from tests.conftest import stack_setting


@pytest.fixture(scope="session")
def base_url():
    return stack_setting("BASE_URL")


class Reply:
    def __init__(self, response):
        self.status = response.status
        self.headers = response.headers
        self.body = response.read()

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"Reply({self.status}, {self.headers.get('X-Cache-Status')}, {self.body[:200]!r})"

    @property
    def l1(self):
        return self.headers["X-Cache-Status"]


@pytest.fixture(scope="session")
def send(base_url):
    parts = urlsplit(base_url)

    def request(method, path, body=None, headers=None):
        conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=10)
        headers = dict(headers or {})
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
            headers.setdefault("Content-Type", "application/json")
        try:
            conn.request(method, path, body=body, headers=headers)
            return Reply(conn.getresponse())
        finally:
            conn.close()

    return request


@pytest.fixture
def new_user(send):
    """A user of this test's own, so runs never depend on each other."""
    tag = uuid.uuid4().hex[:10]
    reply = send("POST", "/users", {"name": f"L1 {tag}", "email": f"l1-{tag}@example.com"})
    assert reply.status == 201
    return reply.json()["id"]



def signed_up(send, tag):
    """A new account's bearer token, through the stack: register, then sign in."""
    email, password = f"{tag}-{uuid.uuid4().hex[:8]}@example.com", "correct horse"
    assert send("POST", "/api/user/register", {"email": email, "password": password}).status == 201
    signed_in = send("POST", "/api/user/token/", f"username={email}&password=correct+horse",
                     {"Content-Type": "application/x-www-form-urlencoded"})
    assert signed_in.status == 200
    return signed_in.json()["access_token"]
