"""The relay's loop: applies every committed change of a cached table to both
cache levels, durably. The process is relay.py at the top.

Triggers note each change of a cached table in ``cache_changes``, inside the
writing transaction (init.sql). The relay reads them in order and, for each
batch, invalidates L2 (``changes.invalidate``), hands the canonical URIs of
the changed items L1 may hold to the L1 refresher, whose threads have every
nginx that ``L1_REFRESH_URLS`` names fetch them again (``l1.L1Refresher``),
and deletes them. At least once for L2,
and safe to kill anywhere: what was not deleted is applied again after a
restart, and applying twice changes nothing (a refresh lost with the process
costs L1 its own 5 s bound, no more). One relay works per database at a time
(an advisory lock); another started beside it waits for the lock.

Each time it has applied every change committed before it looked, the relay
tells Redis so for one second (``l2.CAUGHT_UP``), and L2 is read only while
that holds: a relay that is dead, behind or cut off from Redis makes the API
slower (L2 unused), never staler.

Failovers: a change leaves ``cache_changes`` only once every online Redis
replica holds its invalidation (``l2.invalidate_durably``), and the
"caught up" carries the epoch (cache/l2.py): a switch of Redis primary or of
PostgreSQL timeline flushes L2 before it is read again. The relay connects
to whichever server ``DATABASE_URL`` finds writable (libpq's
``target_session_attrs=read-write``), itself, never through a pooler: its
advisory lock lives in its session.
"""

import logging
import threading
import time

import psycopg2
import redis

from cache import changes, l1, monitor
from cache.l2 import CAUGHT_UP_SECONDS

log = logging.getLogger("api.relay")

POLL_SECONDS = 0.05  # between looks at an empty queue: the usual lag
BATCH = 1000
RETRY_SECONDS = 0.5
REPORT_SECONDS = 10  # how often it logs what it applied
LOCK_KEY = 7_401_100_001  # pg_advisory_lock key: one relay per database
HEALTHY_LAG_SECONDS = 5

# PostgreSQL's part of L2's epoch: the cluster's identity and the timeline a
# failover moves on, which a WAL file's name begins with.
DATABASE_EPOCH_SQL = """
    SELECT system_identifier::text || ':' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)
    FROM pg_control_system()
"""

BACKLOG_SQL = """
    SELECT count(*) AS changes,
           coalesce(extract(epoch FROM now() - min(noted_at)), 0)::float AS oldest_s
    FROM cache_changes
"""


class Relay:
    """The loop of one relay for ``app`` (its settings, cache levels and metrics)."""

    def __init__(self, app):
        self.app = app
        cfg = app.config
        self.dsn, self.connect_timeout = cfg["DATABASE_URL"], cfg["DB_CONNECT_TIMEOUT"]
        self.levels, self.metrics = app.extensions["cache"], app.extensions["metrics"]
        self.refresher = l1.L1Refresher(cfg["L1_REFRESH_URLS"], self.levels.refresh_token)
        # Checks a sample of the changes at every level, every L1 the refresher reaches included.
        self.monitor = monitor.Monitor(app, self.refresher.targets)
        self.stopping = threading.Event()
        self._applied, self._worst_lag, self._reported = 0, 0.0, time.monotonic()

    def run(self):
        """Until ``stop()``: reconnect after any PostgreSQL error."""
        with self.app.app_context():
            self.refresher.start()
            self.monitor.start()
            while not self.stopping.is_set():
                try:
                    self._serve()
                except psycopg2.Error as error:
                    log.error("relay: PostgreSQL failed, reconnecting: %s", error)
                    self.stopping.wait(RETRY_SECONDS)
            self.refresher.stop()
            self.monitor.stop()

    def stop(self):
        self.stopping.set()

    def stop_on_signal(self, *_):
        """SIGTERM's and SIGINT's handler. Python runs it in the main thread,
        which may be inside ``stopping.wait()`` holding the Event's lock at
        that moment: setting the Event right here would wait for that lock
        for ever, and the relay would never stop (nor free its lock for the
        next one). A thread of its own sets it once the main thread lets go."""
        threading.Thread(target=self.stop, name="relay-stop", daemon=True).start()

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
                self.monitor.holding(True)
                cur.execute(DATABASE_EPOCH_SQL)
                self.database_epoch = cur.fetchone()[0]
                log.info("relay: applying changes of %s (L1 refresh: %s)", self.database_epoch,
                         ", ".join(self.refresher.bases) or "none")
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
                        self.levels.l2.reconnect()
                        redis_failing, caught_up = True, True
                    if caught_up:
                        self.stopping.wait(RETRY_SECONDS if redis_failing else POLL_SECONDS)
        finally:
            self.monitor.holding(False)
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
        # Read after they committed: the monitor's bound on each change's commit time.
        self.monitor.noted(rows, time.monotonic())
        self.metrics.RELAY_BACKLOG.set(len(rows))
        l2, resources = self.levels.l2, self.levels.resources
        if rows:
            changed = {}
            for _, table, key, _ in rows:
                changed.setdefault(table, set()).add(key)
            items = changes.invalidate(changed, durably=True)
            if self.refresher.bases and l2.enabled:
                held = l2.held_by_l1([item for item in items if resources.has_item_route(item[0])])
                self.refresher.add(resources.canonical_uri(resource, item_id) for resource, item_id in held)
            ids = [row[0] for row in rows]
            cur.execute("DELETE FROM cache_changes WHERE id = ANY(%s)", (ids,))
            self.monitor.applied(ids)
            self._note(len(rows), max(row[3] for row in rows))
        last = len(rows) < BATCH
        if last and l2.enabled:
            marked, replaced = l2.mark_caught_up(CAUGHT_UP_SECONDS - (time.monotonic() - looked), self.database_epoch)
            if not marked:
                self._new_epoch(replaced)
        return last

    def _new_epoch(self, replaced):
        self.metrics.RELAY_EPOCHS.inc()
        if replaced is None:
            log.info("relay: L2 starts its first epoch in this Redis")
        else:
            log.warning("relay: L2 flushed for a new epoch: its data was of %s, this Redis server and PostgreSQL "
                        "(%s) are another primary, run or timeline", replaced.decode(), self.database_epoch)

    def _note(self, count, lag):
        self.metrics.RELAY_APPLIED.inc(count)
        self.metrics.RELAY_LAG.observe(lag)
        self._applied += count
        self._worst_lag = max(self._worst_lag, lag)
        elapsed = time.monotonic() - self._reported
        if elapsed >= REPORT_SECONDS:
            log.info("relay: applied %d changes in %.0f s, the longest waited %.3f s",
                     self._applied, elapsed, self._worst_lag)
            self._applied, self._worst_lag, self._reported = 0, 0.0, time.monotonic()


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
