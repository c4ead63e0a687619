"""Docs in a browser: Swagger UI served from the swagger-ui-bundle package, no CDN.

The page and its start-up script are files of our own (docs_page/): with no
inline script, nginx can send a Content-Security-Policy of script-src 'self'.
"""

from pathlib import Path

from flask import Blueprint, current_app, jsonify, send_from_directory
from swagger_ui_bundle import swagger_ui_path

blp = Blueprint("docs", __name__)

PAGE_DIR = Path(__file__).parent / "docs_page"


@blp.get("/docs")
def swagger_ui():
    return send_from_directory(PAGE_DIR, "index.html", max_age=60)


@blp.get("/docs/swagger-init.js")
def swagger_ui_init():
    return send_from_directory(PAGE_DIR, "swagger-init.js", max_age=60)


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
