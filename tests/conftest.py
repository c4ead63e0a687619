"""The suite, laid out by what each part needs:

  tests/unit/    pure functions and files: no service, no stack settings;
                 alone in seconds (make test-unit), first in make test.
  tests/app/     the app in-process (Flask's test client) on the real
                 PostgreSQL and Redis of a running stack: a database and a
                 Redis db of their own. The inner loop: make test-app.
  tests/stack/   the running stack from outside, through its nginx (BASE_URL).
  tests/faults/  drills that stop, kill and cut the services of a stack of
                 their own (make faults).
  tests/support/ what they share: the HTTP client, the waiter, the bounds,
                 accounts, the error shape, the report.

scripts/test.sh starts a throwaway stack for each of app+stack and faults and
exports its settings (its stack.env, BASE_URL); make test-app uses the one
make up runs.
"""

import os

# The one report of the run (tests/support/reporting.py).
pytest_plugins = ["tests.support.reporting"]

# Apps the tests build are test apps; production's refusal of a missing secret is tested on its own.
os.environ.setdefault("APP_ENV", "test")
os.environ.setdefault("SECRET_KEY", "test-secret-key-of-at-least-32-bytes")
