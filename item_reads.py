"""Reads of one cached item: one answer, given by the item views and, before
Flask, by a WSGI layer for anonymous reads of public items.

``answer`` is the whole of an item read: L2, else PostgreSQL (cache.py), and
what L1 may keep (responses.L1_CACHEABLE: an item, or the 404 that replaces a
deleted one when a client asked for a fresh answer). A view declares itself
the read of a resource's item with ``Blueprint.item_of`` (blueprints/__init__.py),
and that declaration is all this layer reads: it matches routes with Flask's
URL map, so both paths answer one route table from one cache.

The layer answers ``GET``/``HEAD`` of those routes with no query string and no
``Authorization`` header (an authorized answer must say ``private``), hits and
misses alike, in a third less worker CPU than through Flask (make bench,
docs/benchmarks.md). Everything else goes to Flask, and so does a read whose
database call fails, for Flask's error handlers to answer.
"""

import psycopg2
from werkzeug.exceptions import HTTPException

import db
from cache import cache
from responses import L1_CACHEABLE, L2_HEADER, error_body

_READS = ("GET", "HEAD")
_STATUS_LINES = {200: "200 OK", 404: "404 NOT FOUND"}


def answer(resource, item_id, missing, l1_uri="", refresh=False):
    """(status, headers, body) of a read of one item of ``resource``.

    ``missing``: the 404's message, with ``{}`` for the id. ``l1_uri``: the
    URI under which L1 may store the answer. ``refresh``: the client sent
    ``Cache-Control: no-cache``, so L1 replaces its entry with this answer,
    a 404 included.
    """
    body, l2 = cache.item(resource, item_id, l1_uri if resource.public else "")
    if body is None:
        status, body, cacheable = 404, error_body(404, missing.format(item_id)), refresh
    else:
        status, cacheable = 200, True
    body = (body + "\n").encode()  # JSON answers end with a newline, as Flask's do
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body))), (L2_HEADER, l2)]
    if cacheable and resource.public:
        headers.append(L1_CACHEABLE)
    return status, headers, body


def wants_refresh(cache_control):
    """A client's ``Cache-Control: no-cache`` (nginx/http.conf, $api_cache_refresh)."""
    return "no-cache" in cache_control.lower()


class ItemReads:
    """WSGI middleware around Flask's own ``wsgi_app``."""

    def __init__(self, app, wsgi_app):
        self.app = app
        self.wsgi_app = wsgi_app
        self.items = _declared_items(app)
        # One adapter for every request: matching reads the map and changes nothing.
        self.routes = app.url_map.bind("localhost")

    def __call__(self, environ, start_response):
        method = environ["REQUEST_METHOD"]
        if method in _READS and not environ.get("QUERY_STRING") and "HTTP_AUTHORIZATION" not in environ:
            read = self._item_read(environ)
            if read is not None:
                try:
                    with self.app.app_context():
                        status, headers, body = answer(
                            *read, l1_uri=environ.get("RAW_URI", ""),
                            refresh=wants_refresh(environ.get("HTTP_CACHE_CONTROL", "")),
                        )
                except (db.PoolTimeout, psycopg2.Error):
                    return self.wsgi_app(environ, start_response)  # Flask's error handlers answer
                start_response(_STATUS_LINES[status], headers)
                return [] if method == "HEAD" else [body]
        return self.wsgi_app(environ, start_response)

    def _item_read(self, environ):
        """(resource, id, missing) if the path is a declared item route."""
        try:
            endpoint, args = self.routes.match(environ["PATH_INFO"], method="GET")
        except HTTPException:  # no such route (or a redirect): Flask answers
            return None
        item = self.items.get(endpoint)
        if item is None:
            return None
        resource, missing, id_arg = item
        return resource, args[id_arg], missing


def _declared_items(app):
    """endpoint -> (resource, missing, id argument) of every view declared with
    ``item_of`` whose resource is public, checked against the URL map now
    rather than on a request."""
    items = {}
    for blueprint in app.blueprints.values():
        for view_name, (resource, missing) in getattr(blueprint, "item_views", {}).items():
            endpoint = f"{blueprint.name}.{view_name}"
            arguments = {arg for rule in app.url_map.iter_rules(endpoint) for arg in rule.arguments}
            if len(arguments) != 1:
                raise RuntimeError(f"{endpoint}: item_of needs a route with one argument, the id; it has {arguments}")
            if resource.public:
                items[endpoint] = (resource, missing, arguments.pop())
    return items


def init_app(app):
    if not app.extensions["cache"].enabled:
        return  # no L2 (CACHE_ENABLED=false): Flask answers everything
    app.wsgi_app = ItemReads(app, app.wsgi_app)
    app.extensions["item_reads"] = app.wsgi_app
