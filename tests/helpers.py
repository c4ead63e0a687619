"""Assertions and tools shared by the test modules."""

import socket
import time
from urllib.parse import urlsplit

# (title, lines) that tests report: printed at the end of the session (tests/conftest.py).
REPORTS = []


def raw_exchange(base_url, request_bytes):
    """Sends bytes http.client would refuse to build; returns the raw response."""
    parts = urlsplit(base_url)
    with socket.create_connection((parts.hostname, parts.port or 80), timeout=10) as conn:
        conn.sendall(request_bytes)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def assert_error(response, code):
    assert response.status_code == code
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["code"] == code
    assert isinstance(body["status"], str)
    text = response.get_data(as_text=True)
    for leak in ("Traceback", "SELECT", "INSERT", "psycopg2", "<html"):
        assert leak not in text


def eventually(read, condition, seconds=3):
    """The first ``read()`` that meets ``condition``, and the seconds it took, or fail."""
    started = time.monotonic()
    while True:
        response = read()
        if condition(response):
            return response, time.monotonic() - started
        assert time.monotonic() - started < seconds, response
        time.sleep(0.02)
