"""The API's one error shape, asserted on any answer: a Flask test client's
response or a ``tests.support.http.Reply``."""

import json

# What an error body must never carry: internals a client has no business seeing.
LEAKS = (b"Traceback", b"SELECT", b"INSERT", b"psycopg2", b"<html", b"SECRET_KEY", b"root:")


def assert_error(answer, code):
    """``answer`` is the API's JSON error ``code``: {"code", "status", "message", ...}, nothing leaked."""
    if hasattr(answer, "status_code"):  # Flask's test client
        status, content_type, body = answer.status_code, answer.headers.get("Content-Type", ""), answer.get_data()
    else:
        status, content_type, body = answer.status, answer.headers.get("Content-Type", ""), answer.body
    assert status == code, (status, body[:500])
    assert content_type.split(";")[0] == "application/json", content_type
    parsed = json.loads(body)
    assert parsed["code"] == code and isinstance(parsed["status"], str), parsed
    leaked = [leak for leak in LEAKS if leak in body]
    assert not leaked, leaked
