"""Docs in a browser: Swagger UI served from the swagger-ui-bundle package, no CDN.

The page and its start-up script are files of our own (docs_page/): with no
inline script, nginx can send a Content-Security-Policy of script-src 'self'.
The title is the API's, from the OpenAPI settings (API_TITLE).
"""

from pathlib import Path

from flask import Blueprint, current_app, jsonify, render_template, send_from_directory
from swagger_ui_bundle import swagger_ui_path

PAGE_DIR = Path(__file__).parent / "docs_page"

blp = Blueprint("docs", __name__, template_folder=PAGE_DIR)


@blp.get("/docs")
def swagger_ui():
    return render_template("docs.html", title=current_app.config["API_TITLE"])


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
            "name": current_app.config["API_TITLE"],
            "docs": "/docs",
            "openapi": "/openapi.json",
            "health": "/health",
            "domains": ["/users", current_app.config["ENDPOINT_PREFIX"], "/incident", "/api/user", "/api/orders"],
        }
    )
