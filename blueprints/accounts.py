"""Accounts: register with email and password, exchange them for a bearer token.

Accounts are rows of the users table with a password hash, which no API returns.
"""

import functools

import marshmallow as ma
from flask.views import MethodView
from flask_jwt_extended import create_access_token
from flask_smorest import abort
from werkzeug.security import check_password_hash, generate_password_hash

import db
from blueprints import Blueprint, printable
from blueprints.users import EMAIL_RULES, NAME_RULES
from security import BEARER, auth_rate_limit, limiter

blp = Blueprint("accounts", __name__, url_prefix="/api/user", description="Accounts and tokens")

PASSWORD_RULES = ma.validate.Length(8, 128)


class RegisterSchema(ma.Schema):
    email = ma.fields.Email(required=True, validate=EMAIL_RULES)
    password = ma.fields.String(
        required=True, load_only=True, validate=PASSWORD_RULES, metadata={"description": "8 to 128 characters"}
    )
    name = ma.fields.String(validate=NAME_RULES, metadata={"description": "defaults to the email's local part"})

    @ma.pre_load
    def strip_email_and_name(self, data, **kwargs):
        # Never the password: its spaces are part of it.
        if isinstance(data, dict):
            return {k: v.strip() if k in ("email", "name") and isinstance(v, str) else v for k, v in data.items()}
        return data


class AccountSchema(ma.Schema):
    id = ma.fields.Integer()
    email = ma.fields.String()
    created_at = ma.fields.DateTime()


class TokenRequestSchema(ma.Schema):
    username = ma.fields.String(required=True, validate=[ma.validate.Length(1, 100), printable],
                                metadata={"description": "the account's email"})
    password = ma.fields.String(required=True, load_only=True, validate=ma.validate.Length(1, 128))


class TokenSchema(ma.Schema):
    access_token = ma.fields.String()
    token_type = ma.fields.String(metadata={"example": "bearer"})


@functools.cache
def _decoy_hash():
    """Checked when no account matches, so a wrong email costs as long as a wrong password."""
    return generate_password_hash("decoy password, never valid")


@blp.route("/register")
class Register(MethodView):
    decorators = [limiter.limit(auth_rate_limit)]

    @blp.arguments(RegisterSchema)
    @blp.response(201, AccountSchema)
    @blp.errors(400, 409, 415, 429)
    def post(self, account):
        """Create an account"""
        name = account.get("name") or account["email"].split("@", 1)[0][:100]
        created = db.write_one(
            """
            INSERT INTO users (name, email, password_hash)
            VALUES (%s, %s, %s)
            RETURNING id, email, created_at
            """,
            (name, account["email"], generate_password_hash(account["password"])),
        )
        return created


@blp.route("/token/")
class Token(MethodView):
    decorators = [limiter.limit(auth_rate_limit)]

    @blp.arguments(TokenRequestSchema, location="form")
    @blp.response(200, TokenSchema)
    @blp.errors(401, 429)
    def post(self, credentials):
        """Exchange email and password (form fields username, password) for a bearer token"""
        account = db.fetch_one(
            """
            SELECT id, password_hash
            FROM users
            WHERE lower(email) = lower(%s)
            """,
            (credentials["username"],),
        )
        known = account is not None and account["password_hash"] is not None
        valid = check_password_hash(account["password_hash"] if known else _decoy_hash(), credentials["password"])
        if not (known and valid):
            abort(401, message="Wrong email or password.", headers=BEARER)
        token = create_access_token(identity=str(account["id"]))
        return {"access_token": token, "token_type": "bearer"}, {"Cache-Control": "no-store"}
