"""The application factory: settings, infrastructure, then one blueprint per domain.

``gunicorn app:app`` serves the module-level ``app``; tests call ``create_app``.
"""

from flask import Flask
from flask.sessions import SessionInterface
from flask_smorest import Api
from werkzeug.middleware.proxy_fix import ProxyFix

import db
import errors
import item_reads
import request_log
import security
import settings
import tasks
from blueprints import accounts, addresses, docs, health, incidents, orders, users
from cache import cache


def create_app(test_config=None):
    app = Flask(__name__, static_folder=None)
    app.config.update(settings.app_settings())
    app.config.update(_openapi_settings())
    if test_config:
        app.config.update(test_config)
    _check_secrets(app)

    request_log.configure_logging(app.config["LOG_LEVEL"])
    register_http(app)
    register_infrastructure(app)
    register_blueprints(app)
    register_wsgi_layers(app)
    return app


def _openapi_settings():
    return {
        "API_TITLE": "Users, addresses, incidents and orders API",
        "API_VERSION": "1.0",
        "OPENAPI_VERSION": "3.0.3",
        "OPENAPI_URL_PREFIX": "/",
        "OPENAPI_JSON_PATH": "openapi.json",
        "API_SPEC_OPTIONS": {
            "components": {"securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}}
        },
    }


def _check_secrets(app):
    secret = app.config["SECRET_KEY"]
    if app.config["APP_ENV"] == "production" and (secret == settings.EXAMPLE_SECRET_KEY or len(secret) < 32):
        raise RuntimeError("Set SECRET_KEY to a real secret of 32+ characters: production refuses the example one.")


def register_http(app):
    # OPTIONS is answered like any method a resource does not take: a JSON 405
    # whose Allow header lists what it does. Flask's own answer is an empty
    # text/html page.
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    # Compact bodies with fields in schema order: {"id":4,"message":"Created"}.
    app.json.compact = True
    app.json.sort_keys = False
    app.json.ensure_ascii = False
    app.session_interface = NoSessions()
    # nginx refuses bodies over 256 KiB (client_max_body_size), the largest
    # an operation takes (an order); the app keeps the same limit for anything
    # that reaches it another way, and each operation its own
    # (errors.MAX_BODY_BYTES).
    app.config["MAX_CONTENT_LENGTH"] = 256 * 1024


class NoSessions(SessionInterface):
    """The API keeps no cookie sessions. Flask's default interface would still
    build a signing serializer on every request: about a tenth of a cached GET."""

    def open_session(self, app, request):
        return None  # Flask then uses its NullSession

    def save_session(self, app, session, response):
        pass


class ReadWhatIsLeftOfTheBody:
    """Reads the part of a body the app left unread (a refused request's, say),
    up to MAX_CONTENT_LENGTH. gunicorn drains at most 64 KiB of it to keep
    the connection; past that it closes it, and nginx, still sending the
    body, answers 502 instead of the app's answer."""

    def __init__(self, wsgi_app, most):
        self.wsgi_app, self.most = wsgi_app, most

    def __call__(self, environ, start_response):
        try:
            return self.wsgi_app(environ, start_response)
        finally:
            if environ.get("CONTENT_LENGTH") or environ.get("HTTP_TRANSFER_ENCODING"):
                body, left = environ["wsgi.input"], self.most
                while left > 0 and (chunk := body.read(min(left, 65536))):
                    left -= len(chunk)


def register_wsgi_layers(app):
    """The WSGI middleware around Flask, innermost first."""
    item_reads.init_app(app)  # reads the blueprints' routes: after register_blueprints
    request_log.init_app(app)  # logs its answers too
    # Everything inside sees the client nginx reported. nginx is the one
    # trusted hop: it sets X-Forwarded-For to the peer address.
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=0)
    # Outermost: whoever answered, the rest of the body is read.
    app.wsgi_app = ReadWhatIsLeftOfTheBody(app.wsgi_app, app.config["MAX_CONTENT_LENGTH"])


def register_infrastructure(app):
    db.init_app(app)
    cache.init_app(app)
    errors.init_app(app)
    security.init_app(app)
    tasks.init_app(app)


def register_blueprints(app):
    api = Api()
    api.init_app(app)
    api.register_blueprint(users.blp)
    api.register_blueprint(addresses.blp, url_prefix=app.config["ENDPOINT_PREFIX"])
    api.register_blueprint(incidents.blp)
    api.register_blueprint(accounts.blp)
    api.register_blueprint(orders.blp)
    api.register_blueprint(health.blp)
    app.register_blueprint(docs.blp)


app = create_app()
