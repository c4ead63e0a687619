"""Reads of one cached item: one answer, given by the item views and, before
Flask, by a WSGI layer for anonymous reads of public items.

``answer`` is the whole of an item read: L2, else PostgreSQL (cache.py), and
what L1 may keep (responses.L1_CACHEABLE). L1 keeps an item only under its
canonical URI (``/users/1``, not ``/users/01`` or ``/users/1?x=2``), the one
the relay has nginx fetch again after a change, and keeps a 404 only from
that refresh (``REFRESH_HEADER``), where it replaces a deleted item. A view
declares itself the read of a resource's item with ``Blueprint.item_of``
(blueprints/__init__.py), and that declaration is all this layer reads: it
matches routes with Flask's URL map, so both paths answer one route table
from one cache.

The layer answers ``GET``/``HEAD`` of those routes with no query string and no
``Authorization`` header (an authorized answer must say ``private``), hits and
misses alike, in a third less worker CPU than through Flask (make bench,
docs/benchmarks.md). Everything else goes to Flask, and so does a read whose
database call fails, for Flask's error handlers to answer.
"""

import hashlib
import hmac

import psycopg2
from flask import current_app
from werkzeug.exceptions import HTTPException

import db
from cache import cache
from responses import L1_CACHEABLE, L2_HEADER, error_body

_READS = ("GET", "HEAD")
_STATUS_LINES = {200: "200 OK", 404: "404 NOT FOUND"}

# Sent by the relay (with Cache-Control: no-cache, which makes nginx fetch and
# store afresh): a token only holders of SECRET_KEY can make.
REFRESH_HEADER = "X-L1-Refresh"


def refresh_token(app):
    token = app.extensions.get("l1_refresh_token")
    if token is None:
        token = hmac.new(app.config["SECRET_KEY"].encode(), b"l1-refresh", hashlib.sha256).hexdigest()
        app.extensions["l1_refresh_token"] = token
    return token


def canonical_uri(resource, item_id):
    """The one URI under which L1 keeps an item of ``resource``, or None."""
    if resource.item_route is None:
        return None
    endpoint, arg = resource.item_route
    return current_app.extensions["item_routes"].build(endpoint, {arg: item_id})


def answer(resource, item_id, missing, request_uri="", refresh_token_sent=""):
    """(status, headers, body) of a read of one item of ``resource``.

    ``missing``: the 404's message, with ``{}`` for the id. ``request_uri``:
    as the client sent it; L1 may keep the answer only if it is the item's
    canonical URI. ``refresh_token_sent``: the request's REFRESH_HEADER.
    """
    canonical = resource.public and request_uri == canonical_uri(resource, item_id)
    body, l2 = cache.item(resource, item_id, l1_mark=canonical)
    if body is None:
        refresh = canonical and hmac.compare_digest(refresh_token_sent, refresh_token(current_app))
        status, body, cacheable = 404, error_body(404, missing.format(item_id)), refresh
    else:
        status, cacheable = 200, canonical
    body = (body + "\n").encode()  # JSON answers end with a newline, as Flask's do
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body))), (L2_HEADER, l2)]
    if cacheable:
        headers.append(L1_CACHEABLE)
    return status, headers, body


class ItemReads:
    """WSGI middleware around Flask's own ``wsgi_app``."""

    def __init__(self, app, wsgi_app, items):
        self.app = app
        self.wsgi_app = wsgi_app
        self.items = items
        # One adapter for every request: matching reads the map and changes nothing.
        self.routes = app.extensions["item_routes"]

    def __call__(self, environ, start_response):
        method = environ["REQUEST_METHOD"]
        if method in _READS and not environ.get("QUERY_STRING") and "HTTP_AUTHORIZATION" not in environ:
            read = self._item_read(environ)
            if read is not None:
                try:
                    with self.app.app_context():
                        status, headers, body = answer(
                            *read, request_uri=environ.get("RAW_URI", ""),
                            refresh_token_sent=environ.get("HTTP_X_L1_REFRESH", ""),
                        )
                except (db.PoolTimeout, psycopg2.Error):
                    return self.wsgi_app(environ, start_response)  # Flask's error handlers answer
                start_response(_STATUS_LINES[status], headers)
                return [] if method == "HEAD" else [body]
        return self.wsgi_app(environ, start_response)

    def _item_read(self, environ):
        """(resource, id, missing) if the path is a declared item route."""
        try:
            rule, args = self.routes.match(environ["PATH_INFO"], method="GET", return_rule=True)
        except HTTPException:  # no such route (or a redirect): Flask answers
            return None
        item = self.items.get(rule.endpoint)
        if item is None:
            return None
        environ["api.route"] = rule.rule  # for the request's metrics (request_log.py)
        resource, missing, id_arg = item
        return resource, args[id_arg], missing


def _declared_items(app):
    """endpoint -> (resource, missing, id argument) of every view declared with
    ``item_of``, checked against the URL map now rather than on a request;
    each resource learns its item route (its canonical URI)."""
    items = {}
    for blueprint in app.blueprints.values():
        for view_name, (resource, missing) in getattr(blueprint, "item_views", {}).items():
            endpoint = f"{blueprint.name}.{view_name}"
            arguments = {arg for rule in app.url_map.iter_rules(endpoint) for arg in rule.arguments}
            if len(arguments) != 1:
                raise RuntimeError(f"{endpoint}: item_of needs a route with one argument, the id; it has {arguments}")
            if not resource.public:
                raise RuntimeError(f"{endpoint}: item_of answers anyone, and {resource.ns} is not public")
            items[endpoint] = (resource, missing, arguments.pop())
            resource.item_route = (endpoint, items[endpoint][2])
        for view_name, (resource, query_arg) in getattr(blueprint, "query_item_views", {}).items():
            resource.item_route = (f"{blueprint.name}.{view_name}", query_arg)
    return items


def init_app(app):
    app.extensions["item_routes"] = app.url_map.bind("localhost")
    items = _declared_items(app)
    if not app.extensions["cache"].enabled:
        return  # no L2 (CACHE_ENABLED=false): Flask answers everything
    app.wsgi_app = ItemReads(app, app.wsgi_app, items)
    app.extensions["item_reads"] = app.wsgi_app
