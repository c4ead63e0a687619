"""Health: is the database reachable, is the cache reachable."""

import logging

import marshmallow as ma
import psycopg2
import redis
from flask.views import MethodView

import db
from blueprints import Blueprint
from cache import cache

blp = Blueprint("health", __name__, description="Liveness and dependencies")
log = logging.getLogger(__name__)


class HealthSchema(ma.Schema):
    status = ma.fields.String(metadata={"description": "healthy or unhealthy"})
    database = ma.fields.String(metadata={"description": "ok or down"})
    cache = ma.fields.String(metadata={"description": "ok or down; the API works without it"})


def _database_ok():
    try:
        db.fetch_one("SELECT 1")
        return True
    except (psycopg2.Error, db.PoolTimeout) as error:
        log.warning("health: database down: %s", error)
        return False


def _cache_ok():
    try:
        return bool(cache.client().ping())
    except redis.RedisError as error:
        log.warning("health: cache down: %s", error)
        return False


@blp.route("/health")
@blp.route("/api/health")
class Health(MethodView):
    @blp.response(200, HealthSchema)
    @blp.alt_response(503, schema=HealthSchema, description="The database is unreachable")
    def get(self):
        """Report the service's health; 503 when PostgreSQL is unreachable"""
        database_ok = _database_ok()
        body = {
            "status": "healthy" if database_ok else "unhealthy",
            "database": "ok" if database_ok else "down",
            "cache": "ok" if _cache_ok() else "down",
        }
        # no-store: nginx must not answer health checks from its cache.
        return body, 200 if database_ok else 503, {"Cache-Control": "no-store"}
