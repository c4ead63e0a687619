"""L2: Redis cache-aside with fail-open. The only module that talks to Redis for caching.

Keys, for a domain ``ns`` (e.g. ``users``), each behind the ``FORMAT`` prefix:

``ns:item:ID``       an item's cached response, ``CACHE_TTL`` seconds
``ns:item:ID:ver``   a token replaced by every write of that item
``ns:gen``           the list generation; one INCR retires every cached list
``ns:list:GEN:Q``    a list response for query ``Q`` under generation ``GEN``

The refill race (a reader loads a row, a writer commits and invalidates, the
reader then stores the row it loaded) is closed without locks: a reader notes
the item's version token before it loads, and stores its result only if the
token is unchanged, checked and written atomically in Redis. A list read notes
the generation before it loads and stores under that generation, which a write
has already retired. Writers invalidate after commit.

Redis trouble never fails a request: every call has a short timeout and no
retries, errors are logged and the request is served from PostgreSQL. After
an error, reads skip Redis for ``CACHE_RETRY_AFTER`` seconds; invalidations
are always attempted. An invalidation Redis missed is kept and replayed every
``CACHE_RETRY_AFTER`` seconds until it lands, and until it does this process
reads nothing from Redis: a Redis that was unreachable but kept its data (a
network partition, a paused container) must not serve what a write replaced.
"""

import itertools
import logging
import os
import secrets
import threading
import time

import redis
from flask import current_app, has_request_context, request

log = logging.getLogger(__name__)

HIT, MISS, DOWN, OFF = "HIT", "MISS", "DOWN", "OFF"

# Part of every key: bump it when the cached format changes, so a deploy never
# serves bodies an older release stored.
FORMAT = "v1"

# Outlives any load that started before a write (statement_timeout is seconds).
VERSION_TTL = 300

# Where l2_fast_path leaves an item lookup that missed, in the WSGI environ:
# (keys, version token). The view goes on from it rather than asking Redis again.
LOOKED_UP = "api.l2.looked_up"


def item_keys(ns, item_id):
    """An item's cached-response key and its version-token key."""
    key = f"{FORMAT}:{ns}:item:{item_id}"
    return key, f"{key}:ver"


# KEYS: value, version. ARGV: version seen before loading ('' if none), value, ttl.
_STORE_IF_UNCHANGED = """
if (redis.call('GET', KEYS[2]) or '') == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0
"""

# KEYS: generation. ARGV: list key prefix, list key suffix, a random start.
# Returns {value, generation}. A missing generation starts at a random number,
# so a generation lost to eviction never revives lists cached under an old one.
_GET_LIST = """
local gen = redis.call('GET', KEYS[1])
if not gen then
  redis.call('SET', KEYS[1], ARGV[3], 'NX')
  gen = redis.call('GET', KEYS[1])
end
return {redis.call('GET', ARGV[1] .. gen .. ARGV[2]), gen}
"""


class _Backend:
    """One app's Redis settings and scripts, each thread's connection, and when reads may try Redis again."""

    def __init__(self, cfg):
        self._url = cfg["REDIS_URL"]
        self._timeout = cfg["CACHE_TIMEOUT"]
        self._local = threading.local()
        # Scripts run on the caller's connection (client=...); this one only computes their SHA.
        template = redis.Redis.from_url(self._url)
        self._store_if_unchanged = template.register_script(_STORE_IF_UNCHANGED)
        self._get_list = template.register_script(_GET_LIST)
        self.enabled = cfg["CACHE_ENABLED"]
        self.ttl = cfg["CACHE_TTL"]
        self.retry_after = cfg["CACHE_RETRY_AFTER"]
        self.down_until = 0.0
        self._forget_pending()
        # A forked child (Celery's pool) starts empty: its parent replays its own.
        os.register_at_fork(after_in_child=self._forget_pending)

    def _forget_pending(self):
        # Invalidations Redis missed: (ns, item_id, lists) -> when it last
        # missed one, so a replay never drops a miss newer than itself. A
        # replay thread runs exactly while this is not empty.
        self._pending = {}
        self._misses = itertools.count()
        self._lock = threading.Lock()

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

    def mget(self, *keys):
        """MGET on this thread's connection itself. The client's per-call layers
        (retry wrapper, command lookup, response callbacks) cost as much CPU as
        the round trip; the connection still raises redis-py's errors and drops
        a failed socket, to reconnect on the next call."""
        conn = self.client.connection
        conn.send_command("MGET", *keys)
        return conn.read_response()

    def store_if_unchanged(self, keys, args):
        return self._store_if_unchanged(keys=keys, args=args, client=self.client)

    def get_list(self, keys, args):
        return self._get_list(keys=keys, args=args, client=self.client)

    def reads_enabled(self):
        return time.monotonic() >= self.down_until and not self._pending

    def read(self, lookup):
        """``lookup(self)``'s result, or None when reads are off or Redis fails
        (which pauses reads for ``retry_after``)."""
        if not self.reads_enabled():
            return None
        try:
            return lookup(self)
        except redis.RedisError as error:
            self.failed("read", error)
            return None

    def invalidate(self, targets):
        """Apply ``targets`` ((ns, item_id, lists) tuples) in one transaction;
        on failure keep them for the replay thread."""
        try:
            pipe = self.client.pipeline(transaction=True)
            for ns, item_id, lists in targets:
                if item_id is not None:
                    key, ver_key = item_keys(ns, item_id)
                    pipe.set(ver_key, secrets.token_hex(8), ex=VERSION_TTL)
                    pipe.delete(key)
                if lists:
                    pipe.incr(f"{FORMAT}:{ns}:gen")
            pipe.execute()
        except redis.RedisError as error:
            with self._lock:
                start_replay = not self._pending
                self._pending.update((target, next(self._misses)) for target in targets)
                if start_replay:
                    threading.Thread(target=self._replay, name="cache-replay", daemon=True).start()
            log.error("redis invalidation failed, kept to replay (%d pending): %s", len(self._pending), error)
            self.failed("invalidate", error)
            return False
        return True

    def _replay(self):
        while True:
            time.sleep(self.retry_after)
            with self._lock:
                missed = dict(self._pending)
            if not self.invalidate(missed):
                continue  # still missing; invalidate() kept them
            with self._lock:
                for target, miss in missed.items():
                    if self._pending.get(target) == miss:
                        del self._pending[target]
                if not self._pending:
                    log.warning("redis is back: missed invalidations replayed (%d)", len(missed))
                    return

    def failed(self, action, error):
        if self.reads_enabled():
            log.warning("redis %s failed, serving from PostgreSQL: %s", action, error)
        self.down_until = time.monotonic() + self.retry_after


class Cache:
    """Cache-aside over each app's Redis (``init_app``); the app is the current one."""

    def init_app(self, app):
        app.extensions["cache"] = _Backend(app.config)

    @staticmethod
    def _backend():
        return current_app.extensions["cache"]

    def client(self):
        """The raw Redis client (for health checks)."""
        return self._backend().client

    def _cache_aside(self, lookup, load, store):
        """``lookup(backend)`` gives (cached value or None, token); ``store(backend, token, value)``."""
        backend = self._backend()
        if not backend.enabled:
            return load(), OFF
        found = backend.read(lookup)
        if found is None:
            return load(), DOWN
        cached, token = found
        if cached is not None:
            return cached.decode(), HIT
        value = load()
        if value is not None:
            try:
                store(backend, token, value)
            except redis.RedisError as error:
                backend.failed("store", error)
        return value, MISS

    def item(self, ns, item_id, load):
        """(value, L2 status) of one item; ``load()`` returns str, or None for missing.

        Missing items are not cached: a create must become visible at once.
        """
        key, ver_key = keys = item_keys(ns, item_id)
        return self._cache_aside(
            lambda backend: _looked_up(keys) or backend.mget(key, ver_key),
            load,
            lambda backend, version, value: backend.store_if_unchanged(
                keys=[key, ver_key], args=[version or b"", value, backend.ttl]
            ),
        )

    def listing(self, ns, query, load):
        """(value, L2 status) of one list query; ``load()`` returns str."""
        prefix, suffix = f"{FORMAT}:{ns}:list:", f":{query}"
        return self._cache_aside(
            lambda backend: backend.get_list(
                keys=[f"{FORMAT}:{ns}:gen"], args=[prefix, suffix, secrets.randbelow(2**62)]
            ),
            load,
            lambda backend, gen, value: backend.client.set(
                f"{prefix}{gen.decode()}{suffix}", value, ex=backend.ttl
            ),
        )

    def invalidate(self, ns, item_id=None, lists=True):
        """Call after commit: drop the item's entry and, unless ``ns`` caches no
        lists (``lists=False``), retire every list of ``ns``."""
        backend = self._backend()
        if backend.enabled:
            backend.invalidate({(ns, item_id, lists)})


def _looked_up(keys):
    """(None, version token) of the miss l2_fast_path already looked up for ``keys``, if it did."""
    handed_over = request.environ.pop(LOOKED_UP, None) if has_request_context() else None
    if handed_over is not None and handed_over[0] == keys:
        return None, handed_over[1]
    return None


cache = Cache()
