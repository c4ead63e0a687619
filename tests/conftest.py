"""The suite, laid out by what each part needs:

  tests/app/     the app in-process (Flask's test client) on the real
                 PostgreSQL and Redis of a running stack: a database and a
                 Redis db of their own. The inner loop: make test-app.
  tests/stack/   the running stack from outside, through its nginx (BASE_URL).
  tests/faults/  drills that stop, kill and cut the services of a stack of
                 their own (make faults).

scripts/test.sh starts a throwaway stack for each and exports its settings
(its stack.env, BASE_URL); make test-app uses the one make up runs.
"""

import os
from urllib.parse import urlsplit

import pytest

os.environ.setdefault("APP_ENV", "test")
os.environ.setdefault("SECRET_KEY", "test-secret-key-of-at-least-32-bytes")


def stack_setting(name):
    value = os.environ.get(name)
    if not value:
        pytest.exit(f"{name} is not set: run the tests with 'make test' (or 'make test-app' beside 'make up')",
                    returncode=2)
    return value


def with_database(url, name):
    """``url`` (a URI, as DATABASE_URL is) naming database ``name`` instead."""
    parts = urlsplit(url)  # urlunsplit would drop the // of an empty host
    return f"{parts.scheme}://{parts.netloc}/{name}" + (f"?{parts.query}" if parts.query else "")


def pytest_terminal_summary(terminalreporter):
    from tests.helpers import REPORTS  # noqa: PLC0415

    for name, lines in REPORTS:
        terminalreporter.section(name)
        for line in lines:
            terminalreporter.write_line(line)
