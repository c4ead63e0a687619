"""The app against a PostgreSQL that drops its connections or cannot be reached."""

import psycopg2

from tests.support.accounts import new_account, place
from tests.support.bounds import UNPROMISED_WAIT
from tests.support.errors import assert_error
from tests.support.waiting import eventually


def test_no_connection_is_opened_before_the_first_request(make_app):
    app = make_app()
    assert app.extensions["db"]["pool"] == (None, None)
    app.test_client().get("/users/1")
    assert app.extensions["db"]["pool"] != (None, None)


def test_connections_the_server_dropped_while_idle_are_replaced_unseen(make_app, test_database_url):
    client = make_app(CACHE_ENABLED=False).test_client()
    assert client.get("/users/1").status_code == 200  # leaves an idle connection in the pool

    # What a PostgreSQL restart does to every idle connection.
    admin = psycopg2.connect(test_database_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(
            """
            SELECT pg_terminate_backend(pid)
            FROM pg_stat_activity
            WHERE datname = current_database()
              AND application_name = 'api'
              AND pid <> pg_backend_pid()
            """
        )
        assert cur.rowcount >= 1

        def backends():
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND application_name = 'api' AND pid <> pg_backend_pid()")
            return cur.fetchone()[0]

        # pg_terminate_backend only signals: the connections are gone once their backends are.
        eventually(backends, lambda n: n == 0, seconds=UNPROMISED_WAIT)
    admin.close()

    assert client.get("/users/1").status_code == 200
    assert client.put("/users/1", json={"name": "Alice Again"}).status_code == 200


def test_writes_get_a_clear_503_when_postgresql_is_unreachable(make_app, tmp_path):
    app = make_app(DATABASE_URL=f"postgresql:///app?host={tmp_path}&user=app", DB_CONNECT_TIMEOUT=1)
    response = app.test_client().post("/users", json={"name": "Eve", "email": "eve@example.com"})
    assert_error(response, 503)
    assert response.headers["Retry-After"] == "1"


def test_a_write_that_meets_a_read_only_server_gets_a_503_and_the_next_write_a_new_connection(
        make_app, read_only, owner_connection):
    read_only(True)
    client = make_app(CACHE_ENABLED=False).test_client()  # a new pool: its first session is read-only
    response = client.post("/users", json={"name": "Eve", "email": "eve@example.com"})
    assert_error(response, 503)
    assert response.headers["Retry-After"] == "1"

    read_only(False)
    # A pooled connection would keep its read-only session and refuse this
    # write too: the pool dropped it, and this one is new.
    assert client.post("/users", json={"name": "Eve", "email": "eve@example.com"}).status_code == 201
    with owner_connection, owner_connection.cursor() as cur:
        cur.execute("SELECT count(*) FROM users WHERE email = 'eve@example.com'")
        assert cur.fetchone()[0] == 1


def test_a_rate_limited_route_keeps_its_own_retry_after(make_app, read_only):
    """The limiter's window says when to retry a 429, not a 503 or a 201."""
    client = make_app(CACHE_ENABLED=False, RATE_LIMIT_ORDERS="5 per hour").test_client()
    account = new_account(client.application)
    placed = place(client, account)
    assert placed.status_code == 201 and "Retry-After" not in placed.headers
    read_only(True)
    refused = place(make_app(CACHE_ENABLED=False, RATE_LIMIT_ORDERS="5 per hour").test_client(), account)
    assert_error(refused, 503)
    assert refused.headers["Retry-After"] == "1"
