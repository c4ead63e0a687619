"""The connection pool against a server that drops its connections."""

import time

import psycopg2


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
    admin.close()
    time.sleep(0.2)

    assert client.get("/users/1").status_code == 200
    assert client.put("/users/1", json={"name": "Alice Again"}).status_code == 200
