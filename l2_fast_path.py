"""L2 hits of public items, answered before Flask.

An L2 hit of a public item (``GET /users/<id>``, ``GET /incident/get/<id>``)
needs the route's id and one Redis ``MGET``: no validation, no database, no
schema. Through Flask, the request context, URL adapter, view wrappers and
response object took a third of the worker's CPU per hit (make bench: 0.68
of a bare Flask view's throughput through Flask; answered here, 0.93-0.98).

This layer answers exactly those hits, with the bytes and headers the view
sends for them (tests/test_l2_fast_path.py compares the two), and hands every
other request to Flask: other routes and methods, a query string, an
``Authorization`` header (its answer must say ``private``), Redis errors, any
time cache.py has stopped reading from Redis, and misses (with the lookup
already made, which the view goes on from). Routes come from
Flask's URL map, and a view opts in with ``Blueprint.public_item`` beside its
``cached_item`` call, so both paths read one route table and one cache.
"""

from werkzeug.exceptions import HTTPException

from cache import HIT, LOOKED_UP, item_keys
from responses import L2_HEADER

_READS = ("GET", "HEAD")


class L2FastPath:
    """WSGI middleware around Flask's own ``wsgi_app``."""

    def __init__(self, app, wsgi_app):
        self.wsgi_app = wsgi_app
        self.backend = app.extensions["cache"]
        self.items = _declared_items(app)
        # One adapter for every request: matching reads the map and changes nothing.
        self.routes = app.url_map.bind("localhost")

    def __call__(self, environ, start_response):
        method = environ["REQUEST_METHOD"]
        if method in _READS and not environ.get("QUERY_STRING") and "HTTP_AUTHORIZATION" not in environ:
            body = self._cached_body(environ)
            if body is not None:
                start_response("200 OK", [
                    ("Content-Type", "application/json"),
                    ("Content-Length", str(len(body))),
                    (L2_HEADER, HIT),
                ])
                return [] if method == "HEAD" else [body]
        return self.wsgi_app(environ, start_response)

    def _cached_body(self, environ):
        try:
            endpoint, args = self.routes.match(environ["PATH_INFO"], method="GET")
        except HTTPException:  # no such route (or a redirect): Flask answers
            return None
        item = self.items.get(endpoint)
        if item is None:
            return None
        ns, id_arg = item
        keys = item_keys(ns, args[id_arg])
        found = self.backend.read(lambda backend: backend.mget(*keys))
        if found is None:  # reads paused, or Redis failed just now
            return None
        body, version = found
        if body is None:
            environ[LOOKED_UP] = (keys, version)
            return None
        return body + b"\n"  # the view's responses end with a newline too


def _declared_items(app):
    """endpoint -> (ns, id argument) of every view declared with ``public_item``,
    checked against the URL map now rather than on a request."""
    items = {}
    for blueprint in app.blueprints.values():
        for view_name, item in getattr(blueprint, "public_items", {}).items():
            items[f"{blueprint.name}.{view_name}"] = item
    for endpoint, (ns, id_arg) in items.items():
        rules = [rule for rule in app.url_map.iter_rules() if rule.endpoint == endpoint]
        if not any(id_arg in rule.arguments and "GET" in rule.methods for rule in rules):
            raise RuntimeError(f"{endpoint}: public_item names {id_arg!r}, which no GET route of it has")
    return items


def init_app(app):
    if not app.extensions["cache"].enabled:
        return  # no L2 (CACHE_ENABLED=false): nothing to answer from
    app.wsgi_app = L2FastPath(app, app.wsgi_app)
    app.extensions["l2_fast_path"] = app.wsgi_app
