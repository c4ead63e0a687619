"""The benchmark's baseline: a bare Flask view returning fixed bytes (BENCH_BODY_FILE).

Served by gunicorn with the project's gunicorn.conf.py, so the only difference
from the real app is the work the real app does per request.
"""

import os

from flask import Flask, Response

app = Flask(__name__)

with open(os.environ["BENCH_BODY_FILE"], "rb") as body_file:
    BODY = body_file.read()


@app.get("/<path:anything>")
def fixed_body(anything):
    return Response(BODY, mimetype="application/json")
