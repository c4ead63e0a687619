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


def _quote(text):
    """A string (or None) as json.dumps(..., ensure_ascii=False) writes it."""
    return "null" if text is None else json.encoder.encode_basestring(text)


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


# The one key a layer inside sets in the WSGI environ: the route template
# that answered, which the request log outside reads for the request's sample.
# Flask sets it (note_flask_route), the cache's fast path too (cache/reads.py).
ROUTE_KEY = "api.route"


def note_route(environ, rule):
    environ[ROUTE_KEY] = rule


def note_flask_route():
    """Flask's part: the rule it matched, for the request's sample."""
    note_route(request.environ, request.url_rule.rule if request.url_rule else "unmatched")


class RequestLog:
    """WSGI middleware: one JSON line per request, in the shape of every other
    line, and its sample in api_request_duration_seconds (infra/metrics.py).

    A middleware rather than Flask hooks and the logging machinery: those
    cost a large share of a cached GET (LogRecord, handler lock, context-local
    lookups). It sits inside ProxyFix, so the client is the address nginx reported.
    """

    def __init__(self, wsgi_app, metrics):
        self.wsgi_app, self.metrics = wsgi_app, metrics

    def __call__(self, environ, start_response):
        started = time.perf_counter()
        statuses = []

        def capture_status(status, headers, exc_info=None):
            statuses.append(status)
            return start_response(status, headers, exc_info)

        body = self.wsgi_app(environ, capture_status)
        seconds, status = time.perf_counter() - started, statuses[-1][:3] if statuses else "500"
        method = environ.get("REQUEST_METHOD")
        route = route_label(environ.get(ROUTE_KEY, "unmatched"))
        self.metrics.REQUESTS.labels(method if method in _METHODS else "OTHER", route, status).observe(seconds)
        if log.isEnabledFor(logging.INFO):
            self._write(environ, int(status), seconds)
        return body

    @staticmethod
    def _write(environ, status, seconds):
        # _json_line's text, written out: json.dumps of the dict costs a
        # cached read several times what quoting its four strings does.
        line = (f'{{"time": "{_utc_now()}", "level": "INFO", "logger": "{log.name}", "message": "request", '
                f'"method": {_quote(environ.get("REQUEST_METHOD"))}, "path": {_quote(environ.get("PATH_INFO"))}, '
                f'"status": {status}, "duration_ms": {round(seconds * 1000, 2)!r}, '
                f'"request_id": {_quote(environ.get("HTTP_X_REQUEST_ID", ""))}, '
                f'"client": {_quote(environ.get("REMOTE_ADDR"))}}}')
        try:  # sys.stdout as it is now (a test may have swapped it)
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        except (OSError, ValueError):
            pass  # a log line that cannot be written must not fail the request


def init_app(app):
    # First of the hooks: a request another one refuses (a 429) has its route too.
    app.before_request_funcs.setdefault(None, []).insert(0, note_flask_route)
    app.wsgi_app = RequestLog(app.wsgi_app, app.extensions["metrics"])
