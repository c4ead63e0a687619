"""The cached resources: each declared once, by its blueprint, and read by
every path (the item and list reads, the fast path, the invalidation).

A declaration (``Resource``) says the namespace of the resource's keys, the
table whose rows are its items, how an item is loaded, whether it has cached
lists and whether anyone may read it. Each app keeps its own ``Registry``
(``app.extensions["cache"].resources``): the resources a table's changes
invalidate, and the route of each public resource's item read, whose URI is
the one under which L1 keeps the item (its canonical URI).

Its keys in Redis (cache/l2.py), each behind the ``FORMAT`` prefix:

``ns:item:ID``       an item's cached body, ``CACHE_TTL`` seconds
``ns:item:ID:ver``   a token replaced by every change of the item
``ns:item:ID:l1``    set while L1 may hold the item (under its canonical URI), for the relay to refresh
``ns:gen``           the list generation; one INCR retires every cached list
``ns:list:GEN:Q``    a list body for query ``Q`` under generation ``GEN``
``ns:lists:GEN``     how many lists generation ``GEN`` has stored
"""

import functools

import flask

from cache import reads
from cache.l2 import FORMAT


class Resource:
    """A cached resource: its items are the rows of ``table``, each named by
    its primary key (the key the table's trigger notes), and ``load(id)``
    gives an item's JSON text, or None when there is none.

    ``lists``: the resource has cached lists, which any change retires.
    ``public``: anyone may read an item, so L1 may keep it (and the relay refreshes it there).
    """

    def __init__(self, ns, table, load, lists=False, public=True):
        self.ns, self.table, self.load, self.lists, self.public = ns, table, load, lists, public

    def item_keys(self, item_id):
        """The keys of one item: value, version token, L1 mark."""
        key = f"{FORMAT}:{self.ns}:item:{item_id}"
        return key, f"{key}:ver", f"{key}:l1"

    @property
    def generation_key(self):
        return f"{FORMAT}:{self.ns}:gen"

    def list_key_parts(self, query):
        """A list key is prefix + generation + suffix."""
        return f"{FORMAT}:{self.ns}:list:", f":{query}"

    def list_count_key(self, gen):
        return f"{FORMAT}:{self.ns}:lists:{gen}"

    def __repr__(self):
        return f"Resource({self.ns!r})"


class Registry:
    """One app's declared resources, and the item read routes L1 keeps them under."""

    def __init__(self):
        self.by_table = {}  # table -> [Resource]
        self.item_views = {}  # endpoint -> (resource, missing): views declared with item_of
        self._item_routes = {}  # Resource -> (endpoint, argument): the canonical URI's route
        self.urls = None  # the URL map, bound once the blueprints are registered
        # Built once per item (up to 4096), not on every read (docs/performance.md).
        self.canonical_uri = functools.lru_cache(maxsize=4096)(self._canonical_uri)

    def declare(self, resource):
        self.by_table.setdefault(resource.table, []).append(resource)

    def route_item_reads(self, resource, endpoint, argument):
        """``endpoint``'s route, with ``argument`` the item's id, reads items of ``resource``."""
        self._item_routes[resource] = (endpoint, argument)

    def bind_routes(self, url_map):
        """Check the item views against the app's routes, now rather than on a
        request; returns endpoint -> (resource, missing, id argument)."""
        self.urls = url_map.bind("localhost")
        views = {}
        for endpoint, (resource, missing) in self.item_views.items():
            arguments = {arg for rule in url_map.iter_rules(endpoint) for arg in rule.arguments}
            if len(arguments) != 1:
                raise RuntimeError(f"{endpoint}: item_of needs a route with one argument, the id; it has {arguments}")
            if not resource.public:
                raise RuntimeError(f"{endpoint}: item_of answers anyone, and {resource.ns} is not public")
            views[endpoint] = (resource, missing, arguments.pop())
            self.route_item_reads(resource, endpoint, views[endpoint][2])
        return views

    def has_item_route(self, resource):
        return resource in self._item_routes

    def _canonical_uri(self, resource, item_id):
        """The one URI under which L1 keeps an item of ``resource``, or None."""
        route = self._item_routes.get(resource)
        if route is None:
            return None
        endpoint, argument = route
        return self.urls.build(endpoint, {argument: item_id})

    def touched_by(self, changes):
        """The (resource, id) items and the list-owning resources that
        ``changes`` ({table: [keys]}) invalidate."""
        items, lists = [], set()
        for table, keys in changes.items():
            for resource in self.by_table.get(table, ()):
                items += [(resource, key) for key in keys]
                if resource.lists:
                    lists.add(resource)
        return items, lists


class DeclaringBlueprint:
    """What a blueprint (blueprints/__init__.py) declares of the cache: its
    cached resources and the views that read one item of one."""

    def cached_resource(self, ns, table, load, lists=False, public=True, query_item_view=None):
        """Declare a cached resource (``Resource``): its items are the rows of
        ``table``, which the capture triggers of init.sql must watch.
        ``query_item_view``: (view class name, query argument) of a view that
        reads an item named in its query string; one named in its path says
        so with ``item_of``."""
        resource = Resource(ns, table, load, lists=lists, public=public)

        def register(state):
            registry = state.app.extensions["cache"].resources
            registry.declare(resource)
            if query_item_view:
                view_name, query_arg = query_item_view
                registry.route_item_reads(resource, f"{state.name}.{view_name}", query_arg)

        self.record_once(register)
        return resource

    def item_of(self, resource, missing):
        """Decorates a MethodView's ``get``, which then answers the item of
        ``resource`` that the route's one argument names, or a 404 saying
        ``missing`` (``{}`` for the id). Its body is not run: the answer is
        cache/reads.py's ``answer``, which the fast path there also gives,
        before Flask, to anonymous reads of a public resource."""
        def decorator(get):
            view_name = get.__qualname__.split(".")[-2]  # the view class
            self.record_once(lambda state: state.app.extensions["cache"].resources.item_views.update(
                {f"{state.name}.{view_name}": (resource, missing)}))

            @functools.wraps(get)
            def view(_self, **route_args):
                (item_id,) = route_args.values()
                return reads.item_response(resource, item_id, missing, flask.request)

            return view

        return decorator
