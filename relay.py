"""The cache relay: applies every committed change of a cached table to both cache levels.

Triggers note each change of a cached table in ``cache_changes``, inside the
writing transaction (init.sql). The relay reads them in order and, for each
batch, invalidates L2 (``cache.apply``), hands the canonical URIs of the
changed items L1 may hold to a thread that has every nginx of
``L1_REFRESH_URLS`` fetch them again, and deletes them. At least once for L2,
and safe to kill anywhere: what was not deleted is applied again after a
restart, and applying twice changes nothing (a refresh lost with the process
costs L1 its own 5 s bound, no more). One relay works per database at a time
(an advisory lock); another started beside it waits for the lock.

Each time it has applied every change committed before it looked, the relay
tells Redis so for one second (``cache.CAUGHT_UP``), and L2 is read only while
that holds: a relay that is dead, behind or cut off from Redis makes the API
slower (L2 unused), never staler.

    python relay.py           run it (make up and docker compose start it; --pidfile PATH)
    python relay.py --check   exit 0 if a relay holds the lock and no change has waited 5 s (healthcheck)
"""

import argparse
import http.client
import logging
import os
import signal
import socket
import sys
import threading
import time
from urllib.parse import urlsplit

import psycopg2
import redis

import metrics
import metrics_server
from cache import CAUGHT_UP_SECONDS, cache
from item_reads import REFRESH_HEADER, canonical_uri, refresh_token

log = logging.getLogger("api.relay")

POLL_SECONDS = 0.05  # between looks at an empty queue: the usual lag
BATCH = 1000
RETRY_SECONDS = 0.5
REPORT_SECONDS = 10  # how often it logs what it applied
LOCK_KEY = 7_401_100_001  # pg_advisory_lock key: one relay per database
HEALTHY_LAG_SECONDS = 5

BACKLOG_SQL = """
    SELECT count(*) AS changes,
           coalesce(extract(epoch FROM now() - min(noted_at)), 0)::float AS oldest_s
    FROM cache_changes
"""


class Relay:
    def __init__(self, app):
        self.app = app
        cfg = app.config
        self.dsn, self.connect_timeout = cfg["DATABASE_URL"], cfg["DB_CONNECT_TIMEOUT"]
        self.refresher = L1Refresher(cfg["L1_REFRESH_URLS"], refresh_token(app))
        self.stopping = threading.Event()
        self._applied, self._worst_lag, self._reported = 0, 0.0, time.monotonic()

    def run(self):
        """Until ``stop()``: reconnect after any PostgreSQL error."""
        with self.app.app_context():
            self.refresher.start()
            while not self.stopping.is_set():
                try:
                    self._serve()
                except psycopg2.Error as error:
                    log.error("relay: PostgreSQL failed, reconnecting: %s", error)
                    self.stopping.wait(RETRY_SECONDS)
            self.refresher.stop()

    def stop(self):
        self.stopping.set()

    def _serve(self):
        # Keepalives: after a cut network, the server ends the old session (and
        # frees the relay's lock) within seconds, not TCP's two hours.
        conn = psycopg2.connect(self.dsn, connect_timeout=self.connect_timeout, application_name="cache-relay",
                                keepalives=1, keepalives_idle=10, keepalives_interval=5, keepalives_count=3,
                                options="-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5"
                                " -c tcp_keepalives_count=3")
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                self._wait_for_lock(cur)
                log.info("relay: applying changes (L1 refresh: %s)", ", ".join(self.refresher.bases) or "none")
                redis_failing = False
                while not self.stopping.is_set():
                    try:
                        caught_up = self._apply_batch(cur)
                        if redis_failing:
                            log.warning("relay: redis is back")
                        redis_failing = False
                    except redis.RedisError as error:
                        if not redis_failing:
                            log.error("relay: redis failed, changes kept until it answers: %s", error)
                        redis_failing, caught_up = True, True
                    if caught_up:
                        self.stopping.wait(RETRY_SECONDS if redis_failing else POLL_SECONDS)
        finally:
            conn.close()

    def _wait_for_lock(self, cur):
        waiting = False
        while not self.stopping.is_set():
            cur.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,))
            if cur.fetchone()[0]:
                return
            if not waiting:
                log.info("relay: another relay holds the lock; waiting")
                waiting = True
            self.stopping.wait(1)

    def _apply_batch(self, cur):
        """Apply one batch; True when it was the last (everything committed
        before the look is applied, which Redis is then told)."""
        looked = time.monotonic()
        cur.execute(
            """
            SELECT id, table_name, row_key, extract(epoch FROM now() - noted_at)::float
            FROM cache_changes
            ORDER BY id
            LIMIT %s
            """,
            (BATCH,),
        )
        rows = cur.fetchall()
        metrics.RELAY_BACKLOG.set(len(rows))
        if rows:
            changes = {}
            for _, table, key, _ in rows:
                changes.setdefault(table, set()).add(key)
            items = cache.apply(changes)
            backend = cache.backend()
            if self.refresher.bases and backend.enabled:
                held = backend.held_by_l1([item for item in items if item[0].item_route])
                self.refresher.add(canonical_uri(resource, item_id) for resource, item_id in held)
            cur.execute("DELETE FROM cache_changes WHERE id = ANY(%s)", ([row[0] for row in rows],))
            self._note(len(rows), max(row[3] for row in rows))
        last = len(rows) < BATCH
        if last and cache.backend().enabled:
            cache.backend().mark_caught_up(CAUGHT_UP_SECONDS - (time.monotonic() - looked))
        return last

    def _note(self, count, lag):
        metrics.RELAY_APPLIED.inc(count)
        metrics.RELAY_LAG.observe(lag)
        self._applied += count
        self._worst_lag = max(self._worst_lag, lag)
        elapsed = time.monotonic() - self._reported
        if elapsed >= REPORT_SECONDS:
            log.info("relay: applied %d changes in %.0f s, the longest waited %.3f s",
                     self._applied, elapsed, self._worst_lag)
            self._applied, self._worst_lag, self._reported = 0, 0.0, time.monotonic()


class L1Refresher:
    """Has every nginx fetch URIs afresh, in a thread of its own so the relay
    never waits for it: ``Cache-Control: no-cache`` makes nginx fetch and
    store (nginx/http.conf), REFRESH_HEADER lets the app's 404 of a deleted
    item be stored too (item_reads.py). Each URI is fetched again a second
    later, after any slow read that loaded the old row and was still on its
    way to nginx. A refresh that fails is dropped: L1 then catches up within
    its own 5 s bound."""

    AGAIN_AFTER = 1.0

    def __init__(self, bases, token):
        self.bases = list(bases)
        self._headers = {"Cache-Control": "no-cache", REFRESH_HEADER: token}
        self._due = {}  # URI -> (when to fetch it, monotonic; whether that is its second fetch)
        self._wake = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="l1-refresh", daemon=True)

    def start(self):
        if self.bases:
            self._thread.start()

    def stop(self):
        with self._wake:
            self._stopping = True
            self._wake.notify()

    def add(self, uris):
        now = time.monotonic()
        with self._wake:
            self._due.update(dict.fromkeys(uris, (now, False)))
            self._wake.notify()

    def _take_due(self):
        """[(URI, is its second fetch)] due now, waiting for the first; None when stopping."""
        with self._wake:
            while not self._stopping:
                now = time.monotonic()
                due = [(uri, second) for uri, (at, second) in self._due.items() if at <= now]
                if due:
                    for uri, _ in due:
                        del self._due[uri]
                    return due
                self._wake.wait(min(at for at, _ in self._due.values()) - now if self._due else None)
            return None

    def _run(self):
        connections = {}
        while (due := self._take_due()) is not None:
            for uri, _ in due:
                for base in self.bases:
                    self._refresh(connections, base, uri)
            again = time.monotonic() + self.AGAIN_AFTER
            with self._wake:
                for uri, second in due:
                    if not second:  # a newer change, added meanwhile, keeps its own earlier time
                        self._due.setdefault(uri, (again, True))

    def _refresh(self, connections, base, uri):
        for attempt in (1, 2):  # a kept-alive connection nginx closed meanwhile: once more on a new one
            conn = connections.get(base)
            try:
                if conn is None:
                    conn = connections[base] = connect(base)
                conn.request("GET", uri, headers=self._headers)
                conn.getresponse().read()
                return
            except Exception as error:  # noqa: BLE001 (whatever fails, the thread goes on)
                connections.pop(base, None)
                if conn is not None:
                    conn.close()
                if attempt == 2:
                    log.warning("relay: refreshing %s%s failed: %s", base, uri, error)


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a Unix socket: the local stack's nginx server for the relay."""

    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def connect(base, timeout=2):
    """A connection to one of L1_REFRESH_URLS: ``http://host:port`` or ``unix:/path``."""
    if base.startswith("unix:"):
        return UnixHTTPConnection(base.removeprefix("unix:"), timeout)
    parts = urlsplit(base)
    return http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)


def check(app):
    """Healthy: a relay holds the lock and no change has waited HEALTHY_LAG_SECONDS."""
    conn = psycopg2.connect(app.config["DATABASE_URL"], connect_timeout=app.config["DB_CONNECT_TIMEOUT"])
    try:
        with conn.cursor() as cur:
            cur.execute(
                """
                SELECT EXISTS (
                    SELECT 1
                    FROM pg_locks
                    WHERE locktype = 'advisory'
                      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                      AND ((classid::bigint << 32) | objid::bigint) = %s
                      AND objsubid = 1
                      AND granted
                )
                """,
                (LOCK_KEY,),
            )
            running = cur.fetchone()[0]
            cur.execute(BACKLOG_SQL)
            changes, oldest = cur.fetchone()
    finally:
        conn.close()
    print(f"relay running: {running}; changes waiting: {changes}, the oldest {oldest:.3f} s")
    return running and oldest < HEALTHY_LAG_SECONDS


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 0 if a relay runs and keeps up")
    parser.add_argument("--pidfile", help="write the process id here")
    args = parser.parse_args()
    if args.pidfile:
        with open(args.pidfile, "w") as pidfile:
            pidfile.write(f"{os.getpid()}\n")
    from app import app  # noqa: PLC0415 (builds the app: only when run)

    if args.check:
        return 0 if check(app) else 1
    metrics_server.serve("relay_bind")
    relay = Relay(app)
    signal.signal(signal.SIGTERM, lambda *_: relay.stop())
    signal.signal(signal.SIGINT, lambda *_: relay.stop())
    relay.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
