"""Metric labels from routes (infra/request_log.py): bounded, readable templates."""

import json

import pytest

from infra import request_log
from infra.request_log import route_label


@pytest.mark.parametrize("rule, label", [
    ("/users/<int(max=9223372036854775807):user_id>", "/users/<int:user_id>"),
    ("/api/orders/<uuid:order_id>/", "/api/orders/<uuid:order_id>/"),
    ("/users", "/users"),
    ("unmatched", "unmatched"),
])
def test_a_route_label_is_its_template_without_converter_arguments(rule, label):
    assert route_label(rule) == label
    assert route_label(rule) == label  # and again, from what it kept


@pytest.mark.parametrize("environ", [
    {"REQUEST_METHOD": "GET", "PATH_INFO": "/users/1", "HTTP_X_REQUEST_ID": "abc", "REMOTE_ADDR": "10.0.0.1"},
    # What a client chooses, quotes, control characters and all; and what a test's environ may lack.
    {"REQUEST_METHOD": 'G"ET\\', "PATH_INFO": "/é\u2028\x01\x7f/ünï", "HTTP_X_REQUEST_ID": "\xff\x00"},
])
@pytest.mark.parametrize("seconds", [0.0, 0.0012345, 12.5, 1e-7])
def test_the_request_line_is_the_json_every_other_line_is(environ, seconds, capsys, monkeypatch):
    monkeypatch.setattr(request_log, "_utc_now", lambda: "2026-12-06T10:00:00Z")  # one second for both lines
    request_log.RequestLog._write(environ, 404, seconds)
    written = capsys.readouterr().out
    assert written.endswith("\n") and written.count("\n") == 1
    expected = request_log._json_line(
        "INFO", "api.request", "request", method=environ["REQUEST_METHOD"], path=environ["PATH_INFO"], status=404,
        duration_ms=round(seconds * 1000, 2), request_id=environ.get("HTTP_X_REQUEST_ID", ""),
        client=environ.get("REMOTE_ADDR"))
    assert written[:-1] == expected
    assert json.loads(written)["path"] == environ["PATH_INFO"]
