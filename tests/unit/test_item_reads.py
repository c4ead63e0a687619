"""The item reads' fast path (cache/reads.py), where it needs no service: what it refuses at start.
Its answers are tested on PostgreSQL and Redis in tests/app/test_item_reads.py."""

from types import SimpleNamespace

import pytest
from flask import Flask
from flask.views import MethodView
from flask_smorest import Api

from blueprints import Blueprint
from blueprints.users import USERS
from cache import Levels, reads
from cache.resources import Registry


def test_an_item_route_without_one_id_argument_stops_the_start():
    app = Flask(__name__)
    app.extensions["cache"] = Levels(Registry(), SimpleNamespace(enabled=True), "")
    app.config.update(API_TITLE="t", API_VERSION="1", OPENAPI_VERSION="3.0.3")
    blp = Blueprint("things", __name__)

    @blp.route("/things/<int:thing_id>/<int:part>")
    class ThingById(MethodView):
        @blp.item_of(USERS, missing="No thing {}.")
        def get(self, thing_id, part):
            """Get a thing"""

    Api(app).register_blueprint(blp)
    with pytest.raises(RuntimeError, match="things.ThingById: item_of needs a route with one argument"):
        reads.init_app(app)
