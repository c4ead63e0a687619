"""Incidents, on the paths the original incident service defined; lists cached in L2."""

import marshmallow as ma
from flask.views import MethodView
from flask_smorest import abort

from blueprints import (
    BIGINT_ID,
    MAX_BIGINT,
    PAGINATION_DOC,
    Blueprint,
    PageArgsSchema,
    TrimmedSchema,
    pagination_header,
    printable_with_line_breaks,
)
from cache.reads import list_response
from infra import db
from infra.responses import json_response, pack, to_json

blp = Blueprint("incidents", __name__, url_prefix="/incident", description="Incident log")

STATUSES = ("new", "completed", "failed")
SOURCES = ("operator", "monitoring", "partner")
PLACEHOLDERS = {"test", "none", "null"}
CREATED_AT_FORMAT = "%Y-%m-%d %H:%M:%S"


def _meaningful(message):
    if message.lower() in PLACEHOLDERS:
        raise ma.ValidationError("Describe the incident: placeholders are not accepted.")


class IncidentCreateSchema(TrimmedSchema):
    incident_message = ma.fields.String(
        required=True,
        validate=[ma.validate.Length(5, 1000), printable_with_line_breaks, _meaningful],
        metadata={"description": "5 to 1000 characters after trimming; not test/none/null"},
    )
    incident_type = ma.fields.String(required=True, validate=ma.validate.OneOf(STATUSES))
    source = ma.fields.String(required=True, validate=ma.validate.OneOf(SOURCES))


class SecondsTimestamp(ma.fields.String):
    """A UTC time as ``YYYY-MM-DD HH:MM:SS``, the incident API's original format.

    A String, not DateTime(format=...): apispec documents a custom DateTime
    format as ``format: null``, which is not valid OpenAPI.
    """

    def _serialize(self, value, attr, obj, **kwargs):
        return None if value is None else value.strftime(CREATED_AT_FORMAT)


class IncidentSchema(ma.Schema):
    incident_id = ma.fields.Integer(attribute="id")
    incident_message = ma.fields.String(attribute="message")
    incident_type = ma.fields.String(attribute="status")
    source = ma.fields.String()
    created_at = SecondsTimestamp(
        metadata={"description": "UTC, YYYY-MM-DD HH:MM:SS", "pattern": r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$"}
    )


class IncidentCreatedSchema(ma.Schema):
    message = ma.fields.String()
    incident_id = ma.fields.Integer()


class IncidentQueryArgsSchema(PageArgsSchema):
    limit = ma.fields.Integer(load_default=10, validate=ma.validate.Range(1, 100))
    status = ma.fields.String(validate=ma.validate.OneOf(STATUSES))
    source = ma.fields.String(validate=ma.validate.OneOf(SOURCES))


class IncidentStatusArgsSchema(ma.Schema):
    incident_id = ma.fields.Integer(required=True, validate=ma.validate.Range(1, MAX_BIGINT))
    status = ma.fields.String(required=True, validate=ma.validate.OneOf(STATUSES))


def incident_json(row):
    """IncidentSchema's dump, written out: far cheaper than marshmallow's on a
    page (a test checks that the two agree)."""
    return {
        "incident_id": row["id"],
        "incident_message": row["message"],
        "incident_type": row["status"],
        "source": row["source"],
        "created_at": row["created_at"].strftime(CREATED_AT_FORMAT),
    }


SELECT_INCIDENT = """
    SELECT id, message, status, source, created_at
    FROM incidents
"""


def _load_incident(incident_id):
    row = db.fetch_one(SELECT_INCIDENT + "WHERE id = %s", (incident_id,))
    return None if row is None else to_json(incident_json(row))


FILTERS = """
    (%(status)s::text IS NULL OR status = %(status)s)
    AND (%(source)s::text IS NULL OR source = %(source)s)
"""


def _load_page(args):
    cursor = args.get("cursor")
    params = {
        "status": args.get("status"),
        "source": args.get("source"),
        "before": MAX_BIGINT if cursor is None else cursor,
        "limit": args["limit"],
        "offset": (args["page"] - 1) * args["limit"],
    }
    total = db.fetch_one("SELECT coalesce(sum(n), 0)::bigint AS total FROM incident_counts WHERE" + FILTERS, params)["total"]
    rows = db.fetch_all(
        SELECT_INCIDENT
        + "WHERE"
        + FILTERS
        + """
        AND id < %(before)s
        ORDER BY id DESC
        LIMIT %(limit)s
        OFFSET %(offset)s
        """,
        params,
    )
    header = pagination_header(total, args["limit"], rows, page=None if cursor is not None else args["page"])
    return pack(to_json([incident_json(row) for row in rows]), header)


INCIDENTS = blp.cached_resource("incidents", table="incidents", load=_load_incident, lists=True)


@blp.route("/create")
class IncidentCreate(MethodView):
    @blp.arguments(IncidentCreateSchema)
    @blp.idempotent()
    @blp.response(201, IncidentCreatedSchema)
    @blp.errors(400, 415)
    def post(self, incident):
        """Report an incident"""
        incident_id = db.write_one(
            """
            INSERT INTO incidents (message, status, source)
            VALUES (%s, %s, %s)
            RETURNING id
            """,
            (incident["incident_message"], incident["incident_type"], incident["source"]),
        )["id"]
        return {"message": "Incident created", "incident_id": incident_id}


@blp.route("/get")
class IncidentList(MethodView):
    @blp.arguments(IncidentQueryArgsSchema, location="query")
    @blp.response(200, IncidentSchema(many=True), headers=PAGINATION_DOC)
    def get(self, args):
        """List incidents, newest first, optionally by status and source; page or cursor"""
        query = ":".join(str(args.get(k, "")) for k in ("page", "limit", "cursor", "status", "source"))
        return list_response(INCIDENTS, query, lambda: _load_page(args))


@blp.route(f"/get/<{BIGINT_ID}:incident_id>")
class IncidentById(MethodView):
    @blp.response(200, IncidentSchema)
    @blp.errors(404)
    @blp.item_of(INCIDENTS, missing="Incident {} not found.")
    def get(self, incident_id):
        """Get one incident"""


@blp.route("/update-status")
class IncidentStatus(MethodView):
    @blp.arguments(IncidentStatusArgsSchema, location="query")
    @blp.response(200, IncidentSchema)
    @blp.errors(404)
    def patch(self, args):
        """Change an incident's status"""
        incident_id = args["incident_id"]
        row = db.write_one(
            """
            UPDATE incidents
            SET status = %s
            WHERE id = %s
            RETURNING id, message, status, source, created_at
            """,
            (args["status"], incident_id),
        )
        if row is None:
            abort(404, message=f"Incident {incident_id} not found.")
        return json_response(to_json(incident_json(row)))
