"""Docs in a browser: Swagger UI served from the swagger-ui-bundle package, no CDN."""

from flask import Blueprint, current_app, jsonify, send_from_directory
from swagger_ui_bundle import swagger_ui_path

blp = Blueprint("docs", __name__)

ASSETS_URL = "/docs/assets/"


@blp.get("/docs/assets/<path:filename>")
def swagger_ui_asset(filename):
    return send_from_directory(swagger_ui_path, filename, max_age=3600)


@blp.get("/")
def index():
    return jsonify(
        {
            "name": "Users, addresses, incidents and orders API",
            "docs": "/docs",
            "openapi": "/openapi.json",
            "health": "/health",
            "domains": ["/users", current_app.config["ENDPOINT_PREFIX"], "/incident", "/api/user", "/api/orders"],
        }
    )
