"""Health: is the database reachable, is the cache reachable, does the relay keep up;
and, for probes that must not depend on them, does this process answer at all."""

import logging

import marshmallow as ma
import psycopg2
import redis
from flask import current_app
from flask.views import MethodView

from blueprints import Blueprint
from cache import l2, monitor
from cache.relay import BACKLOG_SQL
from infra import db

blp = Blueprint("health", __name__, description="Liveness and dependencies")
log = logging.getLogger(__name__)


class LiveSchema(ma.Schema):
    status = ma.fields.String(metadata={"description": "alive"})


class HealthSchema(ma.Schema):
    status = ma.fields.String(metadata={"description": "healthy or unhealthy"})
    database = ma.fields.String(metadata={"description": "ok or down"})
    cache = ma.fields.String(metadata={"description": "ok or down; the API works without it"})
    relay = ma.fields.Dict(
        metadata={"description": "the cache relay: state (ok, or behind: L2 unused meanwhile), "
                  "changes_waiting, oldest_change_s"}
    )
    consistency = ma.fields.Dict(
        metadata={"description": "the relay's consistency monitor over its last window_s: state (ok, "
                  "inconsistent, or unknown when no monitor reports), checks, inconsistent, last_inconsistency"}
    )


def _database_ok():
    try:
        db.fetch_one("SELECT 1")
        return True
    except (psycopg2.Error, db.PoolTimeout) as error:
        log.warning("health: database down: %s", error)
        return False


def _cache_state():
    """(cache reachable, relay caught up)."""
    try:
        return True, l2.of_app().caught_up()
    except redis.RedisError as error:
        log.warning("health: cache down: %s", error)
        return False, False


def _relay(caught_up, database_ok):
    waiting = {}
    if database_ok:
        try:
            waiting = db.fetch_one(BACKLOG_SQL)
        except psycopg2.Error as error:  # e.g. a database init.sql has not reached yet
            log.warning("health: relay backlog unknown: %s", error)
    return {
        "state": "ok" if caught_up else "behind",
        "changes_waiting": waiting.get("changes"),
        "oldest_change_s": waiting.get("oldest_s"),
    }


def _consistency():
    """What the relay's consistency monitor last published (cache/monitor.py)."""
    try:
        published = monitor.status(current_app)
    except redis.RedisError as error:
        log.warning("health: consistency unknown: %s", error)
        published = None
    if published is None:
        return {"state": "unknown"}
    return {"state": "inconsistent" if published["inconsistent"] else "ok", **published}


@blp.route("/health")
@blp.route("/api/health")
class Health(MethodView):
    @blp.response(200, HealthSchema)
    @blp.alt_response(503, schema=HealthSchema, description="The database is unreachable")
    def get(self):
        """Report the service's health; 503 when PostgreSQL is unreachable"""
        database_ok = _database_ok()
        cache_ok, caught_up = _cache_state()
        body = {
            "status": "healthy" if database_ok else "unhealthy",
            "database": "ok" if database_ok else "down",
            "cache": "ok" if cache_ok else "down",
            "relay": _relay(caught_up, database_ok),
            "consistency": _consistency(),
        }
        # no-store: nginx must not answer health checks from its cache.
        return body, 200 if database_ok else 503, {"Cache-Control": "no-store"}


@blp.route("/health/live")
class Live(MethodView):
    @blp.response(200, LiveSchema)
    def get(self):
        """Report that this process answers, asking nothing of PostgreSQL or Redis

        For liveness and readiness probes (Kubernetes, Swarm): an outage of the
        data tier must neither restart every app nor take every L1 out of
        service, since L1 keeps answering within its bounds meanwhile.
        """
        return {"status": "alive"}, 200, {"Cache-Control": "no-store"}
