"""The request log (infra/request_log.py): one JSON line per request."""

import json


def test_every_request_is_logged_once_as_one_json_line(make_app, capsys):
    client = make_app().test_client()  # its log handler writes to the captured stdout
    client.get("/incident/get", headers={"X-Request-ID": "log-check-1"})
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if "log-check-1" in line]
    assert len(lines) == 1
    entry = lines[0]
    assert (entry["method"], entry["path"], entry["status"]) == ("GET", "/incident/get", 200)
    assert entry["duration_ms"] >= 0
