"""The schema's way in (migrate.py): init.sql for an empty database, which
may run again harmlessly, and upgrades in place: a database of an earlier
release reaches this release's schema, exactly init.sql's, with every row kept."""

import os
import re
import subprocess
import sys

import psycopg2
import pytest

from migrate import INIT_SQL, migrate
from tests.support import ROOT
from tests.support.bounds import UNPROMISED_WAIT
from tests.support.stack import with_database

# The schema and seed rows of the last release before migrations (init.sql at fd008d1).
BEFORE_MIGRATIONS = ROOT / "tests" / "fixtures" / "init-before-migrations.sql"


@pytest.fixture
def new_database():
    """``new_database(name)``: the URL of an empty database beside the stack's,
    as its owner, dropped afterwards."""
    stack_url = os.environ["MIGRATE_DATABASE_URL"]
    admin = psycopg2.connect(with_database(stack_url, "postgres"))
    admin.autocommit = True
    made = []

    def create(name):
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
            cur.execute(f'CREATE DATABASE "{name}"')
        made.append(name)
        return with_database(stack_url, name)

    yield create
    with admin.cursor() as cur:
        for name in made:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


def run_sql(url, sql, params=None):
    conn = psycopg2.connect(url)
    with conn, conn.cursor() as cur:
        cur.execute(sql, params)
        rows = cur.fetchall() if cur.description else None
    conn.close()
    return rows


def schema(url):
    """pg_dump's schema, without the random key of its \\restrict lines."""
    dump = subprocess.run(["pg_dump", "--schema-only", "--no-owner", "--no-privileges", url],
                          capture_output=True, text=True, check=True).stdout
    return re.sub(r"^\\(un)?restrict .*$", "", dump, flags=re.MULTILINE)


def test_a_database_from_before_migrations_reaches_init_sqls_schema_with_every_row(new_database):
    old, fresh = new_database("api_upgrade_old"), new_database("api_upgrade_fresh")
    run_sql(old, BEFORE_MIGRATIONS.read_text())
    # As that release kept them: an account was a user with a password hash.
    account_id = run_sql(old, "INSERT INTO users (name, email, password_hash) VALUES ('Ann', 'ann@example.com', 'scrypt:x')"
                              " RETURNING id")[0][0]
    run_sql(old, "INSERT INTO users (name, email) VALUES ('Dora', 'dora@example.com')")
    run_sql(old, "INSERT INTO orders (user_id, items, total_price) VALUES (%s, '[]', 1.50)", (account_id,))
    run_sql(old, "INSERT INTO customer_addresses (phone, address) VALUES ('+15551234567', '1 Main St')")
    before = {table: run_sql(old, f"SELECT count(*) FROM {table}")[0][0]
              for table in ("users", "orders", "customer_addresses", "incidents")}

    assert migrate(old) == ["0001.accounts-apart", "0002.idempotency-keys"]
    assert migrate(fresh) == []  # init.sql is already this release's schema
    assert schema(old) == schema(fresh)

    assert run_sql(old, "SELECT id, email, password_hash FROM accounts") == [(account_id, "ann@example.com", "scrypt:x")]
    assert run_sql(old, "SELECT count(*) FROM users")[0][0] == before["users"] - 1
    assert "ann@example.com" not in {email for (email,) in run_sql(old, "SELECT email FROM users")}
    assert run_sql(old, "SELECT user_id, total_price::text FROM orders") == [(account_id, "1.50")]
    for table in ("customer_addresses", "incidents"):
        assert run_sql(old, f"SELECT count(*) FROM {table}")[0][0] == before[table]
    # The counts that lists read are kept by triggers: still right after the move.
    assert run_sql(old, "SELECT n FROM row_counts WHERE name = 'users'")[0][0] == before["users"] - 1
    # A new account takes an id no moved account has.
    assert run_sql(old, "INSERT INTO accounts (name, email, password_hash) VALUES ('Bo', 'bo@example.com', 'h')"
                        " RETURNING id")[0][0] > account_id
    assert migrate(old) == []


def test_migrations_started_at_once_take_turns(new_database):
    url = new_database("api_upgrade_race")
    env = {**os.environ, "MIGRATE_DATABASE_URL": url,
           "DATABASE_URL": with_database(os.environ["DATABASE_URL"], "api_upgrade_race")}
    runs = [subprocess.Popen([sys.executable, "migrate.py"], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
            for _ in range(3)]
    outcomes = [(run.wait(timeout=UNPROMISED_WAIT), run.stderr.read()) for run in runs]
    assert [code for code, _ in outcomes] == [0, 0, 0], outcomes
    assert sum("an empty database, given init.sql" in err for _, err in outcomes) == 1, outcomes
    assert run_sql(url, "SELECT count(*) FROM _yoyo_migration")[0][0] == len(list((ROOT / "migrations").glob("*.sql")))


def test_the_apps_role_reads_and_writes_rows_and_nothing_else(new_database):
    """What an SQL injection through the app could do at most: the app's role
    (DATABASE_URL's) gets rows, never the schema, the migrations' records or
    another database."""
    owner = new_database("api_roles")
    app = with_database(os.environ["DATABASE_URL"], "api_roles")
    migrate(owner, app)

    as_app = psycopg2.connect(app)
    as_app.autocommit = True
    with as_app.cursor() as cur:
        cur.execute("INSERT INTO users (name, email) VALUES ('Eve', 'eve@example.com') RETURNING id")
        cur.execute("UPDATE users SET name = 'Eve 2' WHERE email = 'eve@example.com'")
        cur.execute("DELETE FROM users WHERE email = 'eve@example.com'")
        cur.execute("SELECT rolsuper OR rolcreatedb OR rolcreaterole OR rolbypassrls FROM pg_roles WHERE rolname = current_user")
        assert cur.fetchone() == (False,)
        for statement in ("CREATE TABLE loot (x int)", "CREATE TEMP TABLE loot (x int)", "DROP TABLE users",
                          "ALTER TABLE users ADD COLUMN x int", "TRUNCATE users", "DROP TRIGGER users_noted_insert ON users",
                          "CREATE FUNCTION f() RETURNS int AS 'SELECT 1' LANGUAGE sql",
                          "SELECT * FROM _yoyo_migration", "DELETE FROM _yoyo_migration",
                          "SELECT setval(pg_get_serial_sequence('users', 'id'), 1)"):
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute(statement)
    as_app.close()
    assert migrate(owner, app) == []  # again: nothing to apply, the grants unchanged


def test_init_sql_can_run_again_without_side_effects(owner_connection, client):
    for _ in range(2):
        with owner_connection, owner_connection.cursor() as cur:
            cur.execute(INIT_SQL.read_text())
    assert [u["name"] for u in client.get("/users").get_json()] == ["Alice", "Bob", "Charlie"]
    created = client.post("/users", json={"name": "Dana", "email": "dana@example.com"})
    assert created.get_json()["id"] == 4
