"""Idempotency-Key: a client that retries a POST (after a timeout, a 503, a
switch of PostgreSQL primary) gets the first answer again, and nothing is
created twice.

Each view that creates takes the header through ``blp.idempotent()``
(blueprints/__init__.py), which reads the request and hands ``answer_once``
what identifies it: a scope, the key and the request itself. Then, in one
transaction, which the view's own writes join (``db.transaction``):

1. An advisory lock on (scope, key). A request whose key is held by another
   still running is answered 409 with Retry-After at once, as the IETF draft
   (draft-ietf-httpapi-idempotency-key-header) says. Waiting would hold a
   gunicorn thread and a connection behind a request that may itself be
   stuck, which is often why the client retried.
2. The key is looked up. A live one (younger than IDEMPOTENCY_KEY_TTL) answers
   its stored answer, marked ``Idempotent-Replayed: true``, if this request is
   the one it answered (same fingerprint), and 422 if not.
3. Otherwise the view runs. A 2xx answer is stored under the key in the same
   transaction as the write, so the two are committed, or lost, together
   (with synchronous replication, they reach the standby together). Any
   other answer rolls back, and the key stays free for a retry.

Correctness never waits for the purge: an expired row is ignored by the
lookup and replaced by the next answer. The worker's ``idempotency.purge``
(every 10 minutes, infra/tasks.py) deletes expired rows, for space.
"""

import hashlib
import hmac
import json
import logging

import psycopg2
from celery import shared_task
from flask import Response, current_app
from flask_smorest import abort

from infra import db

log = logging.getLogger(__name__)

REPLAYED_HEADER = "Idempotent-Replayed"
# The two-key form of the advisory locks, apart from migrate.py's one-key lock.
LOCK_CLASS = 7401
# Rows deleted per statement: a purge after a long pause stays within statement_timeout.
PURGE_BATCH = 10_000


class _NotKept(Exception):
    """The view answered, but not with a 2xx: the transaction rolls back and the answer goes out."""

    def __init__(self, response):
        self.response = response


def fingerprint(request_parts):
    """HMAC of what identifies a request: keyed with the app's secret, so a
    stored one reveals nothing of the body (a password, at registration)."""
    text = json.dumps(request_parts, sort_keys=True, separators=(",", ":"), default=str)
    return hmac.new(current_app.config["SECRET_KEY"].encode(), text.encode(), hashlib.sha256).digest()


def answer_once(scope, key, request_parts, respond):
    """The answer to the request made of ``request_parts`` (JSON-able: method,
    path, arguments) and sent with ``key`` in ``scope``: ``respond()``'s the
    first time, the first answer again to a repeat."""
    ttl = current_app.config["IDEMPOTENCY_KEY_TTL"]
    request_print = fingerprint(request_parts)
    try:
        with db.transaction() as cur:
            # Two keys whose hashes collide take turns too: a rare 409, never a wrong answer.
            cur.execute("SELECT pg_try_advisory_xact_lock(%s, hashtext(%s)) AS free", (LOCK_CLASS, f"{scope}\n{key}"))
            if not cur.fetchone()["free"]:
                abort(409, message="A request with this Idempotency-Key is still in progress: retry shortly.",
                      headers={"Retry-After": "1"})
            cur.execute(
                """
                SELECT fingerprint, status, headers, body
                FROM idempotency_keys
                WHERE scope = %s
                  AND key = %s
                  AND created_at > now() - make_interval(secs => %s)
                """,
                (scope, key, ttl),
            )
            stored = cur.fetchone()
            if stored is not None:
                return _replay(stored, request_print)
            response = respond()
            if not 200 <= response.status_code < 300:
                raise _NotKept(response)
            headers = [[name, value] for name, value in response.headers.items() if name.lower() != "content-length"]
            # A row already there has expired (the lookup found none, and the lock keeps others out): replace it.
            cur.execute(
                """
                INSERT INTO idempotency_keys (scope, key, fingerprint, status, headers, body)
                VALUES (%s, %s, %s, %s, %s, %s)
                ON CONFLICT (scope, key) DO UPDATE
                SET fingerprint = EXCLUDED.fingerprint,
                    status = EXCLUDED.status,
                    headers = EXCLUDED.headers,
                    body = EXCLUDED.body,
                    created_at = EXCLUDED.created_at
                """,
                (scope, key, request_print, response.status_code, json.dumps(headers), response.get_data(as_text=True)),
            )
            return response
    except _NotKept as not_kept:
        return not_kept.response


def _replay(stored, request_print):
    if not hmac.compare_digest(bytes(stored["fingerprint"]), request_print):
        abort(422, message="This Idempotency-Key was sent with another request: use a new key for a new request.",
              errors={"headers": {"Idempotency-Key": ["Already used for another request."]}})
    response = Response(stored["body"], status=stored["status"], headers=stored["headers"])
    response.headers[REPLAYED_HEADER] = "true"
    return response


@shared_task(name="idempotency.purge")
def purge_expired():
    """Delete the keys older than IDEMPOTENCY_KEY_TTL; how many were deleted."""
    ttl, purged = current_app.config["IDEMPOTENCY_KEY_TTL"], 0
    while True:
        try:
            deleted = db.write_one(
                """
                WITH expired AS (
                    DELETE FROM idempotency_keys
                    WHERE (scope, key) IN (
                        SELECT scope, key
                        FROM idempotency_keys
                        WHERE created_at <= now() - make_interval(secs => %s)
                        LIMIT %s
                    )
                    RETURNING 1
                )
                SELECT count(*) AS n
                FROM expired
                """,
                (ttl, PURGE_BATCH),
            )["n"]
        except (psycopg2.Error, db.PoolTimeout) as error:
            if not db.unavailable(error):
                raise
            # Down or switching: the next purge deletes what this one could not.
            log.warning("idempotency purge: PostgreSQL cannot take it now: %s", " ".join(str(error).split()))
            return purged
        purged += deleted
        if deleted < PURGE_BATCH:
            return purged
