"""PostgreSQL access: one small connection pool per process, one connection per request.

Connections are opened lazily, after gunicorn has forked its workers, never at
import time. They run in autocommit mode, so a read or a one-statement write
(``write_one``) costs one round trip; several statements go through ``transaction()``.

What a write changed in the cached tables reaches the cache levels through
the two hooks ``init_app`` is given (app.py passes cache/changes.py's): the
tables' triggers (init.sql, note_cache_changes) report each change to this
session as a notice, because the connections set ``api.report_changes``;
``reports()`` becomes each connection's notice list and keeps them, and once
the statement or transaction has committed, ``after_commit(changes)`` gets
what it changed.
"""

import logging
import os
import select
import threading
import time
from contextlib import contextmanager

import psycopg2
import psycopg2.extensions
import psycopg2.extras
from flask import current_app, g

log = logging.getLogger(__name__)


class PoolTimeout(Exception):
    """Every connection of the pool stayed busy for the whole wait."""


# SQLSTATEs of a server that will not take this connection's writes again: one
# that is read-only (25006: a primary demoted during a switch, a standby,
# default_transaction_read_only) or is shutting down or starting (57P01-57P03).
# Reconnecting is the cure: with a multi-host DATABASE_URL and
# target_session_attrs=read-write, libpq finds the new primary.
SERVER_CANNOT_WRITE = frozenset({"25006", "57P01", "57P02", "57P03"})


class CommitNotReplicated(psycopg2.OperationalError):
    """The commit's wait for the synchronous standby was cancelled (the
    statement timeout, while a primary cut off from its standby waits to be
    demoted): committed on this server alone, which a failover may undo. Not
    an acknowledgement: a 503 like any database error, and a retry with the
    same Idempotency-Key finds out which it was."""


def server_cannot_write(error):
    """Whether ``error`` says the server cannot take writes now (SERVER_CANNOT_WRITE).
    psycopg2 raises 25006 as an InternalError, the others as OperationalErrors."""
    return isinstance(error, psycopg2.Error) and error.pgcode in SERVER_CANNOT_WRITE


def unavailable(error):
    """Whether ``error`` says PostgreSQL cannot serve this now, and a retry
    shortly may succeed: unreachable, every connection busy, or reached but
    unable to take writes (a switch of primary)."""
    return isinstance(error, (psycopg2.OperationalError, psycopg2.InterfaceError, PoolTimeout)) \
        or server_cannot_write(error)


def _drop_if_server_cannot_write(conn, error):
    # Closed, the connection is not put back: the pool drops it and its idle
    # siblings on release, which reached the same server (ConnectionPool.release).
    if server_cannot_write(error):
        conn.close()


class ConnectionPool:
    """At most ``size`` connections, opened on demand and reused last-in first-out.

    Not psycopg2.pool: that one raises at once when exhausted instead of
    waiting, and cannot drop its idle connections when the server restarts.
    """

    def __init__(self, size, dsn, metrics, reports, **connect_kwargs):
        self._metrics, self._reports = metrics, reports
        self._slots = threading.BoundedSemaphore(size)
        self._idle = []
        self._lock = threading.Lock()
        self._dsn = dsn
        self._connect_kwargs = connect_kwargs

    def acquire(self, timeout):
        waited = time.perf_counter()
        if not self._slots.acquire(timeout=timeout):
            self._metrics.POOL_TIMEOUTS.inc()
            raise PoolTimeout()
        try:
            self._metrics.POOL_WAIT.observe(time.perf_counter() - waited)
            self._metrics.POOL_IN_USE.inc()
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is not None and not _hung_up(conn):
                return conn
            if conn is not None:
                # The server said goodbye while this one sat idle (a restart):
                # so did it to the other idle ones.
                conn.close()
                self.discard_idle()
            conn = psycopg2.connect(self._dsn, **self._connect_kwargs)
            conn.autocommit = True
            conn.notices = self._reports()
            return conn
        except BaseException:
            self._slots.release()  # first: whatever else fails, the slot is back
            self._metrics.POOL_IN_USE.dec()
            raise

    def release(self, conn):
        try:
            if _is_broken(conn):
                conn.close()
                # A lost connection usually means the server restarted: the
                # idle ones are dead too, and the next requests should not
                # each discover that with an error.
                self.discard_idle()
            else:
                with self._lock:
                    self._idle.append(conn)
        finally:
            self._slots.release()
            self._metrics.POOL_IN_USE.dec()

    def discard_idle(self):
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def _hung_up(conn):
    """An idle connection has nothing to read, unless the server has sent its
    "terminating connection" or closed the socket: one poll, no round trip."""
    readable, _, _ = select.select([conn], [], [], 0)
    return bool(readable)


def _is_broken(conn):
    if conn.closed:
        return True
    status = conn.info.transaction_status
    if status == psycopg2.extensions.TRANSACTION_STATUS_IDLE:
        return False
    if status == psycopg2.extensions.TRANSACTION_STATUS_UNKNOWN:
        return True
    try:  # left inside a transaction by an error: clean it for the next user
        conn.rollback()
        conn.autocommit = True
        return False
    except psycopg2.Error:
        return True


def _pool():
    """This process's pool for the current app, created on first use after fork."""
    app = current_app._get_current_object()
    state = app.extensions["db"]
    pid, pool = state["pool"]
    if pid != os.getpid():
        with state["lock"]:
            pid, pool = state["pool"]
            if pid != os.getpid():
                cfg = app.config
                pool = ConnectionPool(
                    cfg["DB_POOL_SIZE"],
                    cfg["DATABASE_URL"],
                    app.extensions["metrics"],
                    state["reports"],
                    connect_timeout=cfg["DB_CONNECT_TIMEOUT"],
                    # A statement sent to a server cut off since fails after this
                    # long unacknowledged, not after TCP's many retransmissions.
                    tcp_user_timeout=cfg["DB_CONNECT_TIMEOUT"] * 1000,
                    options=f"-c statement_timeout={cfg['DB_STATEMENT_TIMEOUT_MS']} -c TimeZone=UTC"
                    " -c api.report_changes=on",
                    application_name="api",
                    cursor_factory=psycopg2.extras.RealDictCursor,
                )
                state["pool"] = (os.getpid(), pool)
    return pool


def get_db():
    """The request's connection, taken from the pool on first use."""
    if "db" not in g:
        timeout = current_app.config["DB_CONNECT_TIMEOUT"]
        g.db = _pool().acquire(timeout)
    return g.db


def _release_db(exc=None):
    conn = g.pop("db", None)
    if conn is not None:
        _pool().release(conn)


def _run(sql, params, fetch):
    conn = get_db()
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            result = fetch(cur)
    except BaseException as error:
        if conn.autocommit:
            conn.notices.take()  # the statement failed: nothing it noted was committed
        _drop_if_server_cannot_write(conn, error)
        raise
    if conn.autocommit:  # the statement was a transaction of its own, now committed
        _committed(conn)
    return result


def fetch_one(sql, params=()):
    return _run(sql, params, lambda cur: cur.fetchone())


def fetch_all(sql, params=()):
    return _run(sql, params, lambda cur: cur.fetchall())


def write_one(sql, params=()):
    """One statement, committed as it ends; the row it returns (RETURNING), or None."""
    return _run(sql, params, lambda cur: cur.fetchone() if cur.description else None)


@contextmanager
def transaction():
    """A cursor inside one transaction: committed on success, rolled back on
    error. Inside another transaction (an idempotent POST's, infra/idempotency.py),
    part of that one: committed, or not, with it."""
    conn = get_db()
    if not conn.autocommit:
        with conn.cursor() as cur:
            yield cur
        return
    conn.autocommit = False
    try:
        with conn, conn.cursor() as cur:
            yield cur
    except BaseException as error:
        conn.notices.take()  # rolled back: nothing changed
        g.pop("db_on_commit", None)
        _drop_if_server_cannot_write(conn, error)
        raise
    finally:
        if not conn.closed:
            conn.autocommit = True
    callbacks = g.pop("db_on_commit", ())
    _committed(conn)
    for callback in callbacks:
        callback()


def on_commit(callback):
    """Calls ``callback()`` once the current transaction has committed, at once
    outside one, never if it rolls back: a task queued before the commit could
    run before its row is there to see."""
    if get_db().autocommit:
        callback()
    else:
        g.setdefault("db_on_commit", []).append(callback)


def _committed(conn):
    unreplicated, conn.notices.unreplicated = conn.notices.unreplicated, False
    if conn.notices.changes:  # on this server at least: invalidated all the same
        current_app.extensions["db"]["after_commit"](conn.notices.take())
    if unreplicated:
        raise CommitNotReplicated("the commit's synchronous standby did not confirm it")


def init_app(app, reports, after_commit):
    """``reports()``: a new connection's notice list, which keeps what the
    capture triggers report in ``changes`` and gives it up with ``take()``;
    ``after_commit(changes)``: called after each commit that changed cached
    tables, with {table: [primary keys as text]}."""
    app.extensions["db"] = {"pool": (None, None), "lock": threading.Lock(),
                            "reports": reports, "after_commit": after_commit}
    app.teardown_appcontext(_release_db)
