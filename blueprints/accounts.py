"""Accounts: register with email and password, exchange them for a bearer
token, and read, change or delete your own account (/api/user/me).

Accounts are a table of their own, apart from the public users CRUD, which
anyone may change. No API returns the password hash. A change of email or
password raises the account's token version, which refuses every token
issued before it (infra/security.py); deleting the account refuses them all.
"""

import functools

import marshmallow as ma
from flask.views import MethodView
from flask_jwt_extended import create_access_token, jwt_required
from flask_smorest import abort
from werkzeug.security import check_password_hash, generate_password_hash

from blueprints import BEARER_AUTH, Blueprint, MessageSchema, TrimmedSchema, printable
from blueprints.users import EMAIL_RULES, NAME_RULES
from infra import db
from infra.security import ACCOUNT_COLUMNS, BEARER, auth_rate_limit, current_account, current_account_id, limiter

blp = Blueprint("accounts", __name__, url_prefix="/api/user", description="Accounts and tokens")

PASSWORD_RULES = ma.validate.Length(8, 128)


class RegisterSchema(TrimmedSchema):
    UNTRIMMED = frozenset({"password"})

    email = ma.fields.Email(required=True, validate=EMAIL_RULES)
    password = ma.fields.String(
        required=True, load_only=True, validate=PASSWORD_RULES, metadata={"description": "8 to 128 characters"}
    )
    name = ma.fields.String(validate=NAME_RULES, metadata={"description": "defaults to the email's local part"})


class AccountSchema(ma.Schema):
    id = ma.fields.Integer()
    name = ma.fields.String()
    email = ma.fields.String()
    created_at = ma.fields.DateTime()


class CurrentPasswordSchema(ma.Schema):
    current_password = ma.fields.String(required=True, load_only=True, validate=ma.validate.Length(1, 128))


class AccountChangeSchema(TrimmedSchema):
    UNTRIMMED = frozenset({"password", "current_password"})

    name = ma.fields.String(validate=NAME_RULES)
    email = ma.fields.Email(validate=EMAIL_RULES, metadata={"description": "needs current_password"})
    password = ma.fields.String(load_only=True, validate=PASSWORD_RULES,
                                metadata={"description": "8 to 128 characters; needs current_password"})
    current_password = ma.fields.String(load_only=True, validate=ma.validate.Length(1, 128))

    @ma.validates_schema
    def complete(self, data, **kwargs):
        if not data.keys() - {"current_password"}:
            raise ma.ValidationError("Give name, email, password or several.")
        if data.keys() & {"email", "password"} and "current_password" not in data:
            raise ma.ValidationError("A new email or password needs the current password.", "current_password")


class TokenRequestSchema(ma.Schema):
    username = ma.fields.String(required=True, validate=[ma.validate.Length(1, 100), printable],
                                metadata={"description": "the account's email"})
    password = ma.fields.String(required=True, load_only=True, validate=ma.validate.Length(1, 128))


class TokenSchema(ma.Schema):
    access_token = ma.fields.String()
    token_type = ma.fields.String(metadata={"example": "bearer"})


def access_token(account):
    """A bearer token for ``account`` (its id and token_version): a new email
    or password raises the version and refuses every older token."""
    return create_access_token(identity=str(account["id"]), additional_claims={"ver": account["token_version"]})


@functools.cache
def _decoy_hash():
    """Checked when no account matches, so a wrong email costs as long as a wrong password."""
    return generate_password_hash("decoy password, never valid")


def _check_current_password(account_id, password):
    row = db.fetch_one("SELECT password_hash FROM accounts WHERE id = %s", (account_id,))
    if row is None or not check_password_hash(row["password_hash"], password):
        abort(403, message="The current password is wrong.")


@blp.route("/register")
class Register(MethodView):
    decorators = [limiter.limit(auth_rate_limit)]

    @blp.arguments(RegisterSchema)
    @blp.idempotent()
    @blp.response(201, AccountSchema)
    @blp.errors(400, 409, 415, 429)
    def post(self, account):
        """Create an account"""
        name = account.get("name") or account["email"].split("@", 1)[0][:100]
        return db.write_one(
            f"""
            INSERT INTO accounts (name, email, password_hash)
            VALUES (%s, %s, %s)
            RETURNING {ACCOUNT_COLUMNS}
            """,
            (name, account["email"], generate_password_hash(account["password"])),
        )


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
            SELECT id, password_hash, token_version
            FROM accounts
            WHERE lower(email) = lower(%s)
            """,
            (credentials["username"],),
        )
        valid = check_password_hash(account["password_hash"] if account else _decoy_hash(), credentials["password"])
        if not (account and valid):
            abort(401, message="Wrong email or password.", headers=BEARER)
        return {"access_token": access_token(account), "token_type": "bearer"}, {"Cache-Control": "no-store"}


@blp.route("/me")
class Me(MethodView):
    @jwt_required()
    @blp.response(200, AccountSchema)
    @blp.errors(401)
    @blp.doc(security=BEARER_AUTH)
    def get(self):
        """Your account"""
        return current_account()  # read with the token's check (infra/security.py): no second read

    @limiter.limit(auth_rate_limit)  # current_password is a password to guess
    @jwt_required()
    @blp.arguments(AccountChangeSchema)
    @blp.response(200, AccountSchema)
    @blp.errors(400, 401, 403, 409, 415, 429)
    @blp.doc(security=BEARER_AUTH)
    def patch(self, changes):
        """Change your name, email or password; a new email or password refuses every earlier token"""
        account_id = current_account_id()
        if "current_password" in changes:
            _check_current_password(account_id, changes["current_password"])
        new_hash = generate_password_hash(changes["password"]) if "password" in changes else None
        changed = db.write_one(
            f"""
            UPDATE accounts
            SET name = COALESCE(%s, name),
                email = COALESCE(%s, email),
                password_hash = COALESCE(%s, password_hash),
                token_version = token_version + %s
            WHERE id = %s
            RETURNING {ACCOUNT_COLUMNS}
            """,
            (changes.get("name"), changes.get("email"), new_hash,
             int(bool(changes.keys() & {"email", "password"})), account_id),
        )
        if changed is None:  # deleted since the token was checked
            abort(401, message="This token's account no longer exists.", headers=BEARER)
        return changed

    @limiter.limit(auth_rate_limit)
    @jwt_required()
    @blp.arguments(CurrentPasswordSchema)
    @blp.response(200, MessageSchema)
    @blp.errors(400, 401, 403, 415, 429)
    @blp.doc(security=BEARER_AUTH)
    def delete(self, confirmation):
        """Delete your account and its orders (body: current_password); its tokens stop working"""
        account_id = current_account_id()
        _check_current_password(account_id, confirmation["current_password"])
        db.write_one("DELETE FROM accounts WHERE id = %s RETURNING id", (account_id,))
        return {"message": "Deleted"}
