"""Users: create, read, list, update and delete, cached in both levels."""

import marshmallow as ma
from flask.views import MethodView
from flask_smorest import abort

from blueprints import (
    BIGINT_ID,
    PAGINATION_DOC,
    Blueprint,
    MessageSchema,
    PageArgsSchema,
    TrimmedSchema,
    pagination_header,
    printable,
)
from cache.reads import list_response
from infra import db
from infra.responses import pack, to_json

blp = Blueprint("users", __name__, description="User accounts: CRUD")

MAX_PAGE_SIZE = 1000


NAME_RULES = [ma.validate.Length(1, 100), printable]
EMAIL_RULES = [ma.validate.Length(max=100), printable]


class UserSchema(TrimmedSchema):
    id = ma.fields.Integer(dump_only=True)
    name = ma.fields.String(
        required=True,
        validate=NAME_RULES,
        metadata={"description": "1 to 100 printable characters"},
    )
    email = ma.fields.Email(
        required=True,
        validate=EMAIL_RULES,
        metadata={"description": "unique, case-insensitively"},
    )
    created_at = ma.fields.DateTime(dump_only=True, metadata={"description": "ISO 8601, UTC"})


class UserUpdateSchema(UserSchema):
    name = ma.fields.String(validate=NAME_RULES)
    email = ma.fields.Email(validate=EMAIL_RULES)

    @ma.validates_schema
    def not_empty(self, data, **kwargs):
        if not data:
            raise ma.ValidationError("Give name, email or both.")


class UserQueryArgsSchema(PageArgsSchema):
    page_size = ma.fields.Integer(
        load_default=100, validate=ma.validate.Range(min=1, max=MAX_PAGE_SIZE)
    )


class CreatedSchema(ma.Schema):
    id = ma.fields.Integer()
    message = ma.fields.String()


def user_json(row):
    """UserSchema's dump, written out: far cheaper than marshmallow's on a
    full page (a test checks that the two agree)."""
    return {"id": row["id"], "name": row["name"], "email": row["email"], "created_at": row["created_at"].isoformat()}


def _load_user(user_id):
    row = db.fetch_one(
        """
        SELECT id, name, email, created_at
        FROM users
        WHERE id = %s
        """,
        (user_id,),
    )
    return None if row is None else to_json(user_json(row))


def _load_page(args):
    page, page_size, cursor = args["page"], args["page_size"], args.get("cursor")
    total = db.fetch_one("SELECT n AS total FROM row_counts WHERE name = 'users'")["total"]
    rows = db.fetch_all(
        """
        SELECT id, name, email, created_at
        FROM users
        WHERE id > %s
        ORDER BY id
        LIMIT %s
        OFFSET %s
        """,
        (cursor or 0, page_size, (page - 1) * page_size),
    )
    header = pagination_header(total, page_size, rows, page=None if cursor is not None else page)
    return pack(to_json([user_json(row) for row in rows]), header)


USERS = blp.cached_resource("users", table="users", load=_load_user, lists=True)


@blp.route("/users")
class Users(MethodView):
    @blp.arguments(UserQueryArgsSchema, location="query")
    @blp.response(200, UserSchema(many=True), headers=PAGINATION_DOC)
    def get(self, args):
        """List users, ordered by id; page or cursor"""
        query = f"{args['page']}:{args['page_size']}:{args.get('cursor', '')}"
        return list_response(USERS, query, lambda: _load_page(args))

    @blp.arguments(UserSchema)
    @blp.idempotent()
    @blp.response(201, CreatedSchema)
    @blp.errors(400, 409, 415)
    def post(self, user):
        """Create a user"""
        user_id = db.write_one(
            """
            INSERT INTO users (name, email)
            VALUES (%s, %s)
            RETURNING id
            """,
            (user["name"], user["email"]),
        )["id"]
        return {"id": user_id, "message": "Created"}, {"Location": f"/users/{user_id}"}


@blp.route(f"/users/<{BIGINT_ID}:user_id>")
class UserById(MethodView):
    @blp.response(200, UserSchema)
    @blp.errors(404)
    @blp.item_of(USERS, missing="User {} not found.")
    def get(self, user_id):
        """Get one user"""

    @blp.arguments(UserUpdateSchema)
    @blp.response(200, MessageSchema)
    @blp.errors(400, 404, 409, 415)
    def put(self, changes, user_id):
        """Update a user's name, email or both"""
        found = db.write_one(
            """
            UPDATE users
            SET name = COALESCE(%s, name),
                email = COALESCE(%s, email)
            WHERE id = %s
            RETURNING id
            """,
            (changes.get("name"), changes.get("email"), user_id),
        )
        if found is None:
            abort(404, message=f"User {user_id} not found.")
        return {"message": "Updated"}

    @blp.response(200, MessageSchema)
    @blp.errors(404)
    def delete(self, user_id):
        """Delete a user"""
        if db.write_one("DELETE FROM users WHERE id = %s RETURNING id", (user_id,)) is None:
            abort(404, message=f"User {user_id} not found.")
        return {"message": "Deleted"}
