"""L2: Redis cache-aside over declared resources, fail-open. The only module that talks to Redis for caching.

Each cached resource is declared once (``Resource``, by its blueprint): its
namespace, the table whose rows are its items, how an item is loaded and
whether it has cached lists. Its keys, each behind the ``FORMAT`` prefix:

``ns:item:ID``       an item's cached body, ``CACHE_TTL`` seconds
``ns:item:ID:ver``   a token replaced by every change of the item
``ns:item:ID:l1``    set while L1 may hold the item (under its one canonical URI), for the relay to refresh
``ns:gen``           the list generation; one INCR retires every cached list
``ns:list:GEN:Q``    a list body for query ``Q`` under generation ``GEN``
``ns:lists:GEN``     how many lists generation ``GEN`` has stored

What one client can make L2 hold is bounded: a value over
``CACHE_MAX_VALUE_BYTES`` is served but not stored, and a generation stores
at most ``CACHE_MAX_LISTS`` lists each ``CACHE_TTL`` (any cursor and page
size make a new query); past that, lists come from PostgreSQL until a change
starts a new generation.

Invalidation comes from the database, not from the views: a trigger notes
every committed change of a cached table (init.sql), and ``apply`` turns the
changes into invalidations twice: at once, after the commit of the request
or task that wrote (``db.after_commit``), and durably, by the relay
(relay.py), which reads the noted changes until Redis has taken them.

L2 is read only while ``CAUGHT_UP`` exists: the relay sets it, for
``CAUGHT_UP_SECONDS``, each time it has applied every change committed before
it looked. So no answer from L2 is more than that behind the database,
whatever died or was cut off: the writer, the relay, or their links to Redis.

The refill race (a reader loads a row, a writer commits and invalidates, the
reader then stores the row it loaded) is closed without locks: a reader notes
the item's version token before it loads, and stores its result only if the
token is unchanged, checked and written atomically in Redis. A list read notes
the generation before it loads and stores under that generation, which a
change has already retired.

Redis trouble never fails a request: every call has a short timeout and no
retries, errors are logged and the request is served from PostgreSQL; after
an error, reads skip Redis for ``CACHE_RETRY_AFTER`` seconds.
"""

import logging
import os
import secrets
import threading
import time

import redis
from flask import current_app

import db
import metrics

log = logging.getLogger(__name__)

HIT, MISS, DOWN, OFF = "HIT", "MISS", "DOWN", "OFF"

# Part of every key: bump it when the cached format changes, so a deploy never
# serves bodies an older release stored.
FORMAT = "v1"

# Outlives any load that started before a write (statement_timeout is seconds).
VERSION_TTL = 300

CAUGHT_UP = f"{FORMAT}:relay:caught-up"
# The L2 staleness bound: how long one "caught up" of the relay is believed.
CAUGHT_UP_SECONDS = 1.0

# How long an item is marked as possibly held by L1: longer than any L1
# entry lives (responses.L1_CACHEABLE) plus the slowest request.
L1_MARK_TTL = 60

# KEYS: value, version, L1 mark, caught-up. ARGV: how long to mark the item
# as held by L1 ('' for not at all). The mark is set before the value is
# read, so a change the relay applies after this read finds it and has L1
# fetch the item again.
_LOOKUP_ITEM = """
if ARGV[1] ~= '' then
  redis.call('SET', KEYS[3], '1', 'EX', ARGV[1])
end
return redis.call('MGET', KEYS[1], KEYS[2], KEYS[4])
"""

# KEYS: value, version. ARGV: version seen before loading ('' if none), value, ttl.
_STORE_IF_UNCHANGED = """
if (redis.call('GET', KEYS[2]) or '') == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0
"""

# KEYS: generation, caught-up. ARGV: list key prefix, list key suffix, a random start.
# Returns {value, generation, caught-up}. A missing generation starts at a random
# number, so a generation lost to eviction never revives lists cached under an old one.
_LOOKUP_LIST = """
local gen = redis.call('GET', KEYS[1])
if not gen then
  redis.call('SET', KEYS[1], ARGV[3], 'NX')
  gen = redis.call('GET', KEYS[1])
end
return {redis.call('GET', ARGV[1] .. gen .. ARGV[2]), gen, redis.call('GET', KEYS[2])}
"""


# KEYS: list key, the generation's list count. ARGV: value, ttl, most lists.
_STORE_LIST = """
local stored = redis.call('INCR', KEYS[2])
if stored == 1 then
  redis.call('EXPIRE', KEYS[2], ARGV[2])
end
if stored > tonumber(ARGV[3]) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""


class Resource:
    """A cached resource: its items are the rows of ``table``, each named by
    its primary key (the key the table's trigger notes), and ``load(id)``
    gives an item's JSON text, or None when there is none.

    ``lists``: the resource has cached lists, which any change retires.
    ``public``: anyone may read an item, so L1 may keep it (and the relay refreshes it there).
    Declared by a blueprint with ``Blueprint.cached_resource``.
    """

    def __init__(self, ns, table, load, lists=False, public=True):
        self.ns, self.table, self.load, self.lists, self.public = ns, table, load, lists, public
        # (endpoint, argument) of the view that reads an item: its canonical
        # URI, the one L1 keeps (item_reads.py sets it from the declarations).
        self.item_route = None

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


class _Backend:
    """One app's Redis settings and scripts, each thread's connection, and when reads may try Redis again."""

    def __init__(self, cfg):
        self._url = cfg["REDIS_URL"]
        self._timeout = cfg["CACHE_TIMEOUT"]
        self._local = threading.local()
        # Scripts run on the caller's connection (client=...); this one only computes their SHA.
        template = redis.Redis.from_url(self._url)
        self._store_if_unchanged = template.register_script(_STORE_IF_UNCHANGED)
        self._lookup_list = template.register_script(_LOOKUP_LIST)
        self._store_list = template.register_script(_STORE_LIST)
        self.enabled = cfg["CACHE_ENABLED"]
        self.ttl = cfg["CACHE_TTL"]
        self.max_value_bytes, self.max_lists = cfg["CACHE_MAX_VALUE_BYTES"], cfg["CACHE_MAX_LISTS"]
        self.retry_after = cfg["CACHE_RETRY_AFTER"]
        self.down_until = 0.0

    @property
    def client(self):
        """This thread's own connection to Redis, opened on first use.

        A connection per thread skips the pool's checkout, release and lock on
        every call (a third of a cache hit's time in redis-py). The pid check
        keeps a forked child (Celery's pool) from sharing its parent's socket.
        """
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            local.client = redis.Redis.from_url(
                self._url,
                single_connection_client=True,
                socket_timeout=self._timeout,
                socket_connect_timeout=self._timeout,
                retry=None,
                retry_on_timeout=False,
                health_check_interval=0,
            )
            local.pid = os.getpid()
        return local.client

    def _call(self, *args):
        """One command on this thread's connection itself. The client's per-call
        layers (retry wrapper, command lookup, response callbacks) cost as much
        CPU as the round trip; the connection still raises redis-py's errors
        and drops a failed socket, to reconnect on the next call."""
        conn = self.client.connection
        conn.send_command(*args)
        return conn.read_response()

    def lookup_item(self, keys, l1_mark):
        """(cached value or None, version token), or None while the relay is
        not caught up. ``l1_mark``: L1 may store the answer (see _LOOKUP_ITEM)."""
        key, ver_key, l1_key = keys
        if l1_mark:
            value, version, caught_up = self._call("EVAL", _LOOKUP_ITEM, 4, key, ver_key, l1_key, CAUGHT_UP,
                                                   L1_MARK_TTL)
        else:
            value, version, caught_up = self._call("MGET", key, ver_key, CAUGHT_UP)
        return None if caught_up is None else (value, version)

    def store_item(self, keys, version, value):
        key, ver_key, _ = keys
        self._store_if_unchanged(keys=[key, ver_key], args=[version or b"", value, self.ttl], client=self.client)

    def lookup_list(self, resource, query):
        """(cached value or None, generation), or None while the relay is not caught up."""
        prefix, suffix = resource.list_key_parts(query)
        value, gen, caught_up = self._lookup_list(
            keys=[resource.generation_key, CAUGHT_UP], args=[prefix, suffix, secrets.randbelow(2**62)],
            client=self.client,
        )
        return None if caught_up is None else (value, gen)

    def store_list(self, resource, query, gen, value):
        prefix, suffix = resource.list_key_parts(query)
        gen = gen.decode()
        self._store_list(keys=[f"{prefix}{gen}{suffix}", resource.list_count_key(gen)],
                         args=[value, self.ttl, self.max_lists], client=self.client)

    def storable(self, value):
        # UTF-8 takes at most 4 bytes a character: most values need no encoding to tell.
        return len(value) * 4 <= self.max_value_bytes or len(value.encode()) <= self.max_value_bytes

    def readable(self):
        return self.enabled and time.monotonic() >= self.down_until

    def read(self, lookup):
        """``lookup(self)``'s result, or None when reads are off or Redis fails
        (which pauses reads for ``retry_after``)."""
        if not self.readable():
            return None
        try:
            return lookup(self)
        except redis.RedisError as error:
            self.failed("read", error)
            return None

    def invalidate(self, items, lists):
        """In one transaction: a new version token and no value for each
        (resource, id) of ``items``, a new generation for each resource of ``lists``."""
        pipe = self.client.pipeline(transaction=True)
        for resource, item_id in items:
            key, ver_key, _ = resource.item_keys(item_id)
            pipe.set(ver_key, secrets.token_hex(8), ex=VERSION_TTL)
            pipe.delete(key)
        for resource in lists:
            pipe.incr(resource.generation_key)
        pipe.execute()

    def held_by_l1(self, items):
        """Those (resource, id) of ``items`` that L1 may hold."""
        if not items:
            return []
        marks = self.client.mget([resource.item_keys(item_id)[2] for resource, item_id in items])
        return [item for item, mark in zip(items, marks) if mark is not None]

    def mark_caught_up(self, seconds):
        self.client.set(CAUGHT_UP, b"1", px=max(1, int(seconds * 1000)))

    def failed(self, action, error):
        metrics.REDIS_ERRORS.labels(action).inc()
        if self.readable():
            log.warning("redis %s failed, serving from PostgreSQL: %s", action, error)
        self.down_until = time.monotonic() + self.retry_after


class Cache:
    """Cache-aside over each app's Redis (``init_app``); the app is the current one."""

    def init_app(self, app):
        app.extensions["cache"] = _Backend(app.config)
        app.extensions["cache_resources"] = {}  # table -> [Resource]: see register
        db.after_commit(app, self.apply_quietly)

    @staticmethod
    def register(app, resource):
        app.extensions["cache_resources"].setdefault(resource.table, []).append(resource)

    @staticmethod
    def backend():
        return current_app.extensions["cache"]

    def client(self):
        """The raw Redis client (for health checks)."""
        return self.backend().client

    def _cache_aside(self, resource, lookup, load, store):
        """(value, L2 status) of one read of ``resource``, counted in
        api_l2_reads_total. ``lookup(backend)`` gives (cached value or None,
        token), or None when L2 may not be read; ``store(backend, token,
        value)`` keeps a loaded value."""
        value, status = self._read_through(lookup, load, store)
        metrics.L2_READS.labels(resource.ns, status.lower()).inc()
        return value, status

    def _read_through(self, lookup, load, store):
        backend = self.backend()
        if not backend.enabled:
            return load(), OFF
        found = backend.read(lookup)
        if found is None:
            return load(), DOWN
        cached, token = found
        if cached is not None:
            return cached.decode(), HIT
        value = load()
        if value is not None and backend.storable(value):
            try:
                store(backend, token, value)
            except redis.RedisError as error:
                backend.failed("store", error)
        return value, MISS

    def item(self, resource, item_id, l1_mark=False):
        """(item JSON or None, L2 status). ``l1_mark``: L1 may store the
        answer, which the relay must then refresh after a change.

        Missing items are not cached: a create must become visible at once.
        """
        keys = resource.item_keys(item_id)
        return self._cache_aside(
            resource,
            lambda backend: backend.lookup_item(keys, l1_mark),
            lambda: resource.load(item_id),
            lambda backend, version, value: backend.store_item(keys, version, value),
        )

    def listing(self, resource, query, load):
        """(value, L2 status) of one list query of ``resource``; ``load()`` returns str."""
        return self._cache_aside(
            resource,
            lambda backend: backend.lookup_list(resource, query),
            load,
            lambda backend, gen, value: backend.store_list(resource, query, gen, value),
        )

    def _targets(self, changes):
        """The (resource, id) items and the list-owning resources that
        ``changes`` ({table: [keys]}) invalidate."""
        resources = current_app.extensions["cache_resources"]
        items, lists = [], set()
        for table, keys in changes.items():
            for resource in resources.get(table, ()):
                items += [(resource, key) for key in keys]
                if resource.lists:
                    lists.add(resource)
        return items, lists

    def apply(self, changes):
        """Invalidate what ``changes`` touched, and return its (resource, id)
        items; raises redis.RedisError if Redis did not take it."""
        items, lists = self._targets(changes)
        if (items or lists) and self.backend().enabled:
            self.backend().invalidate(items, lists)
        return items

    def apply_quietly(self, changes):
        """``apply`` right after a commit. A failure is logged and left to the
        relay, which applies every change durably; meanwhile L2 is not read
        past its caught-up second."""
        backend = self.backend()
        if not backend.enabled:
            return
        try:
            self.apply(changes)
        except redis.RedisError as error:
            log.error("redis invalidation failed, left to the relay: %s", error)
            backend.failed("invalidate", error)


cache = Cache()
