"""One blueprint per domain; the shared pieces every domain blueprint uses."""

import functools
import re

import flask_smorest
import marshmallow as ma
from flask import Response, request
from flask_smorest.error_handler import ErrorSchema
from werkzeug.http import HTTP_STATUS_CODES

import item_reads
from cache import Resource, cache
from errors import JSONBodyParser
from responses import json_response, to_json, unpack

MAX_BIGINT = 2**63 - 1
# Route converter for ids stored as PostgreSQL BIGINT: anything larger is a 404.
BIGINT_ID = f"int(max={MAX_BIGINT})"
# OpenAPI: the views that want "Authorization: Bearer <token>" (app.py's bearerAuth scheme).
BEARER_AUTH = [{"bearerAuth": []}]

PAGINATION_DOC = {
    "X-Pagination": {
        "description": 'JSON: {"total", "page_size", "next_cursor"} and, when paging by number, '
        '{"page", "total_pages"}; next_cursor is null on the last page',
        "schema": {"type": "string"},
    }
}


class PageArgsSchema(ma.Schema):
    """Page numbers (cheap near the start) or a cursor (as cheap at any depth)."""

    # Any page times the largest page size (1000) still fits a bigint OFFSET.
    page = ma.fields.Integer(load_default=1, validate=ma.validate.Range(1, MAX_BIGINT // 1000))
    cursor = ma.fields.Integer(
        validate=ma.validate.Range(0, MAX_BIGINT),
        metadata={"description": "next_cursor from the previous page's X-Pagination: no cost that grows with depth"},
    )

    @ma.validates_schema
    def page_or_cursor(self, args, **kwargs):
        if "cursor" in args and args["page"] != 1:
            raise ma.ValidationError("Give page or cursor, not both.", "cursor")


def pagination_header(total, page_size, rows, page=None, cursors=True):
    """X-Pagination of one page: next_cursor is the last row's id while rows may follow."""
    info = {"total": total, "page_size": page_size}
    if cursors:
        info["next_cursor"] = rows[-1]["id"] if len(rows) == page_size else None
    if page is not None:
        info.update(page=page, total_pages=-(-total // page_size))
    return {"X-Pagination": to_json(info)}


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest's Blueprint, answering 415 when a JSON body is not JSON,
    with the declarations of the cache levels."""

    ARGUMENTS_PARSER = JSONBodyParser()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.item_views = {}  # view class name -> (resource, missing): see item_of
        self.query_item_views = {}  # view class name -> (resource, query argument): see cached_resource

    def cached_resource(self, ns, table, load, lists=False, public=True, query_item_view=None):
        """Declare a cached resource (cache.Resource): its items are the rows of
        ``table``, which the capture triggers of init.sql must watch.
        ``query_item_view``: (view class name, query argument) of a view that
        reads an item named in its query string; one named in its path says
        so with ``item_of``."""
        resource = Resource(ns, table, load, lists=lists, public=public)
        self.record_once(lambda state: cache.register(state.app, resource))
        if query_item_view:
            view_name, query_arg = query_item_view
            self.query_item_views[view_name] = (resource, query_arg)
        return resource

    def item_of(self, resource, missing):
        """Decorates a MethodView's ``get``, which then answers the item of
        ``resource`` that the route's one argument names, or a 404 saying
        ``missing`` (``{}`` for the id). Its body is not run: the answer is
        item_reads.answer's, which the WSGI layer there also gives, before
        Flask, to anonymous reads of a public resource."""

        def decorator(get):
            self.item_views[get.__qualname__.split(".")[-2]] = (resource, missing)  # the view class

            @functools.wraps(get)
            def view(_self, **route_args):
                (item_id,) = route_args.values()
                return item_response(resource, item_id, missing)

            return view

        return decorator

    def errors(self, *codes):
        """Document the error responses a view can give, in the API's error shape."""

        def decorator(view):
            for code in codes:
                view = self.alt_response(
                    code, schema=ErrorSchema, description=HTTP_STATUS_CODES[code]
                )(view)
            return view

        return decorator


def item_response(resource, item_id, missing):
    """This request's read of one item of ``resource`` (item_reads.answer)."""
    # L1 never stores an authorized answer (nginx/cache.conf): nothing to mark for it.
    request_uri = "" if "Authorization" in request.headers else request.environ.get("RAW_URI", "")
    status, headers, body = item_reads.answer(
        resource, item_id, missing, request_uri=request_uri,
        refresh_token_sent=request.headers.get(item_reads.REFRESH_HEADER, ""),
    )
    return Response(body, status, headers)


def cached_list(resource, query, load):
    """A list's JSON response, with its headers, from L2 or from ``load()`` (a ``pack``ed page)."""
    packed, l2 = cache.listing(resource, query, load)
    body, headers = unpack(packed)
    return json_response(body, headers=headers, l2=l2, l1=resource.public)


class TextRule(ma.validate.Regexp):
    """A pattern the whole value must match, stated in /openapi.json.

    ``fullmatch``, as ``$`` alone would let a final newline through. Lone
    surrogates (only a JSON ``\\ud800`` escape makes one; PostgreSQL cannot
    store them) are refused beside the pattern: the regex engines that check
    JSON Schema patterns work on text that cannot hold them.
    """

    _SURROGATE = re.compile(r"[\ud800-\udfff]")

    def __call__(self, value):
        if self.regex.fullmatch(value) is None or self._SURROGATE.search(value):
            raise ma.ValidationError(self.error)
        return value


# C0 and C1 controls, DEL, line and paragraph separators. Everything else,
# emoji sequences included, is text.
printable = TextRule(r"^[^\x00-\x1f\x7f-\x9f\u2028\u2029]*$", error="Must not contain control characters.")
printable_with_line_breaks = TextRule(
    r"^[^\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]*$",
    error="Must not contain control characters other than newlines and tabs.",
)


class TrimmedSchema(ma.Schema):
    """Strips surrounding whitespace from every string field before
    validation, but those named in ``UNTRIMMED`` (a password's spaces are part of it)."""

    UNTRIMMED = frozenset()

    @ma.pre_load
    def strip_strings(self, data, **kwargs):
        if isinstance(data, dict):
            return {k: v.strip() if isinstance(v, str) and k not in self.UNTRIMMED else v for k, v in data.items()}
        return data


class MessageSchema(ma.Schema):
    message = ma.fields.String()
