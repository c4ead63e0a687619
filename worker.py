"""The Celery worker's entry point: ``celery -A worker worker -Q orders -B``.

It builds the same Flask app as gunicorn, so tasks use the same settings,
database pool and cache; the tasks are defined with their domains.
"""

from app import app as flask_app

# Named `celery`, and no attribute named `app`: that is what `celery -A worker` looks for.
celery = flask_app.extensions["celery"]
