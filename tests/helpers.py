"""Assertions shared by the test modules."""

import time


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
