"""The API's one error shape, ``{"code", "status", "message", "errors"}``, and
every error the app answers.

``error_body`` is its one definition. Everything that answers an error writes
it: the app's handlers here (every HTTPException, which ``abort(...)``,
routing, validation and the 500 of an unhandled exception raise; database and
pool errors), the cache's fast path (cache/reads.py) and gunicorn's own
refusals (gunicorn.conf.py). nginx writes its own errors from a template
(nginx/errors.conf), which the stack tests check against this definition.
Responses never carry SQL, driver messages or stack traces: those go to the log.
"""

import json
import logging
import re

import psycopg2
import psycopg2.errors
from flask import current_app, request
from flask_smorest import Api, abort
from webargs.flaskparser import FlaskParser, is_json_request
from werkzeug.exceptions import MethodNotAllowed
from werkzeug.http import HTTP_STATUS_CODES

from infra.db import PoolTimeout, unavailable
from infra.responses import json_response, to_json

log = logging.getLogger(__name__)

# Where nginx asks which methods a path allows (nginx/cache.conf, @error_405).
REFUSED_METHOD_PATH = "/_refused-method"

# Unique constraints (init.sql) and what a client is told when it breaks one.
CONFLICT_MESSAGES = {
    "users_email_key": "A user with this email already exists.",
    "accounts_email_key": "An account with this email already exists.",
    "customer_addresses_pkey": "This phone number already has an address.",
}


# The largest body a route reads, unless its schema says otherwise
# (max_body_bytes): twice the longest valid body with every character
# \u-escaped, so no valid request is refused, and a flood of unknown keys
# costs milliseconds of a worker, not most of a second.
MAX_BODY_BYTES = 16 * 1024
# Validation errors listed per location; the rest are counted.
MAX_ERRORS_LISTED = 20


class JSONBodyParser(FlaskParser):
    """Bounds what a body may cost before it is read, and answers 415 when a
    JSON body arrives as another media type.

    webargs would otherwise treat a mistyped body as an empty one and report
    each required field as missing (422), which hides the real mistake.
    """

    def load_json(self, req, schema):
        _refuse_too_large(req, schema)
        return super().load_json(req, schema)

    def load_form(self, req, schema):
        _refuse_too_large(req, schema)
        return super().load_form(req, schema)

    def handle_error(self, error, req, schema, *, error_status_code, error_headers):
        error.messages = {location: _capped(messages) for location, messages in error.messages.items()}
        super().handle_error(error, req, schema, error_status_code=error_status_code, error_headers=error_headers)

    def _raw_load_json(self, req):
        if not is_json_request(req):
            abort(415, message="Send the body as JSON with 'Content-Type: application/json'.")
        try:
            data = super()._raw_load_json(req)
        except RecursionError:  # [[[[... deeper than Python's json can parse
            abort(400, message="The body is nested too deeply.")
        except json.JSONDecodeError:
            raise  # webargs answers it (_handle_invalid_json_error)
        except ValueError:  # an integer literal beyond Python's int_max_str_digits
            abort(400, message="A number in the body has too many digits.")
        if _has_lone_surrogate(req.get_data(cache=True), data):
            # "\ud800" is valid JSON but no text: it cannot be encoded, hashed or stored.
            abort(400, message="The body has a lone UTF-16 surrogate escape, which is not text.")
        return data

    def _handle_invalid_json_error(self, error, req, *args, **kwargs):
        abort(400, message="The body is not valid JSON.")


def _refuse_too_large(req, schema):
    limit = getattr(schema, "max_body_bytes", MAX_BODY_BYTES)
    # nginx always sends a Content-Length; a chunked body from elsewhere is
    # read (Flask stops at MAX_CONTENT_LENGTH) and measured.
    size = req.content_length if req.content_length is not None else len(req.get_data(cache=True))
    if size > limit:
        abort(413, message=f"The body is larger than this operation takes ({limit} bytes).")


def _capped(messages):
    if not isinstance(messages, dict) or len(messages) <= MAX_ERRORS_LISTED:
        return messages
    listed = dict(list(messages.items())[:MAX_ERRORS_LISTED])
    listed["_more"] = [f"{len(messages) - MAX_ERRORS_LISTED} more errors not listed."]
    return listed


# A surrogate can only arrive as a \uD800-\uDFFF escape (UTF-8 cannot carry one).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")


def _has_lone_surrogate(raw, data):
    """Whether ``data`` holds a surrogate not paired into a character. Only a
    body that has such an escape is encoded to find out."""
    if not _SURROGATE_ESCAPE.search(raw):
        return False
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def error_body(code, message=None, errors=None):
    """The API's one error shape (flask-smorest's, whose ErrorSchema documents
    it): {"code", "status", "message", "errors"}, the last two when given."""
    body = {"code": code, "status": HTTP_STATUS_CODES.get(code, "Error")}
    if message is not None:
        body["message"] = message
    if errors is not None:
        body["errors"] = errors
    return to_json(body)


def error_response(code, message=None, headers=None, errors=None):
    return json_response(error_body(code, message, errors), status=code, headers=headers)


class ErrorShapedApi(Api):
    """flask-smorest's Api, whose handler of every HTTPException answers
    ``error_body`` (what ``abort(code, message=..., errors=...)`` gave it)."""

    def handle_http_exception(self, error):
        data = getattr(error, "data", None) or {}
        return error_response(error.code, data.get("message"), data.get("headers"),
                              data.get("errors", data.get("messages")))


def _count(kind):
    current_app.extensions["metrics"].POSTGRES_ERRORS.labels(kind).inc()


def handle_database_error(error):
    if isinstance(error, psycopg2.errors.UniqueViolation):
        _count("conflict")
        constraint = error.diag.constraint_name
        return error_response(409, CONFLICT_MESSAGES.get(constraint, "This record already exists."))
    if isinstance(error, psycopg2.errors.ForeignKeyViolation):
        _count("conflict")
        return error_response(409, "The record refers to, or is referred to by, another record.")
    if isinstance(error, psycopg2.DataError):
        _count("data")
        return error_response(422, "A value is out of range or malformed.")
    if unavailable(error):
        _count("unavailable")
        log.error("database unavailable: %s", error)
        return error_response(503, "The database is unavailable; try again shortly.", {"Retry-After": "1"})
    _count("other")
    log.exception("database error")
    return error_response(500, "Internal server error.")


def handle_method_not_allowed(error):
    """The usual shape, plus the Allow header RFC 9110 asks of every 405."""
    return error_response(405, "The method is not allowed for this URL.", {"Allow": ", ".join(error.valid_methods)})


def refused_method(path):
    """The 405 the app gives to a method ``/path`` does not take, for nginx,
    which refuses TRACE itself and cannot know what a resource allows."""
    allowed = current_app.create_url_adapter(request).allowed_methods("/" + path)
    if not allowed:
        return error_response(404, "No such resource.")
    return handle_method_not_allowed(MethodNotAllowed(allowed))


def handle_pool_timeout(error):
    log.error("no database connection free in time")
    return error_response(503, "The service is busy; try again shortly.", {"Retry-After": "1"})


def init_app(app):
    app.register_error_handler(psycopg2.Error, handle_database_error)
    app.register_error_handler(PoolTimeout, handle_pool_timeout)
    app.register_error_handler(MethodNotAllowed, handle_method_not_allowed)
    app.add_url_rule(f"{REFUSED_METHOD_PATH}/<path:path>", view_func=refused_method)
