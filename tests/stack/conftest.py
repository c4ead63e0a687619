"""The running stack from outside: HTTP through its nginx at BASE_URL."""

import uuid

import pytest

from tests.support.http import Client
from tests.support.stack import setting, wait_applied


@pytest.fixture(scope="session")
def base_url():
    return setting("BASE_URL")


@pytest.fixture(scope="session")
def nginx(base_url):
    """One client of the stack, a connection per request (any thread may send)."""
    return Client(base_url, keep_alive=False)


@pytest.fixture(scope="session")
def send(nginx):
    """``send(method, path, body=None, headers=None, form=None)``: the Reply."""
    return nginx.request


@pytest.fixture
def new_user(send):
    """A user of this test's own, so runs never depend on each other."""
    tag = uuid.uuid4().hex[:10]
    reply = send("POST", "/users", {"name": f"L1 {tag}", "email": f"l1-{tag}@example.com"})
    assert reply.status == 201
    # Its POST applied by the relay, so no refresh of it is pending: else a
    # mark the test's first read leaves would have the relay fetch the entry
    # again, at once and AGAIN_AFTER later, in the middle of what the test does.
    wait_applied()
    return reply.json()["id"]
