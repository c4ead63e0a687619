"""Where a cached read is answered: an item (by its view, or before Flask by
the fast path) and a list, from L2, else PostgreSQL, with what L1 may keep.

``answer`` is the whole of an item read: L2 (cache/l2.py), and what L1 may
keep (cache/l1.py). A view declares itself the read of a resource's item
with ``Blueprint.item_of`` (cache/resources.py), and that declaration is all
the fast path reads: it matches routes with Flask's URL map, so both paths
answer one route table from one cache.

The fast path (``FastItemReads``) answers ``GET``/``HEAD`` of those routes
with no query string and no ``Authorization`` header (an authorized answer
must say ``private``), hits and misses alike, at a fraction of Flask's cost
(docs/performance.md). Everything else goes to Flask, and so does
a read whose database call fails, for Flask's error handlers to answer.
"""

import hmac

import psycopg2
from flask import Response, current_app
from werkzeug.exceptions import HTTPException

from cache import l1, l2
from infra import db, request_log
from infra.errors import error_body
from infra.responses import json_response, unpack

_READS = ("GET", "HEAD")
_STATUS_LINES = {200: "200 OK", 404: "404 NOT FOUND"}


def answer(levels, resource, item_id, missing, request_uri="", refresh_token_sent="", load=None):
    """(status, headers, body) of a read of one item of ``resource``, from
    ``levels`` (the app's ``Levels``).

    ``missing``: the 404's message, with ``{}`` for the id. ``request_uri``:
    as the client sent it; L1 may keep the answer only if it is the item's
    canonical URI. ``refresh_token_sent``: the request's l1.REFRESH_HEADER.
    ``load()``: the item from PostgreSQL (L2.item's).
    """
    canonical = resource.public and request_uri == levels.resources.canonical_uri(resource, item_id)
    body, l2_status = levels.l2.item(resource, item_id, l1_mark=canonical, load=load)
    if body is None:
        # Bytes: compare_digest refuses text that is not ASCII, which any client may send.
        refresh = canonical and hmac.compare_digest(refresh_token_sent.encode("utf-8", "surrogateescape"),
                                                    levels.refresh_token.encode())
        status, body, cacheable = 404, error_body(404, missing.format(item_id)), refresh
    else:
        status, cacheable = 200, canonical
    body = (body + "\n").encode()  # JSON answers end with a newline, as Flask's do
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body))), (l2.HEADER, l2_status)]
    if cacheable:
        headers.append(l1.CACHEABLE)
    return status, headers, body


def item_response(resource, item_id, missing, request):
    """``request``'s read of one item of ``resource`` (``answer``), through Flask."""
    # L1 never stores an authorized answer (nginx/cache.conf): nothing to mark for it.
    uri = "" if "Authorization" in request.headers else l1.request_uri(request.environ)
    status, headers, body = answer(current_app.extensions["cache"], resource, item_id, missing, request_uri=uri,
                                   refresh_token_sent=request.headers.get(l1.REFRESH_HEADER, ""))
    return Response(body, status, headers)


def list_response(resource, query, load):
    """A list's JSON response, with its headers, from L2 or from ``load()`` (a ``pack``ed page)."""
    packed, l2_status = l2.of_app().listing(resource, query, load)
    body, headers = unpack(packed)
    response = json_response(body, headers=headers)
    response.headers[l2.HEADER] = l2_status
    if resource.public:
        response.headers.set(*l1.CACHEABLE)
    return response


class FastItemReads:
    """WSGI middleware around Flask's own ``wsgi_app``: anonymous reads of
    the declared item routes answered before Flask. Only a read that goes
    to PostgreSQL enters the app's context (the connection pool's)."""

    # Paths of item reads remembered, and the longest remembered (matching a
    # path each time: docs/performance.md). Bounded, as clients choose the paths.
    REMEMBERED_PATHS = 4096
    REMEMBERED_PATH_LENGTH = 128

    def __init__(self, app, wsgi_app, item_views):
        self.app = app
        self.wsgi_app = wsgi_app
        self.item_views = item_views  # endpoint -> (resource, missing, id argument)
        self.levels = app.extensions["cache"]
        # One adapter for every request: matching reads the map and changes nothing.
        self.routes = self.levels.resources.urls
        self.item_reads = {}  # path -> (resource, id, missing, route)

    def __call__(self, environ, start_response):
        method = environ["REQUEST_METHOD"]
        if method in _READS and not environ.get("QUERY_STRING") and "HTTP_AUTHORIZATION" not in environ:
            read = self._item_read(environ["PATH_INFO"])
            if read is not None:
                resource, item_id, missing, route = read
                request_log.note_route(environ, route)
                try:
                    status, headers, body = answer(
                        self.levels, resource, item_id, missing, request_uri=l1.request_uri(environ),
                        refresh_token_sent=environ.get(l1.REFRESH_ENVIRON, ""),
                        load=lambda: self._load(resource, item_id),
                    )
                except (db.PoolTimeout, psycopg2.Error):
                    return self.wsgi_app(environ, start_response)  # Flask's error handlers answer
                start_response(_STATUS_LINES[status], headers)
                return [] if method == "HEAD" else [body]
        return self.wsgi_app(environ, start_response)

    def _load(self, resource, item_id):
        with self.app.app_context():  # the pool's; the connection goes back to it as the context ends
            return resource.load(item_id)

    def _item_read(self, path):
        """(resource, id, missing, route) if ``path`` is a declared item route."""
        read = self.item_reads.get(path)
        if read is None:
            read = self._match(path)
            if read is not None and len(path) <= self.REMEMBERED_PATH_LENGTH:
                if len(self.item_reads) >= self.REMEMBERED_PATHS:
                    self.item_reads.clear()
                self.item_reads[path] = read
        return read

    def _match(self, path):
        try:
            rule, args = self.routes.match(path, method="GET", return_rule=True)
        except HTTPException:  # no such route (or a redirect): Flask answers
            return None
        view = self.item_views.get(rule.endpoint)
        if view is None:
            return None
        resource, missing, id_arg = view
        return resource, args[id_arg], missing, rule.rule


def init_app(app):
    """After the blueprints: check the item views against the routes, and
    answer anonymous item reads before Flask (with L2 off too:
    CACHE_ENABLED=false, each from PostgreSQL)."""
    item_views = app.extensions["cache"].resources.bind_routes(app.url_map)
    app.wsgi_app = FastItemReads(app, app.wsgi_app, item_views)
