"""Logs as JSON lines on stdout, and one line per request.

nginx sets ``X-Request-ID`` (keeping a client's own id) and returns it to the
client, so one id ties the client, the nginx access log and this line together.
"""

import json
import logging
import sys
import time

from flask import g, request

log = logging.getLogger("api.request")
_clock = [0, ""]  # the second last formatted, and its text: one strftime a second


def _utc_now():
    now = int(time.time())
    if now != _clock[0]:
        _clock[:] = [now, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))]
    return _clock[1]


class JSONFormatter(logging.Formatter):
    """A JSON object per line: easy for people to read and for machines to parse."""

    def format(self, record):
        entry = {"time": _utc_now(), "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level):
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JSONFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def _start_timer():
    g.request_started = time.perf_counter()


def _log_request(response):
    # Written directly, in the formatter's shape: the logging machinery cost
    # a tenth of a cached request (LogRecord, handler lock, time formatting).
    if log.isEnabledFor(logging.INFO):
        duration_ms = (time.perf_counter() - g.get("request_started", time.perf_counter())) * 1000
        line = json.dumps(
            {
                "time": _utc_now(),
                "level": "INFO",
                "logger": log.name,
                "message": "request",
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": round(duration_ms, 2),
                "request_id": request.headers.get("X-Request-ID", ""),
                "client": request.remote_addr,
            },
            ensure_ascii=False,
        )
        try:  # sys.stdout as it is now (a test may have swapped it)
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        except (OSError, ValueError):
            pass  # a log line that cannot be written must not fail the request
    return response


def init_app(app):
    app.before_request(_start_timer)
    app.after_request(_log_request)
