"""One structured log line per request, on stdout.

nginx sets ``X-Request-ID`` (keeping a client's own id) and returns it to the
client, so one id ties the client, the nginx access log and this line together.
"""

import json
import logging
import sys
import time

from flask import g, request

log = logging.getLogger("api.request")


class JSONFormatter(logging.Formatter):
    """A JSON object per line: easy for people to read and for machines to parse."""

    def format(self, record):
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
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
    request_id = request.headers.get("X-Request-ID", "")
    duration_ms = (time.perf_counter() - g.get("request_started", time.perf_counter())) * 1000
    log.info(
        "request",
        extra={
            "fields": {
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": round(duration_ms, 2),
                "request_id": request_id,
                "client": request.remote_addr,
            }
        },
    )
    return response


def init_app(app):
    app.before_request(_start_timer)
    app.after_request(_log_request)
