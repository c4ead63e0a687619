"""JSON response bodies, built once and served as the same bytes from every level,
and what L1 may keep of them.

The L2 cache stores finished bodies (and, for lists, their headers), so a hit
costs no schema dump and the bytes match the database path exactly.
"""

import json

from flask import Response
from werkzeug.http import HTTP_STATUS_CODES

L2_HEADER = "X-Cache-L2"

# What L1 (nginx) may keep of a public answer, said in Cache-Control. nginx
# bounds in time only these two stale extensions, never its own
# proxy_cache_use_stale flags (nginx/cache.conf): an entry is fresh 4 s, then
# served for at most 1 s more to the requests that arrive while one of them
# refreshes it (5 s in all, plus under 1 s of nginx's whole-second clock), and
# up to 60 s past that only while the app or PostgreSQL fails. nginx keeps
# nothing else, and clients never see this header. s-maxage: for shared
# caches only; first and short, because nginx searches this value for seven
# words on every hit (make bench, L1 hit).
L1_FRESH_SECONDS = 4
L1_REFRESH_SECONDS = 1
L1_IF_ERROR_SECONDS = 60
L1_CACHEABLE = (
    "Cache-Control",
    f"s-maxage={L1_FRESH_SECONDS}, stale-while-revalidate={L1_REFRESH_SECONDS}, "
    f"stale-if-error={L1_IF_ERROR_SECONDS}",
)


def to_json(obj):
    """Compact JSON, fields in schema order: the same bytes as the app's own responses."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def error_body(code, message):
    """The API's one error shape (flask-smorest's): {"code", "status", "message"}."""
    return to_json({"code": code, "status": HTTP_STATUS_CODES[code], "message": message})


def pack(body, headers):
    """One cacheable string: a line of JSON headers, then the body."""
    return to_json(headers) + "\n" + body


def unpack(packed):
    """(body, headers) from ``pack``."""
    headers, body = packed.split("\n", 1)
    return body, json.loads(headers)


def json_response(body, status=200, headers=None, l2=None, l1=False):
    """``body`` (JSON text) as a response; ``l1``: L1 may keep it (L1_CACHEABLE)."""
    # A trailing newline, like every other JSON response of Flask's.
    response = Response(body + "\n", status=status, mimetype="application/json")
    if headers:
        response.headers.update(headers)
    if l2:
        response.headers[L2_HEADER] = l2
    if l1:
        response.headers.set(*L1_CACHEABLE)
    return response
