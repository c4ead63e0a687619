"""The application factory: settings, infrastructure, then one blueprint per domain.

gunicorn serves ``app:create_app()`` (gunicorn.conf.py); the relay (relay.py)
and the worker (worker.py) build their app with it too; tests call it with a
``test_config``. Nothing builds an app at import.
"""

from flask import Flask

import cache
from blueprints import accounts, addresses, docs, health, incidents, orders, users
from cache import changes, reads
from infra import db, errors, http, metrics, request_log, security, settings, tasks


def create_app(test_config=None):
    app = Flask(__name__, static_folder=None)
    app.config.update(settings.app_settings())
    app.config.update(_openapi_settings())
    if test_config:
        app.config.update(test_config)
    _check_secrets(app)

    request_log.configure_logging(app.config["LOG_LEVEL"])
    http.init_app(app)
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


def register_infrastructure(app):
    metrics.init_app(app)
    # A commit's changes of cached tables reach both cache levels (cache/changes.py).
    db.init_app(app, reports=changes.ChangeReports, after_commit=changes.invalidate_after_commit)
    cache.init_app(app)
    errors.init_app(app)
    security.init_app(app)
    tasks.init_app(app)


def register_blueprints(app):
    api = errors.ErrorShapedApi()
    api.init_app(app)
    api.register_blueprint(users.blp)
    api.register_blueprint(addresses.blp, url_prefix=app.config["ENDPOINT_PREFIX"])
    api.register_blueprint(incidents.blp)
    api.register_blueprint(accounts.blp)
    api.register_blueprint(orders.blp)
    api.register_blueprint(health.blp)
    app.register_blueprint(docs.blp)


def register_wsgi_layers(app):
    """The WSGI middleware around Flask, innermost first."""
    reads.init_app(app)  # the fast path reads the blueprints' routes: after register_blueprints
    request_log.init_app(app)  # logs the fast path's answers too
    http.wrap_outermost(app)
