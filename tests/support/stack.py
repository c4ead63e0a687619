"""What scripts/test.sh tells the tests about their stack: its settings
(its stack.env, BASE_URL), exported in the environment. Only the tiers that
need a stack ask, and only from a fixture or a test: the unit tier never does."""

import os
from urllib.parse import urlsplit

import psycopg2
import pytest

from tests.support.bounds import UNPROMISED_WAIT
from tests.support.waiting import eventually


def setting(name):
    """The stack's ``name``; without it the run stops, saying how to start one."""
    value = os.environ.get(name)
    if not value:
        pytest.exit(f"{name} is not set: run the tests with 'make test' (or 'make test-app' beside 'make up')",
                    returncode=2)
    return value


def app_socket():
    """The path of the app's unix socket (gunicorn's WEB_BIND)."""
    return setting("WEB_BIND").removeprefix("unix:")


def wait_applied(database_url=None):
    """Until the relay has applied every committed change of the database
    (the stack's by default): cache_changes is empty."""
    conn = psycopg2.connect(database_url or setting("DATABASE_URL"))
    conn.autocommit = True  # each look sees what committed since the last
    try:
        with conn.cursor() as cur:
            def waiting():
                cur.execute("SELECT count(*) FROM cache_changes")
                return cur.fetchone()[0]

            eventually(waiting, lambda count: count == 0, seconds=UNPROMISED_WAIT, step=0.01)
    finally:
        conn.close()


def with_database(url, name):
    """``url`` (a URI, as DATABASE_URL is) naming database ``name`` instead."""
    parts = urlsplit(url)  # urlunsplit would drop the // of an empty host
    return f"{parts.scheme}://{parts.netloc}/{name}" + (f"?{parts.query}" if parts.query else "")
