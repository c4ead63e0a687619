"""One blueprint per domain; the shared pieces every domain blueprint uses."""

import functools
import re

import flask_smorest
import marshmallow as ma
from flask import request
from flask_smorest.error_handler import ErrorSchema
from werkzeug.http import HTTP_STATUS_CODES

from cache.resources import DeclaringBlueprint
from infra import idempotency
from infra.errors import JSONBodyParser
from infra.responses import to_json
from infra.security import current_account_id

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


class Blueprint(DeclaringBlueprint, flask_smorest.Blueprint):
    """flask-smorest's Blueprint, answering 415 when a JSON body is not JSON,
    with the declarations of the cache levels (cached_resource, item_of)."""

    ARGUMENTS_PARSER = JSONBodyParser()

    def arguments(self, schema, *args, **kwargs):
        """flask-smorest's, given one instance of ``schema``: webargs builds a
        new instance from a class on every request (docs/performance.md)."""
        return super().arguments(schema() if isinstance(schema, type) else schema, *args, **kwargs)

    def errors(self, *codes):
        """Document the error responses a view can give, in the API's error shape."""

        def decorator(view):
            for code in codes:
                view = self.alt_response(
                    code, schema=ErrorSchema, description=HTTP_STATUS_CODES[code]
                )(view)
            return view

        return decorator

    def idempotent(self, per_account=False):
        """Takes an optional Idempotency-Key header: a retry with the same key
        and request gets the first answer and creates nothing (infra/idempotency.py).

        Placed between ``@blp.arguments``, whose parsed body identifies the
        request, and ``@blp.response``, whose answer is kept; below
        ``@jwt_required`` when ``per_account``. An account's keys are its own;
        an anonymous route's are shared by every client of that route, which
        has no identity to tell them apart (docs/api.md says why that is safe).
        """

        def decorator(view):
            @functools.wraps(view)
            def wrapper(view_self, *args, idempotency_header, **kwargs):
                key = idempotency_header.get("key")
                if key is None:
                    return view(view_self, *args, **kwargs)
                scope = f"account {current_account_id()}" if per_account else f"{request.method} {request.path}"
                return idempotency.answer_once(scope, key, [request.method, request.path, args, kwargs],
                                               lambda: view(view_self, *args, **kwargs))

            documented = self.errors(409)(wrapper)
            return self.arguments(IdempotencyKeySchema, location="headers", arg_name="idempotency_header")(documented)

        return decorator


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


class IdempotencyKeySchema(ma.Schema):
    key = ma.fields.String(
        data_key="Idempotency-Key",
        validate=TextRule(r"^[!-~]{1,255}$", error="1 to 255 visible ASCII characters, no spaces (a UUID is one)."),
        metadata={
            "description": "optional; 1 to 255 visible ASCII characters, e.g. a UUID. A retry with the same key"
            " and request within IDEMPOTENCY_KEY_TTL (24 h) gets the first answer again, with"
            " Idempotent-Replayed: true, and creates nothing; another request with the key is a 422;"
            " a retry while the first still runs is a 409 with Retry-After"
        },
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
