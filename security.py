"""Who may call what: JWT bearer tokens, rate limits per client address, and
no shared caching of anything a token can see."""

from datetime import timedelta

from flask import current_app, request
from flask_jwt_extended import JWTManager
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from errors import error_response

jwt = JWTManager()
# remote_addr is the client as nginx saw it: ProxyFix trusts exactly one hop.
limiter = Limiter(key_func=get_remote_address)

BEARER = {"WWW-Authenticate": "Bearer"}


def auth_rate_limit():
    return current_app.config["RATE_LIMIT_AUTH"]


def orders_rate_limit():
    return current_app.config["RATE_LIMIT_ORDERS"]


def _limits_storage_url(redis_url):
    """The `limits` library spells a unix-socket Redis redis+unix://."""
    if redis_url.startswith("unix://"):
        return "redis+" + redis_url
    return redis_url


def _unauthorized(message):
    return error_response(401, message, BEARER)


def _register_jwt_errors():
    jwt.unauthorized_loader(lambda reason: _unauthorized("Send 'Authorization: Bearer <token>'."))
    jwt.invalid_token_loader(lambda reason: _unauthorized("The token is not valid."))
    jwt.expired_token_loader(lambda header, payload: _unauthorized("The token has expired."))


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
    an unlimited cached GET about a fifth of its time, so they move there.
    """
    hooks = {"before": app.before_request_funcs, "after": app.after_request_funcs,
             "teardown": app.teardown_request_funcs}
    before = {kind: list(funcs.get(None, [])) for kind, funcs in hooks.items()}
    limiter.init_app(app)
    for kind, funcs in hooks.items():
        added = [f for f in funcs.get(None, []) if f not in before[kind]]
        funcs[None] = before[kind]
        if kind != "before":
            for blueprint in blueprints:
                funcs.setdefault(blueprint, []).extend(added)


def init_app(app):
    cfg = app.config
    cfg["JWT_SECRET_KEY"] = cfg["SECRET_KEY"]
    cfg["JWT_ACCESS_TOKEN_EXPIRES"] = timedelta(minutes=cfg["JWT_EXPIRES_MINUTES"])
    cfg["RATELIMIT_STORAGE_URI"] = _limits_storage_url(cfg["RATE_LIMIT_STORAGE_URL"] or cfg["REDIS_URL"])
    cfg["RATELIMIT_STORAGE_OPTIONS"] = {
        "socket_timeout": cfg["CACHE_TIMEOUT"],
        "socket_connect_timeout": cfg["CACHE_TIMEOUT"],
    }
    # Redis trouble must not lock clients out: count in memory meanwhile.
    cfg["RATELIMIT_SWALLOW_ERRORS"] = True
    cfg["RATELIMIT_IN_MEMORY_FALLBACK_ENABLED"] = True
    cfg["RATELIMIT_HEADERS_ENABLED"] = True
    cfg["RATELIMIT_KEY_PREFIX"] = "ratelimit"
    jwt.init_app(app)
    _init_limiter_for(app, LIMITED_BLUEPRINTS)
    _register_jwt_errors()
    app.after_request(_private_when_authenticated)
