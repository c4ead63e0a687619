"""Schema migrations: brings a database of any release of this API to this
release's schema, before the app starts (make up and docker compose run it).

``init.sql`` is the schema of a fresh database. ``migrations/`` holds, in
order, each change a database of an earlier release needs, as plain SQL files
applied by yoyo-migrations, which records the applied ones (``_yoyo_migration``)
and runs each in a transaction. There are no downgrades: restore a backup.

A database no migration has run on yet was made by an ``init.sql``: this
release's or a later one's (it has ``accounts``), whose schema every migration
already describes, so they are recorded as applied; or one from before
migrations existed (accounts were users with a password_hash), to which every
migration applies. An empty database gets ``init.sql``.

Two started at once (two app containers, say) take turns on a PostgreSQL
advisory lock, which a killed process releases with its connection.

    python migrate.py    upgrade DATABASE_URL
"""

import argparse
import logging
import sys
from pathlib import Path

import psycopg2
from yoyo import get_backend, read_migrations

import settings
from db import INIT_SQL

log = logging.getLogger("api.migrate")

MIGRATIONS = Path(__file__).with_name("migrations")
LOCK_KEY = 7_401_100_002  # pg_advisory_lock key: one migration run per database at a time


def _made_by(cur):
    """What made this database: 'migrations', 'init.sql', 'init.sql before migrations' or None (empty)."""
    cur.execute("SELECT to_regclass('_yoyo_migration'), to_regclass('accounts'), to_regclass('users')")
    managed, accounts, users = cur.fetchone()
    if managed:
        return "migrations"
    if accounts:
        return "init.sql"
    return "init.sql before migrations" if users else None


def migrate(url):
    """Bring the database at ``url`` to this release's schema; returns the ids of the migrations applied."""
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
            made_by = _made_by(cur)
            if made_by is None:
                cur.execute(INIT_SQL.read_text())  # one implicit transaction
                log.info("migrate: an empty database, given init.sql")
        backend = get_backend(url)
        try:
            migrations = read_migrations(str(MIGRATIONS))
            if made_by in (None, "init.sql"):
                backend.mark_migrations(backend.to_apply(migrations))
            pending = backend.to_apply(migrations)
            backend.apply_migrations(pending)
        finally:
            backend.connection.close()
        applied = [migration.id for migration in pending]
        log.info("migrate: applied %s", ", ".join(applied) if applied else "nothing (up to date)")
        return applied
    finally:
        conn.close()  # and with it the lock


def main():
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    migrate(settings.app_settings()["DATABASE_URL"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
