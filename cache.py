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
are always attempted.
"""

import logging
import secrets
import time

import redis
from flask import current_app

log = logging.getLogger(__name__)

HIT, MISS, DOWN = "HIT", "MISS", "DOWN"

# Part of every key: bump it when the cached format changes, so a deploy never
# serves bodies an older release stored.
FORMAT = "v1"

# Outlives any load that started before a write (statement_timeout is seconds).
VERSION_TTL = 300

# KEYS: value, version. ARGV: version seen before loading ('' if none), value, ttl.
_STORE_IF_UNCHANGED = """
if (redis.call('GET', KEYS[2]) or '') == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0
"""

# KEYS: generation. ARGV: list key prefix, list key suffix, a random start.
# Returns {generation, value}. A missing generation starts at a random number,
# so a generation lost to eviction never revives lists cached under an old one.
_GET_LIST = """
local gen = redis.call('GET', KEYS[1])
if not gen then
  redis.call('SET', KEYS[1], ARGV[3], 'NX')
  gen = redis.call('GET', KEYS[1])
end
return {gen, redis.call('GET', ARGV[1] .. gen .. ARGV[2])}
"""


class Cache:
    """Cache-aside over one Redis client; one instance per app (``init_app``)."""

    def __init__(self, app=None):
        self._down_until = 0.0
        if app is not None:
            self.init_app(app)

    def init_app(self, app):
        cfg = app.config
        client = redis.Redis.from_url(
            cfg["REDIS_URL"],
            socket_timeout=cfg["CACHE_TIMEOUT"],
            socket_connect_timeout=cfg["CACHE_TIMEOUT"],
            retry=None,
            retry_on_timeout=False,
            health_check_interval=0,
        )
        app.extensions["cache"] = {
            "client": client,
            "store_if_unchanged": client.register_script(_STORE_IF_UNCHANGED),
            "get_list": client.register_script(_GET_LIST),
        }

    @staticmethod
    def _ext():
        return current_app.extensions["cache"]

    def client(self):
        """The raw Redis client (for health checks)."""
        return self._ext()["client"]

    def _reads_enabled(self):
        return time.monotonic() >= self._down_until

    def _failed(self, action, error):
        if self._reads_enabled():
            log.warning("redis %s failed, serving from PostgreSQL: %s", action, error)
        self._down_until = time.monotonic() + current_app.config["CACHE_RETRY_AFTER"]

    def item(self, ns, item_id, load):
        """(value, L2 status) of one item; ``load()`` returns str, or None for missing.

        Missing items are not cached: a create must become visible at once.
        """
        key = f"{FORMAT}:{ns}:item:{item_id}"
        ver_key = f"{key}:ver"
        if not self._reads_enabled():
            return load(), DOWN
        try:
            cached, version = self.client().mget(key, ver_key)
        except redis.RedisError as error:
            self._failed("read", error)
            return load(), DOWN
        if cached is not None:
            return cached.decode(), HIT
        value = load()
        if value is not None:
            try:
                self._ext()["store_if_unchanged"](
                    keys=[key, ver_key],
                    args=[version or b"", value, current_app.config["CACHE_TTL"]],
                )
            except redis.RedisError as error:
                self._failed("store", error)
        return value, MISS

    def listing(self, ns, query, load):
        """(value, L2 status) of one list query; ``load()`` returns str."""
        if not self._reads_enabled():
            return load(), DOWN
        prefix, suffix = f"{FORMAT}:{ns}:list:", f":{query}"
        try:
            gen, cached = self._ext()["get_list"](
                keys=[f"{FORMAT}:{ns}:gen"],
                args=[prefix, suffix, secrets.randbelow(2**62)],
            )
        except redis.RedisError as error:
            self._failed("read", error)
            return load(), DOWN
        if cached is not None:
            return cached.decode(), HIT
        value = load()
        try:
            self.client().set(
                f"{prefix}{gen.decode()}{suffix}",
                value,
                ex=current_app.config["CACHE_TTL"],
            )
        except redis.RedisError as error:
            self._failed("store", error)
        return value, MISS

    def invalidate(self, ns, item_id=None):
        """Call after commit: drop the item's entry and retire every list of ``ns``."""
        pipe = self.client().pipeline(transaction=True)
        if item_id is not None:
            key = f"{FORMAT}:{ns}:item:{item_id}"
            pipe.set(f"{key}:ver", secrets.token_hex(8), ex=VERSION_TTL)
            pipe.delete(key)
        pipe.incr(f"{FORMAT}:{ns}:gen")
        try:
            pipe.execute()
        except redis.RedisError as error:
            log.error("redis invalidation of %s:%s failed: %s", ns, item_id, error)
            self._failed("invalidate", error)


cache = Cache()
