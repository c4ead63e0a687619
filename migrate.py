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

It runs as the schema's owner (MIGRATE_DATABASE_URL), and then gives the
app's role (DATABASE_URL's user, created if missing, its password set from
that URL) rows and nothing else: SELECT, INSERT, UPDATE and DELETE on the
schema's tables, their sequences' next values, and no way to change the
schema, create tables (temporary ones included) or read the migrations'
records. What an SQL injection could do is bounded by that.

Two started at once (two app containers, say) take turns on a PostgreSQL
advisory lock, which a killed process releases with its connection.

    python migrate.py    upgrade MIGRATE_DATABASE_URL's database for DATABASE_URL's role
"""

import argparse
import logging
import sys
from pathlib import Path

import psycopg2
from psycopg2 import errors, sql
from psycopg2.extensions import parse_dsn
from yoyo import get_backend, read_migrations

from infra import settings

log = logging.getLogger("api.migrate")

INIT_SQL = Path(__file__).with_name("init.sql")
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


def _grant_rows_only(cur, app_url):
    """DATABASE_URL's role may log in and use the rows of the schema's tables: nothing more."""
    params = parse_dsn(app_url)
    cur.execute("SELECT current_user, current_database()")
    owner, database = cur.fetchone()
    role = params.get("user")
    if role in (None, owner):
        log.warning("migrate: the app connects as the schema's owner (%s): give it a role of its own", owner)
        return
    try:
        cur.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        log.info("migrate: created the app's role %s", role)
    except errors.DuplicateObject:
        pass  # made earlier, or by a migrate.py of another database just now
    if params.get("password"):
        cur.execute(sql.SQL("ALTER ROLE {} PASSWORD %s").format(sql.Identifier(role)), (params["password"],))
    cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename NOT LIKE %s",
                ("%yoyo%",))
    tables = [sql.Identifier(name) for (name,) in cur.fetchall()]
    grants = [
        # PostgreSQL 15 already refuses the schema to everyone; a cluster
        # made by an older one did not.
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
        "REVOKE TEMPORARY ON DATABASE {database} FROM PUBLIC",
        "GRANT CONNECT ON DATABASE {database} TO {role}",
        "GRANT USAGE ON SCHEMA public TO {role}",
        "GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE {tables} TO {role}",
        "GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}",
    ]
    for grant in grants:
        cur.execute(sql.SQL(grant).format(database=sql.Identifier(database), role=sql.Identifier(role),
                                          tables=sql.SQL(", ").join(tables)))


def migrate(url, app_url=None):
    """Bring the database at ``url`` (as its owner) to this release's schema
    and give ``app_url``'s role its rows; returns the ids of the migrations applied."""
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
        if app_url:
            with conn.cursor() as cur:
                _grant_rows_only(cur, app_url)
        applied = [migration.id for migration in pending]
        log.info("migrate: applied %s", ", ".join(applied) if applied else "nothing (up to date)")
        return applied
    finally:
        conn.close()  # and with it the lock


def main():
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = settings.app_settings()
    migrate(config["MIGRATE_DATABASE_URL"] or config["DATABASE_URL"], config["DATABASE_URL"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
