"""Logs as JSON lines on stdout, and one line and one sample per request.

nginx sets ``X-Request-ID`` (keeping a client's own id) and returns it to the
client, so one id ties the client, the nginx access log and this line together.
"""

import json
import logging
import re
import sys
import time

from flask import request

import metrics

log = logging.getLogger("api.request")
_clock = [0, ""]  # the second last formatted, and its text: one strftime a second


def _utc_now():
    now = int(time.time())
    if now != _clock[0]:
        _clock[:] = [now, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))]
    return _clock[1]


def _json_line(level, logger, message, **fields):
    """One log entry as a JSON object: easy for people to read and for machines to parse."""
    entry = {"time": _utc_now(), "level": level, "logger": logger, "message": message, **fields}
    return json.dumps(entry, ensure_ascii=False)


class JSONFormatter(logging.Formatter):
    def format(self, record):
        fields = {"exception": self.formatException(record.exc_info)} if record.exc_info else {}
        if getattr(record, "request_id", None):  # a task's, from the request that queued it (worker.py)
            fields["request_id"] = record.request_id
        return _json_line(record.levelname, record.name, record.getMessage(), **fields)


def configure_logging(level):
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JSONFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


_labels = {}  # rule text -> its label, computed once
# Methods as labels; any other a client invents counts as one, "OTHER".
_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))


def route_label(rule):
    """A route's template as a metric label: "/users/<int:user_id>" (without
    its converters' arguments). A bounded label, unlike the path."""
    label = _labels.get(rule)
    if label is None:
        label = _labels[rule] = re.sub(r"<(\w+)\([^)]*\):", r"<\1:", rule)
    return label


def _note_route():
    """Flask's part: the rule it matched, for the request's sample (the item
    reads' fast path notes its own, item_reads.py)."""
    request.environ["api.route"] = request.url_rule.rule if request.url_rule else "unmatched"


class RequestLog:
    """WSGI middleware: one JSON line per request, in the shape of every other
    line, and its sample in api_request_duration_seconds (metrics.py).

    A middleware rather than Flask hooks and the logging machinery: those cost
    a fifth of a cached GET (LogRecord, handler lock, context-local lookups).
    It sits inside ProxyFix, so the client is the address nginx reported.
    """

    def __init__(self, wsgi_app):
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        started = time.perf_counter()
        statuses = []

        def capture_status(status, headers, exc_info=None):
            statuses.append(status)
            return start_response(status, headers, exc_info)

        body = self.wsgi_app(environ, capture_status)
        seconds, status = time.perf_counter() - started, statuses[-1][:3] if statuses else "500"
        method = environ.get("REQUEST_METHOD")
        route = route_label(environ.get("api.route", "unmatched"))
        metrics.REQUESTS.labels(method if method in _METHODS else "OTHER", route, status).observe(seconds)
        if log.isEnabledFor(logging.INFO):
            self._write(environ, int(status), seconds)
        return body

    @staticmethod
    def _write(environ, status, seconds):
        line = _json_line(
            "INFO",
            log.name,
            "request",
            method=environ.get("REQUEST_METHOD"),
            path=environ.get("PATH_INFO"),
            status=status,
            duration_ms=round(seconds * 1000, 2),
            request_id=environ.get("HTTP_X_REQUEST_ID", ""),
            client=environ.get("REMOTE_ADDR"),
        )
        try:  # sys.stdout as it is now (a test may have swapped it)
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        except (OSError, ValueError):
            pass  # a log line that cannot be written must not fail the request


def init_app(app):
    # First of the hooks: a request another one refuses (a 429) has its route too.
    app.before_request_funcs.setdefault(None, []).insert(0, _note_route)
    app.wsgi_app = RequestLog(app.wsgi_app)
