"""L2: Redis cache-aside over the declared resources (cache/resources.py),
fail-open. The only module that talks to Redis for caching.

What one client can make L2 hold is bounded: a value over
``CACHE_MAX_VALUE_BYTES`` is served but not stored, and a generation stores
at most ``CACHE_MAX_LISTS`` lists each ``CACHE_TTL`` (any cursor and page
size make a new query); past that, lists come from PostgreSQL until a change
starts a new generation.

L2 is read only while ``CAUGHT_UP`` exists: the relay (cache/relay.py) sets
it, for ``CAUGHT_UP_SECONDS``, each time it has applied every change
committed before it looked. So no answer from L2 is more than that behind
the database, whatever died or was cut off: the writer, the relay, or their
links to Redis.

The refill race (a reader loads a row, a writer commits and invalidates, the
reader then stores the row it loaded) is closed without locks: a reader notes
the item's version token before it loads, and stores its result only if the
token is unchanged, checked and written atomically in Redis. A list read notes
the generation before it loads and stores under that generation, which a
change has already retired.

Redis trouble never fails a request: every call has a short timeout and no
retries, errors are logged and the request is served from PostgreSQL; after
an error, reads skip Redis for ``CACHE_RETRY_AFTER`` seconds, and every
thread connects anew (over Sentinel, to whichever primary it names then).

What Redis acknowledged may still be undone: a failover to a replica that had
not received it, or a restart from an older snapshot. So the relay forgets a
change only once every replica the primary has online holds it (``WAIT``),
and L2 lives in epochs: ``CAUGHT_UP`` holds the epoch, made of the Redis
server's run id and PostgreSQL's system id and timeline. When either differs
from the one ``EPOCH`` recorded (another primary, a restart, a PostgreSQL
failover), the relay's next "caught up" flushes L2 instead (the whole
database: it must be L2's alone), and a reader's store is refused unless the
epoch it looked up under still holds.
"""

import logging
import os
import secrets
import socket
import struct
import threading
import time

import redis
from flask import current_app

from infra import redis_url

log = logging.getLogger(__name__)

# Part of every key: bump it when the cached format changes, so a deploy never
# serves bodies an older release stored.
FORMAT = "v1"

HIT, MISS, DOWN, OFF = "HIT", "MISS", "DOWN", "OFF"
# The response header that says which of those L2 did.
HEADER = "X-Cache-L2"

# Outlives any load that started before a write (statement_timeout is seconds).
VERSION_TTL = 300

CAUGHT_UP = f"{FORMAT}:relay:caught-up"
# The L2 staleness bound: how long one "caught up" of the relay is believed.
CAUGHT_UP_SECONDS = 1.0
# The epoch the data of this Redis belongs to (see above).
EPOCH = f"{FORMAT}:relay:epoch"

# How long an item stays marked as possibly held by L1 after a read L1 may
# store: longer than any L1 entry lives (cache/l1.py, CACHEABLE) plus the
# slowest request.
L1_MARK_HOLD = 60
# Such a read renews the mark only when less than L1_MARK_HOLD is left, to
# L1_MARK_HOLD + L1_MARK_RENEW: a read item's mark is written once in
# L1_MARK_RENEW seconds, not on every read (each write is also every
# replica's to apply).
L1_MARK_RENEW = 30

# KEYS: value, version, L1 mark, caught-up. ARGV: L1_MARK_HOLD, L1_MARK_RENEW.
# For a read L1 may store (else a plain MGET does). The mark is renewed
# before the value is read, so a change the relay applies after this read
# finds it and has L1 fetch the item again. MGET reads the mark too: with
# allkeys-lru, a mark read as often as its value is evicted no sooner (PTTL
# does not count as a use).
_LOOKUP_ITEM = """
if redis.call('PTTL', KEYS[3]) < ARGV[1] * 1000 then
  redis.call('SET', KEYS[3], '1', 'EX', ARGV[1] + ARGV[2])
end
return redis.call('MGET', KEYS[1], KEYS[2], KEYS[4], KEYS[3])
"""

# KEYS: value, version, caught-up. ARGV: version seen before loading ('' if
# none), value, ttl, the epoch looked up under.
_STORE_IF_UNCHANGED = """
if (redis.call('GET', KEYS[2]) or '') == ARGV[1] and redis.call('GET', KEYS[3]) == ARGV[4] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0
"""

# KEYS: each item's version and value keys, then each list's generation key.
# ARGV: how many items, the version TTL, a new version token per item.
_INVALIDATE = """
local items = tonumber(ARGV[1])
for i = 1, items do
  redis.call('SET', KEYS[2 * i - 1], ARGV[2 + i], 'EX', ARGV[2])
  redis.call('DEL', KEYS[2 * i])
end
for i = 2 * items + 1, #KEYS do
  redis.call('INCR', KEYS[i])
end
"""

# KEYS: epoch, caught-up. ARGV: PostgreSQL's part of the epoch, the mark's
# milliseconds. Returns {marked, the epoch it replaced or false}.
# The run id is read here, in the same atomic step as the mark: a failover
# between a separate look and the mark would go unseen.
_MARK_CAUGHT_UP = """
local epoch = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)') .. ':' .. ARGV[1]
local current = redis.call('GET', KEYS[1])
if current ~= epoch then
  redis.call('FLUSHDB', 'ASYNC')
  redis.call('SET', KEYS[1], epoch)
  return {0, current}
end
redis.call('SET', KEYS[2], epoch, 'PX', ARGV[2])
return {1, false}
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


class NotReplicated(redis.RedisError):
    """A replica did not confirm an invalidation in time: it may be lost in a failover."""


def of_app():
    """The current app's L2."""
    return current_app.extensions["cache"].l2


class L2:
    """One app's L2: its Redis settings and scripts, each thread's connection,
    and when reads may try Redis again."""

    def __init__(self, cfg, metrics):
        self._metrics = metrics
        self._url = cfg["REDIS_URL"]
        self._timeout = cfg["CACHE_TIMEOUT"]
        self._replica_wait_ms = cfg["CACHE_REPLICA_WAIT_MS"]
        self._local = threading.local()
        self._era = 0  # see client
        # redis-py's Script only computes each script's SHA here: they run on
        # this thread's connection (_script).
        template = redis.Redis()
        self._lookup_item = template.register_script(_LOOKUP_ITEM)
        self._store_if_unchanged = template.register_script(_STORE_IF_UNCHANGED)
        self._lookup_list = template.register_script(_LOOKUP_LIST)
        self._store_list = template.register_script(_STORE_LIST)
        self._invalidate = template.register_script(_INVALIDATE)
        self._mark_caught_up = template.register_script(_MARK_CAUGHT_UP)
        self.enabled = cfg["CACHE_ENABLED"]
        self.ttl = cfg["CACHE_TTL"]
        self.max_value_bytes, self.max_lists = cfg["CACHE_MAX_VALUE_BYTES"], cfg["CACHE_MAX_LISTS"]
        self.retry_after = cfg["CACHE_RETRY_AFTER"]
        self.down_until = 0.0

    @property
    def client(self):
        """This thread's own connection to Redis, opened on first use.

        A connection per thread skips the pool's checkout, release and lock on
        every call, a large share of a cache hit's time in redis-py. The pid check
        keeps a forked child (Celery's pool) from sharing its parent's socket;
        the era drops every thread's connection after any thread's failure.
        """
        local, key = self._local, (os.getpid(), self._era)
        if getattr(local, "key", None) != key:
            if getattr(local, "key", (None,))[0] == key[0]:
                local.client.close()
            local.client = redis_url.connect(
                self._url,
                single_connection_client=True,
                socket_timeout=self._timeout,
                socket_connect_timeout=self._timeout,
                retry=None,
                retry_on_timeout=False,
                health_check_interval=0,
            )
            connection = local.client.connection  # connected, and on every reconnect:
            self._kernel_timeouts(connection)
            connection.register_connect_callback(self._kernel_timeouts)
            local.key = key
        return local.client

    def _kernel_timeouts(self, connection):
        """Makes the connection's socket blocking, with the kernel keeping its
        timeouts (SO_RCVTIMEO, SO_SNDTIMEO). A Python socket with a timeout
        polls before every send and every receive: a round trip then takes
        four system calls instead of two, each one releasing the GIL and
        waiting to take it back. A kernel timeout fails the call all the same
        (redis-py raises ConnectionError, which L2 fails open on)."""
        sock = connection._sock  # redis-py keeps it private: tests/app/test_cache.py checks this still holds
        if sock is None:
            return
        seconds, micros = divmod(max(1, round(self._timeout * 1e6)), 1_000_000)  # 0 would mean never
        limit = struct.pack("ll", seconds, micros)  # Linux's struct timeval
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, limit)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, limit)
            sock.settimeout(None)
        except OSError as error:  # as any failure to connect: L2 fails open on it
            raise redis.ConnectionError(f"cannot set the socket's timeouts: {error}") from error

    def reconnect(self):
        """After an error: every thread's next call connects anew (over
        Sentinel, after a lookup of the primary, which an old client may not
        repeat). Every thread, not only the one that failed: after a failover,
        each idle thread would otherwise fail once on its old connection, and
        each failure pauses the process's reads for ``retry_after``."""
        self._era += 1

    def _call(self, *args):
        """One command on this thread's connection itself. The client's per-call
        layers (retry wrapper, command lookup, response callbacks) cost as much
        CPU as the round trip; the connection still raises redis-py's errors
        and drops a failed socket, to reconnect on the next call."""
        conn = self.client.connection
        conn.send_command(*args)
        return conn.read_response()

    def _script(self, script, keys, args):
        """One of the scripts above, by its SHA on this thread's connection; by
        its text where Redis does not know it yet (restarted, failed over)."""
        try:
            return self._call("EVALSHA", script.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            return self._call("EVAL", script.script, len(keys), *keys, *args)

    def lookup_item(self, keys, l1_mark):
        """(cached value or None, (version, epoch)), or None while the relay is
        not caught up. ``l1_mark``: L1 may store the answer (see _LOOKUP_ITEM)."""
        key, ver_key, l1_key = keys
        if l1_mark:
            value, version, epoch, _ = self._script(self._lookup_item, (key, ver_key, l1_key, CAUGHT_UP),
                                                    (L1_MARK_HOLD, L1_MARK_RENEW))
        else:
            value, version, epoch = self._call("MGET", key, ver_key, CAUGHT_UP)
        return None if epoch is None else (value, (version, epoch))

    def store_item(self, keys, token, value):
        key, ver_key, _ = keys
        version, epoch = token
        self._script(self._store_if_unchanged, (key, ver_key, CAUGHT_UP), (version or b"", value, self.ttl, epoch))

    def lookup_list(self, resource, query):
        """(cached value or None, generation), or None while the relay is not caught up."""
        prefix, suffix = resource.list_key_parts(query)
        value, gen, caught_up = self._script(self._lookup_list, (resource.generation_key, CAUGHT_UP),
                                             (prefix, suffix, secrets.randbelow(2**62)))
        return None if caught_up is None else (value, gen)

    def store_list(self, resource, query, gen, value):
        prefix, suffix = resource.list_key_parts(query)
        gen = gen.decode()
        self._script(self._store_list, (f"{prefix}{gen}{suffix}", resource.list_count_key(gen)),
                     (value, self.ttl, self.max_lists))

    def storable(self, value):
        # UTF-8 takes at most 4 bytes a character: most values need no encoding to tell.
        return len(value) * 4 <= self.max_value_bytes or len(value.encode()) <= self.max_value_bytes

    def readable(self):
        return self.enabled and time.monotonic() >= self.down_until

    def read(self, lookup):
        """``lookup()``'s result, or None when reads are off or Redis fails
        (which pauses reads for ``retry_after``)."""
        if not self.readable():
            return None
        try:
            return lookup()
        except redis.RedisError as error:
            self.failed("read", error)
            return None

    def invalidate(self, items, lists):
        """At once: a new version token and no value for each (resource, id)
        of ``items``, a new generation for each resource of ``lists``."""
        keys = []
        for resource, item_id in items:
            key, ver_key, _ = resource.item_keys(item_id)
            keys += [ver_key, key]
        keys += [resource.generation_key for resource in lists]
        tokens = [secrets.token_hex(8) for _ in items]
        self._script(self._invalidate, keys, (len(items), VERSION_TTL, *tokens))

    def invalidate_durably(self, items, lists):
        """``invalidate``, then wait until every replica the primary has
        online holds it; raises NotReplicated if one did not in time.

        All on this thread's own connection: WAIT covers the writes of the
        connection it is sent on. A replica that is not online (restarting,
        syncing) is not waited for: it copies the whole dataset, these writes
        included, before it is in sync."""
        self.invalidate(items, lists)
        replicas = self.client.info("replication")
        online = sum(1 for key, value in replicas.items()
                     if key.startswith("slave") and isinstance(value, dict) and value.get("state") == "online")
        confirmed = self.client.execute_command("WAIT", online, self._replica_wait_ms)
        if confirmed < online:
            raise NotReplicated(f"{confirmed} of {online} Redis replicas confirmed within {self._replica_wait_ms} ms")

    def held_by_l1(self, items):
        """Those (resource, id) of ``items`` that L1 may hold."""
        if not items:
            return []
        marks = self.client.mget([resource.item_keys(item_id)[2] for resource, item_id in items])
        return [item for item, mark in zip(items, marks) if mark is not None]

    def caught_up(self):
        """Whether the relay's last "caught up" still holds; raises redis.RedisError."""
        return bool(self.client.exists(CAUGHT_UP))

    def mark_caught_up(self, seconds, database):
        """Mark L2 readable for ``seconds`` under the epoch of this Redis and
        ``database`` (PostgreSQL's system id and timeline). Returns (marked,
        the epoch replaced): not marked when L2 was flushed for a new epoch
        instead, which replaced another (bytes) or none (an empty Redis)."""
        marked, replaced = self._script(self._mark_caught_up, (EPOCH, CAUGHT_UP),
                                        (database, max(1, int(seconds * 1000))))
        return bool(marked), replaced

    def failed(self, action, error):
        self._metrics.REDIS_ERRORS.labels(action).inc()
        if self.readable():
            log.warning("redis %s failed, serving from PostgreSQL: %s", action, error)
        self.down_until = time.monotonic() + self.retry_after
        self.reconnect()

    def _cache_aside(self, resource, lookup, load, store):
        """(value, L2 status) of one read of ``resource``, counted in
        api_l2_reads_total. ``lookup()`` gives (cached value or None, token),
        or None when L2 may not be read; ``store(token, value)`` keeps a
        loaded value."""
        value, status = self._read_through(lookup, load, store)
        self._metrics.L2_READS.labels(resource.ns, status.lower()).inc()
        return value, status

    def _read_through(self, lookup, load, store):
        if not self.enabled:
            return load(), OFF
        found = self.read(lookup)
        if found is None:
            return load(), DOWN
        cached, token = found
        if cached is not None:
            return cached.decode(), HIT
        value = load()
        if value is not None and self.storable(value):
            try:
                store(token, value)
            except redis.RedisError as error:
                self.failed("store", error)
        return value, MISS

    def item(self, resource, item_id, l1_mark=False, load=None):
        """(item JSON or None, L2 status). ``l1_mark``: L1 may store the
        answer, which the relay must then refresh after a change. ``load()``
        reads the item from PostgreSQL (by default ``resource.load``).

        Missing items are not cached: a create must become visible at once.
        """
        keys = resource.item_keys(item_id)
        return self._cache_aside(
            resource,
            lambda: self.lookup_item(keys, l1_mark),
            load or (lambda: resource.load(item_id)),
            lambda version, value: self.store_item(keys, version, value),
        )

    def listing(self, resource, query, load):
        """(value, L2 status) of one list query of ``resource``; ``load()`` returns str."""
        return self._cache_aside(
            resource,
            lambda: self.lookup_list(resource, query),
            load,
            lambda gen, value: self.store_list(resource, query, gen, value),
        )
