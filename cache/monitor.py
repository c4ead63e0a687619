"""The consistency monitor: the deployment measures its own cache coherence,
per level and per host, on a sample of the changes it commits.

It lives in the relay process (relay.py), which already sees every committed
change in order, knows every L1 (the L1 refresher's resolved targets: the
same nginx it refreshes, found the same way) and holds PostgreSQL and L2.

Method, for each sampled change of an item:

1. **Sample.** The relay hands every batch it read to ``noted`` before it
   deletes it. Every change updates ``_seen`` (the latest time any change of
   that key was seen: an upper bound of its commit, since the row was read
   after it committed). A token bucket of ``CONSISTENCY_CHECKS_PER_S``
   (default 2, burst the same) picks items to check: at least one a second
   while writes flow, never more however hard they flood; 0 turns it off.
   A key already waiting for its check takes no token: its check moves to
   after its latest change.
2. **Wait for the bounds.** The check runs ``CHECK_AFTER`` seconds after the
   key's latest change was seen, past both bounds: L2's (``L2_BOUND``, the relay's
   caught-up second) and an L1 item's (``L1_BOUND``: the refresher's second
   fetch, ``l1.L1Refresher.AGAIN_AFTER``, plus a second for it to reach
   nginx through the app).
3. **Read the truth, then the caches.** At ``t0`` it loads the item from
   PostgreSQL with the resource's own loader (the exact text L2 stores and L1
   serves, plus the newline every JSON answer ends with), then reads L2 (the
   value and the caught-up mark, as a reader's lookup does) and peeks every L1
   (nginx/peek.conf: what it holds fresh under the item's canonical URI).
4. **Prove the database did not move.** After the cache reads it lists the
   changes of that key still waiting in ``cache_changes``; those and every
   change the relay handed over give the key's latest change time. A cache
   answer that differs from the database counts as inconsistent only if
   that latest change was seen more than the level's bound before ``t0``.
   Then every change committed before the cache reads (a newer write landing
   in between included) is either still waiting, so listed, or was deleted
   by the relay, which handed it over first: the database held the value
   read at ``t0`` from at least one bound before ``t0`` until after the cache
   reads, so the cache answered something the database had not held for
   longer than the bound. No false alarm; when it cannot prove that, the
   check is skipped (``api_consistency_skipped_total``), never counted.

Compared: the body itself (no hash, no version). L2 stores the loader's JSON
text, L1 the same text and a newline (cache/reads.py), so equality is exact;
a deleted item must be absent from L2 and, in L1, absent or a held 404.

What it cannot see: lists (no canonical key; they live by L1's 5 s and L2's
generation); an L1 it cannot reach while it cannot (counted as unreachable;
peeked again every ``RETRY_EVERY`` while an entry it held before the change
could still be fresh, so a host cut off from the relay and back in time is
seen holding what its refresh missed);
staleness shorter than a check's sampling gap; and anything while the relay
process itself is down (its healthcheck says so). A change made while the
relay cannot apply it (Redis cut off, say) is still seen: the rows wait in
``cache_changes``, and the monitor's own look (``_look``) samples them.

Reported: Prometheus counters by level and host (infra/metrics.py), one log
line per inconsistency, and a summary of the last ``WINDOW_SECONDS`` in the
state Redis (``STATUS_KEY``), which /health shows.
"""

import collections
import heapq
import http.client
import json
import logging
import random
import threading
import time

import psycopg2
import redis
from cache import l1
from cache.l2 import CAUGHT_UP, CAUGHT_UP_SECONDS
from infra import db, redis_url

log = logging.getLogger("api.consistency")

L2_BOUND = CAUGHT_UP_SECONDS
L1_BOUND = l1.L1Refresher.AGAIN_AFTER + 1.0
# A little past the larger bound, so a check proves what it reports (step 4).
CHECK_AFTER = max(L1_BOUND, L2_BOUND) + 0.25
# The monitor's own look at cache_changes, when the relay handed nothing over
# for this long (it is behind, cut off from Redis, or waiting).
LOOK_AFTER = 1.0
# How long the latest change of a key is remembered: longer than any bound,
# which is all a check asks of it (an older change cannot make it skip), and
# short enough that a flood of changes to distinct keys stays small.
FORGET_AFTER = 10.0
# How long a waiting change keeps the time it was first seen (a relay that
# cannot apply reads it again and again): longer than any L1 entry lives.
FORGET_WAITING_AFTER = 120.0
WINDOW_SECONDS = 300
STATUS_KEY = "api:consistency"
PEEK_URI, PEEK_HEADER = "/_l1/peek", "X-L1-Peek"
PEEK_TIMEOUT = 1.0
# An L1 that could not be peeked is peeked again this often, for as long as
# an entry it filled before the change may still be fresh there (nginx counts
# whole seconds).
RETRY_EVERY = 0.5
L1_FRESH_FOR = l1.FRESH_SECONDS + 1
L2_HOST = "redis"


class TokenBucket:
    """``rate`` tokens a second, at most ``rate`` (at least one) saved up."""

    def __init__(self, rate, clock=time.monotonic):
        self.rate, self.capacity, self._clock = rate, max(1.0, rate), clock
        self._tokens, self._at = self.capacity, clock()

    def take(self):
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


class Monitor:
    """The monitor of one relay: ``noted`` by the relay's loop, checks in a thread of its own."""

    def __init__(self, app, l1_targets):
        self.app = app
        cfg = app.config
        self.rate = cfg["CONSISTENCY_CHECKS_PER_S"]
        self.levels, self.metrics = app.extensions["cache"], app.extensions["metrics"]
        self._l1_targets = l1_targets  # () -> the nginx the relay refreshes now
        self._bucket = TokenBucket(self.rate)
        self._lock = threading.Lock()
        self._seen = {}  # (table, key) -> latest monotonic time a change of it was seen
        self._first_seen = {}  # cache_changes id -> when the monitor's own look first saw it
        self._pending = {}  # (table, key) -> when its check is due: CHECK_AFTER past its latest change
        self._due = []  # heap of (when, table, key), one per pending key; an entry behind _pending moves on
        self._retries = []  # heap of (when, deadline, n, resource, key, target): L1s that could not be peeked
        self._retry_count = 0  # n: orders equal times without comparing resources
        self._handed = time.monotonic()  # the relay's last hand-over
        self._last_id = 0
        self._looked = 0.0
        self._published = 0.0
        self._forgot = 0.0
        self._recent = collections.deque()  # (monotonic, inconsistent: bool) of the last WINDOW_SECONDS
        self._last_inconsistency = None
        self._stopping = threading.Event()
        self._holding = False
        self._status = None

    @property
    def enabled(self):
        return self.rate > 0

    def start(self):
        if self.enabled:
            log.info("consistency monitor: %.3g checks/s, each %.2f s after its change", self.rate, CHECK_AFTER)
            threading.Thread(target=self._run, name="consistency-monitor", daemon=True).start()

    def stop(self):
        self._stopping.set()

    def holding(self, held):
        """The relay holds its lock (True) or lost it. Only then is every change
        deleted handed over first, which step 4 relies on: a standby relay's
        monitor, racing another relay's deletes, could miss a change and so
        must not check."""
        with self._lock:
            if held:
                self._handed = time.monotonic()
            else:
                self._due, self._pending, self._retries = [], {}, []
            self._holding = held

    def noted(self, rows, seen):
        """The relay's look read ``rows`` [(id, table, key, ...)], maybe none,
        before ``seen`` (monotonic); it calls this before applying them."""
        if not self.enabled:
            return
        with self._lock:
            self._handed = seen
            self._note_rows(rows, seen)

    def applied(self, ids):
        """The relay deleted these changes: their keys' times stay in ``_seen``."""
        if self.enabled:
            with self._lock:
                for change_id in ids:
                    self._first_seen.pop(change_id, None)

    def _note_rows(self, rows, seen):
        """Under the lock. A change read again (the relay could not apply it)
        keeps the time it was first seen: its commit came before that."""
        new = []
        for row in rows:
            change_id, table, key = row[0], row[1], str(row[2])
            if change_id not in self._first_seen:
                self._first_seen[change_id] = seen
                new.append(row)
            self._seen[(table, key)] = max(self._seen.get((table, key), 0.0), self._first_seen[change_id])
            self._last_id = max(self._last_id, change_id)
        self._sample(new, seen)  # each change once, however often it is read again

    def _sample(self, rows, seen):
        """Under the lock. A key already due is checked once, CHECK_AFTER past
        its latest change (a check sooner would be skipped: it changed within
        the bound), so it takes no token; else one random key per token."""
        due = seen + CHECK_AFTER
        fresh = {}
        for row in rows:
            key = (row[1], str(row[2]))
            if key in self._pending:
                self._pending[key] = due
            else:
                fresh[key] = None
        fresh = list(fresh)
        while fresh and self._bucket.take():
            key = fresh.pop(random.randrange(len(fresh)))
            self._pending[key] = due
            heapq.heappush(self._due, (due, *key))
            log.debug("consistency: %s %s sampled", *key)
            if len(rows) == 1:
                return

    def _run(self):
        while not self._stopping.wait(0.05):
            try:
                # A context per round: its PostgreSQL connection goes back to the pool after it.
                if not self._holding:
                    continue
                with self.app.app_context():
                    now = time.monotonic()
                    if now - self._handed > LOOK_AFTER and now - self._looked > LOOK_AFTER:
                        self._look()
                    for table, key in self._take_due():
                        self._check_key(table, key)
                    for resource, key, target in self._take_retries():
                        self.check(resource, key, targets=[target])
                    self._forget()
                    self._publish()
            except (psycopg2.Error, db.PoolTimeout, redis.RedisError, OSError) as error:
                log.warning("consistency monitor: cannot check now: %s", error)
                self._status = None
                self._stopping.wait(1)
            except Exception:  # noqa: BLE001 (whatever fails, the monitor goes on; the relay never waits for it)
                log.exception("consistency monitor: a round failed")
                self._status = None
                self._stopping.wait(1)

    def _look(self):
        """The changes waiting that the relay has not handed over: each seen
        from now on (its first look bounds its commit), and sampled."""
        rows = db.fetch_all(
            """
            SELECT id, table_name, row_key
            FROM cache_changes
            WHERE id > %s
            ORDER BY id
            LIMIT 1000
            """,
            (self._last_id,),
        )
        now = time.monotonic()
        self._looked = now
        with self._lock:
            self._note_rows([(row["id"], row["table_name"], row["row_key"]) for row in rows], now)

    def _take_due(self):
        now = time.monotonic()
        with self._lock:
            due = []
            while self._due and self._due[0][0] <= now:
                when, table, key = heapq.heappop(self._due)
                latest = self._pending[(table, key)]
                if latest > when:  # changed again since it was sampled: checked after that change
                    heapq.heappush(self._due, (latest, table, key))
                    continue
                del self._pending[(table, key)]
                due.append((table, key))
            return due

    def _take_retries(self):
        now = time.monotonic()
        with self._lock:
            due = []
            while self._retries and self._retries[0][0] <= now:
                _, _, _, resource, key, target = heapq.heappop(self._retries)
                due.append((resource, key, target))
            return due

    def _retry_later(self, resource, item_id, target, latest):
        """Peek ``target`` again while an entry it held before the key's latest change may be fresh."""
        when, deadline = time.monotonic() + RETRY_EVERY, latest + L1_FRESH_FOR
        if when <= deadline:
            with self._lock:
                self._retry_count += 1
                heapq.heappush(self._retries, (when, deadline, self._retry_count, resource, item_id, target))

    def _forget(self):
        """Once a second: what no check can need any more."""
        now = time.monotonic()
        if now - self._forgot < 1:
            return
        self._forgot = now
        with self._lock:
            self._seen = {k: t for k, t in self._seen.items() if t >= now - FORGET_AFTER}
            self._first_seen = {k: t for k, t in self._first_seen.items() if t >= now - FORGET_WAITING_AFTER}

    def _check_key(self, table, key):
        for resource in self.levels.resources.by_table.get(table, ()):
            self.check(resource, key)

    def check(self, resource, item_id, targets=None):
        """Compare each level's answer for one item with PostgreSQL's (steps 3
        and 4); with ``targets``, only those L1s' (a peek tried again)."""
        t0 = time.monotonic()
        body = resource.load(item_id)
        answers = [] if targets else [("l2", L2_HOST, self._l2_answer(resource, item_id, body))]
        uri = self.levels.resources.canonical_uri(resource, item_id) if resource.public else None
        if uri is not None:
            answers += [("l1", target, self._l1_answer(target, uri, body))
                        for target in targets or self._l1_targets()]
        latest = self._latest_change(resource.table, item_id)
        for level, host, answer in answers:
            if answer is None and level == "l1":
                self._retry_later(resource, item_id, host, latest)
            self._judge(resource, item_id, level, host, answer, body, t0, latest)

    def _l2_answer(self, resource, item_id, body):
        """(read at, consistent, what it held), or None when L2 is not read
        (Redis failing, or the relay behind: a reader would not use it either)."""
        try:
            value, caught_up = self.levels.l2.client.mget(resource.item_keys(item_id)[0], CAUGHT_UP)
        except redis.RedisError as error:  # a reader would skip L2 as well
            log.debug("consistency monitor: cannot read L2: %s", error)
            self.levels.l2.reconnect()
            return None
        if caught_up is None:
            log.debug("consistency: L2 not checked, the relay is not caught up")
            return None
        held = None if value is None else value.decode()
        # A value L2 does not hold is loaded from PostgreSQL by the reader.
        return time.monotonic(), held is None or held == body, held

    def _l1_answer(self, target, uri, body):
        """(read at, consistent, what it held), or None when unreachable."""
        try:
            conn = l1.connect(target, PEEK_TIMEOUT)
            try:
                conn.request("GET", PEEK_URI, headers={PEEK_HEADER: uri})
                reply = conn.getresponse()
                held_body = reply.read().decode("utf-8", "replace")
                status = reply.status
                cache_status = reply.getheader("X-Cache-Status", "")
            finally:
                conn.close()
        except (OSError, http.client.HTTPException) as error:
            self.metrics.CONSISTENCY_UNREACHABLE.labels(target).inc()
            log.debug("consistency monitor: cannot peek %s: %s", target, error)
            return None
        read_at = time.monotonic()
        if cache_status != "HIT":
            return read_at, True, None  # not held fresh: a client's read goes on to the app
        if body is None:
            return read_at, status == 404, f"{status} {held_body.strip()}"
        return read_at, status == 200 and held_body == body + "\n", f"{status} {held_body.strip()}"

    def _latest_change(self, table, key):
        """The latest time a change of the key was seen, after the cache reads (step 4)."""
        waiting = db.fetch_all("SELECT id FROM cache_changes WHERE table_name = %s AND row_key = %s",
                               (table, str(key)))
        now = time.monotonic()
        with self._lock:
            times = [self._first_seen.get(row["id"], now) for row in waiting]
            return max([self._seen.get((table, str(key)), 0.0), *times])

    def _judge(self, resource, item_id, level, host, answer, body, t0, latest):
        if answer is None:
            return
        read_at, consistent, held = answer
        bound = L1_BOUND if level == "l1" else L2_BOUND
        if latest > t0 - bound:
            self.metrics.CONSISTENCY_SKIPPED.labels(level).inc()
            log.debug("consistency: %s %s in %s on %s skipped: changed %.3f s before the check", resource.ns,
                      item_id, level, host, t0 - latest)
            return
        self.metrics.CONSISTENCY_CHECKS.labels(level, host).inc()
        self.metrics.CONSISTENCY_INCONSISTENT.labels(level, host)  # a series from the first check: a 0, not "no data"
        self._recent.append((read_at, not consistent))
        if consistent:
            return
        past = read_at - latest - bound
        self.metrics.CONSISTENCY_INCONSISTENT.labels(level, host).inc()
        self.metrics.CONSISTENCY_PAST_BOUND.labels(level).observe(past)
        self._last_inconsistency = {"resource": resource.ns, "key": str(item_id), "level": level, "host": host,
                                    "past_bound_s": round(past, 3), "at": time.time()}
        self._published = 0.0  # /health says so at the end of this round, not a second later
        log.error("consistency: %s %s inconsistent in %s on %s, %.3f s past its %.1f s bound: "
                  "cache answered %s, database holds %s", resource.ns, item_id, level, host, past, bound,
                  _short(held), _short(body))

    def _publish(self):
        """The last WINDOW_SECONDS, for /health, about once a second."""
        now = time.monotonic()
        while self._recent and self._recent[0][0] < now - WINDOW_SECONDS:
            self._recent.popleft()
        if self._published > now - 1:
            return
        self._published = now
        status = {
            "checks": len(self._recent),
            "inconsistent": sum(1 for _, bad in self._recent if bad),
            "window_s": WINDOW_SECONDS,
            "checks_per_s": self.rate,
            "last_inconsistency": self._last_inconsistency,
        }
        if self._status is None:
            self._status = _state_redis(self.app.config, timeout=1)
        # Outlives a few missed publications only: a dead monitor's figures vanish.
        self._status.set(STATUS_KEY, json.dumps(status), ex=10)


def _short(text, limit=300):
    text = "nothing" if text is None else text
    return text if len(text) <= limit else text[:limit] + "..."


def _state_redis(cfg, timeout):
    """The Redis that never evicts (Celery's queue's), where the status lives beside the relay's other state."""
    return redis_url.connect(cfg.get("QUEUE_REDIS_URL") or cfg["REDIS_URL"], socket_timeout=timeout,
                             socket_connect_timeout=timeout)


def status(app):
    """What the monitor last published (None: no monitor runs, or it is off).
    One client per app, made at the first call: /health is polled, and a
    connection per poll would be a connect and a close each time."""
    client = app.extensions.get("consistency_status")
    if client is None:
        client = app.extensions["consistency_status"] = _state_redis(app.config, timeout=0.25)
    raw = client.get(STATUS_KEY)
    return None if raw is None else json.loads(raw)
