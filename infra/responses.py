"""JSON response bodies, built once and served as the same bytes from every level.

The L2 cache stores finished bodies (and, for lists, their headers), so a hit
costs no schema dump and the bytes match the database path exactly.
"""

import json

from flask import Response


def to_json(obj):
    """Compact JSON, fields in schema order: the same bytes as the app's own responses."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def pack(body, headers):
    """One cacheable string: a line of JSON headers, then the body."""
    return to_json(headers) + "\n" + body


def unpack(packed):
    """(body, headers) from ``pack``."""
    headers, body = packed.split("\n", 1)
    return body, json.loads(headers)


def json_response(body, status=200, headers=None):
    """``body`` (JSON text) as a response."""
    # A trailing newline, like every other JSON response of Flask's.
    response = Response(body + "\n", status=status, mimetype="application/json")
    if headers:
        response.headers.update(headers)
    return response
