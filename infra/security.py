"""Who may call what: JWT bearer tokens, rate limits per client address, and
no shared caching of anything a token can see."""

import functools
from datetime import timedelta

from flask import current_app, request
from flask_jwt_extended import JWTManager, current_user
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from infra import db, redis_url
from infra.errors import error_response

jwt = JWTManager()
# remote_addr is the client as nginx saw it: ProxyFix trusts exactly one hop.
limiter = Limiter(key_func=get_remote_address)

BEARER = {"WWW-Authenticate": "Bearer"}


def auth_rate_limit():
    return current_app.config["RATE_LIMIT_AUTH"]


def orders_rate_limit():
    return current_app.config["RATE_LIMIT_ORDERS"]


def _unauthorized(message):
    return error_response(401, message, BEARER)


def _claims_are_complete(header, claims):
    """A signature is not enough: the token must expire, and name an account
    id and the token version it was issued under (blueprints/accounts.py)."""
    sub = claims.get("sub")
    return (
        isinstance(claims.get("exp"), int)
        and isinstance(sub, str) and sub.isascii() and sub.isdigit() and len(sub) <= 18  # a BIGINT
        and isinstance(claims.get("ver"), int)
    )


# What a request knows of its token's account (GET /api/user/me answers it).
ACCOUNT_COLUMNS = "id, name, email, created_at"


def _account_of(header, claims):
    """The token's account, while it exists and has not changed email or
    password since: one primary-key read per authenticated request."""
    account = db.fetch_one(f"SELECT {ACCOUNT_COLUMNS}, token_version FROM accounts WHERE id = %s",
                           (int(claims["sub"]),))
    return account if account is not None and account["token_version"] == claims["ver"] else None


def current_account():
    """The account whose token this request carries (after @jwt_required), as read for it."""
    return current_user


def current_account_id():
    return current_user["id"]


def _init_jwt(app):
    jwt.init_app(app)
    jwt.token_verification_loader(_claims_are_complete)
    jwt.user_lookup_loader(_account_of)
    jwt.unauthorized_loader(lambda reason: _unauthorized("Send 'Authorization: Bearer <token>'."))
    jwt.invalid_token_loader(lambda reason: _unauthorized("The token is not valid."))
    jwt.token_verification_failed_loader(lambda header, payload: _unauthorized("The token is not valid."))
    jwt.expired_token_loader(lambda header, payload: _unauthorized("The token has expired."))
    jwt.user_lookup_error_loader(
        lambda header, payload: _unauthorized("The token is no longer valid (account changed or deleted): sign in again.")
    )


def _private_when_authenticated(response):
    # Whatever a token can see is for that client alone: no shared cache keeps it.
    if "Authorization" in request.headers:
        response.headers["Cache-Control"] = "private, no-store"
    return response


# The blueprints whose views carry rate limits (blueprints/accounts.py, orders.py).
LIMITED_BLUEPRINTS = ("accounts", "orders")


def _init_limiter_for(app, blueprints):
    """flask-limiter, with its per-request hooks only where limits are.

    Every limit here decorates its view, and a decorated view checks its own
    limits. The app-wide before_request hook serves default limits, which this
    API has none of; the after_request and teardown hooks (rate-limit headers,
    per-request state) matter only on limited blueprints. Together they cost
    an unlimited cached GET a large share of its time, so they move there.
    """
    hooks = {"before": app.before_request_funcs, "after": app.after_request_funcs,
             "teardown": app.teardown_request_funcs}
    before = {kind: list(funcs.get(None, [])) for kind, funcs in hooks.items()}
    limiter.init_app(app)
    for kind, funcs in hooks.items():
        added = [f for f in funcs.get(None, []) if f not in before[kind]]
        funcs[None] = before[kind]
        if kind == "after":
            added = [_keeping_retry_after(f) for f in added]
        if kind != "before":
            for blueprint in blueprints:
                funcs.setdefault(blueprint, []).extend(added)


def _keeping_retry_after(inject_headers):
    """flask-limiter sets Retry-After on every answer of a limited route, to
    its window's reset (a minute, say); only a 429 means that. Any other
    answer keeps its own (a 503's second during a database switch) or none."""

    @functools.wraps(inject_headers)
    def after_request(response):
        own = response.headers.get("Retry-After")
        response = inject_headers(response)
        if response.status_code != 429:
            if own is None:
                response.headers.pop("Retry-After", None)
            else:
                response.headers["Retry-After"] = own
        return response

    return after_request


def init_app(app):
    cfg = app.config
    cfg["JWT_SECRET_KEY"] = cfg["SECRET_KEY"]
    cfg["JWT_ACCESS_TOKEN_EXPIRES"] = timedelta(minutes=cfg["JWT_EXPIRES_MINUTES"])
    storage_uri, storage_options = redis_url.for_limits(cfg["RATE_LIMIT_STORAGE_URL"] or cfg["REDIS_URL"])
    cfg["RATELIMIT_STORAGE_URI"] = storage_uri
    cfg["RATELIMIT_STORAGE_OPTIONS"] = {
        "socket_timeout": cfg["CACHE_TIMEOUT"],
        "socket_connect_timeout": cfg["CACHE_TIMEOUT"],
        **storage_options,
    }
    # Redis trouble must not lock clients out: count in memory meanwhile.
    cfg["RATELIMIT_SWALLOW_ERRORS"] = True
    cfg["RATELIMIT_IN_MEMORY_FALLBACK_ENABLED"] = True
    cfg["RATELIMIT_HEADERS_ENABLED"] = True
    cfg["RATELIMIT_KEY_PREFIX"] = "ratelimit"
    _init_jwt(app)
    _init_limiter_for(app, LIMITED_BLUEPRINTS)
    app.after_request(_private_when_authenticated)
