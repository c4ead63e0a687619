"""One blueprint per domain; the shared pieces every domain blueprint uses."""

import flask_smorest
import marshmallow as ma
from flask_smorest import abort
from flask_smorest.error_handler import ErrorSchema
from werkzeug.http import HTTP_STATUS_CODES

from cache import cache
from errors import JSONBodyParser
from responses import json_response, to_json, unpack

MAX_BIGINT = 2**63 - 1
# Route converter for ids stored as PostgreSQL BIGINT: anything larger is a 404.
BIGINT_ID = f"int(max={MAX_BIGINT})"

PAGINATION_DOC = {
    "X-Pagination": {
        "description": 'JSON: {"total", "total_pages", "page", "page_size"}',
        "schema": {"type": "string"},
    }
}


def pagination_header(total, page, page_size):
    """The X-Pagination header of one page of a list."""
    pages = -(-total // page_size)
    return {"X-Pagination": to_json({"total": total, "total_pages": pages, "page": page, "page_size": page_size})}


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest's Blueprint, answering 415 when a JSON body is not JSON."""

    ARGUMENTS_PARSER = JSONBodyParser()

    def errors(self, *codes):
        """Document the error responses a view can give, in the API's error shape."""

        def decorator(view):
            for code in codes:
                view = self.alt_response(
                    code, schema=ErrorSchema, description=HTTP_STATUS_CODES[code]
                )(view)
            return view

        return decorator


def cached_item(ns, item_id, load, missing):
    """An item's JSON response from L2, or from ``load()``; 404 saying ``missing`` when there is none."""
    body, l2 = cache.item(ns, item_id, load)
    if body is None:
        abort(404, message=missing)
    return json_response(body, l2=l2)


def cached_list(ns, query, load):
    """A list's JSON response, with its headers, from L2 or from ``load()`` (a ``pack``ed page)."""
    packed, l2 = cache.listing(ns, query, load)
    body, headers = unpack(packed)
    return json_response(body, headers=headers, l2=l2)


def printable(value):
    """Validator: no control characters (newlines, tabs, NUL, escapes)."""
    if any(not ch.isprintable() for ch in value):
        raise ma.ValidationError("Must not contain control characters.")


class TrimmedSchema(ma.Schema):
    """Strips surrounding whitespace from every string field before validation."""

    @ma.pre_load
    def strip_strings(self, data, **kwargs):
        if isinstance(data, dict):
            return {k: v.strip() if isinstance(v, str) else v for k, v in data.items()}
        return data


class MessageSchema(ma.Schema):
    message = ma.fields.String()
