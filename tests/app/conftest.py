"""The app in-process, on the real PostgreSQL and Redis of a running stack
(the one scripts/test.sh starts, or make up's for make test-app):

  a database of its own (<name>_test), made once per run by migrate.py as the
  stack's schema owner (MIGRATE_DATABASE_URL), and used by the app as the
  stack's app role (DATABASE_URL's), rows only, as in production;
  Redis db 1, so the stack's own data and cache are never touched.
"""

import os
import shutil
import tempfile
import threading
from urllib.parse import parse_qsl, urlencode, urlsplit

import psycopg2
import pytest
from psycopg2 import sql
import redis

from app import create_app
from cache.l2 import CAUGHT_UP
from migrate import migrate
from cache.relay import Relay
from tests.support.bounds import UNPROMISED_WAIT
from tests.support.servers import Link, RedisServer
from tests.support import stack
from tests.support.stack import setting, with_database
from tests.support.waiting import eventually


def _with_redis_db(url, number):
    base, _, query = url.partition("?")
    params = dict(parse_qsl(query))
    params["db"] = str(number)
    return f"{base}?{urlencode(params)}"


@pytest.fixture(scope="session")
def test_database_owner_url():
    """A fresh database beside the stack's, created once per run: as its owner."""
    owner = setting("MIGRATE_DATABASE_URL")
    name = f"{urlsplit(owner).path.lstrip('/') or 'app'}_test"
    admin = psycopg2.connect(owner)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cur.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    url = with_database(owner, name)
    os.environ["TEST_DATABASE_URL"] = url  # for tests that write as an operator's psql would
    return url


@pytest.fixture(scope="session")
def test_database_url(test_database_owner_url):
    """The test database as the app's role sees it, once migrate.py made it."""
    url = with_database(setting("DATABASE_URL"), urlsplit(test_database_owner_url).path.lstrip("/"))
    migrate(test_database_owner_url, url)
    return url


@pytest.fixture(scope="session")
def test_redis_url():
    return _with_redis_db(setting("REDIS_URL"), 1)


@pytest.fixture(scope="session")
def make_app(test_database_url, test_redis_url):
    """Builds an app on the test database and Redis db; overrides win."""

    def make(**overrides):
        config = {
            "DATABASE_URL": test_database_url,
            "REDIS_URL": test_redis_url,
            # Every app of the run counts rate limits in one place (flask-limiter
            # keeps one storage per process), with limits no other test reaches.
            "RATE_LIMIT_STORAGE_URL": test_redis_url,
            "QUEUE_REDIS_URL": test_redis_url,
            "RATE_LIMIT_AUTH": "1000 per minute",
            "RATE_LIMIT_ORDERS": "1000 per minute",
            "CACHE_RETRY_AFTER": 0.2,
            # No nginx here: the relay refreshes nothing in L1.
            "L1_REFRESH_URLS": [],
        }
        config.update(overrides)
        return create_app(config)

    return make


@pytest.fixture(scope="session")
def app(make_app):
    return make_app()


class RunningRelay:
    """The cache relay (cache/relay.py) of one app, in a thread of this process."""

    def __init__(self, app):
        self.app = app
        self.start()

    def start(self):
        self.relay = Relay(self.app)
        self.thread = threading.Thread(target=self.relay.run, name="test-relay", daemon=True)
        self.thread.start()

    def stop(self):
        self.relay.stop()
        self.thread.join(10)


@pytest.fixture(scope="session")
def session_relay(app):
    """The relay of the test database and Redis db: one per run, like a stack's."""
    running = RunningRelay(app)
    yield running
    running.stop()


@pytest.fixture
def relay_for(app, session_relay):
    """``relay_for(other_app)`` runs the relay for an app with a Redis of its
    own instead of the session's, until the test ends."""
    started = []

    def run(other_app):
        session_relay.stop()
        started.append(RunningRelay(other_app))
        return started[-1]

    yield run
    for running in started:
        running.stop()
    if started:
        session_relay.start()


def wait_caught_up(redis_url):
    """Until the relay has said it caught up in that Redis (cache.CAUGHT_UP)."""
    client = redis.Redis.from_url(redis_url)
    eventually(lambda: client.exists(CAUGHT_UP), seconds=UNPROMISED_WAIT, step=0.01)
    client.close()


def wait_applied(app):
    """Until the relay has applied every noted change: it applies each once
    more after the writer's own invalidation, which would retire a value
    cached in between."""
    stack.wait_applied(app.config["DATABASE_URL"])


@pytest.fixture(scope="session")
def owner_connection(test_database_owner_url, test_database_url):
    """The test database as its owner (migrate.py has made it)."""
    conn = psycopg2.connect(test_database_owner_url)
    yield conn
    conn.close()


@pytest.fixture
def read_only(owner_connection):
    """``read_only(True)``: the test database's new sessions refuse writes, as a
    primary demoted during a switch does (SQLSTATE 25006); ``read_only(False)``
    and the test's end undo it. Sessions opened before keep what they had."""

    def set_read_only(on):
        with owner_connection, owner_connection.cursor() as cur:
            cur.execute("SELECT current_database()")
            database = sql.Identifier(cur.fetchone()[0])
            statement = "ALTER DATABASE {} SET default_transaction_read_only = on" if on else \
                "ALTER DATABASE {} RESET default_transaction_read_only"
            cur.execute(sql.SQL(statement).format(database))

    yield set_read_only
    set_read_only(False)


@pytest.fixture(scope="session")
def seed_users(owner_connection):
    """The rows init.sql seeds: put back before each test, cheaper than init.sql again."""
    with owner_connection, owner_connection.cursor() as cur:
        cur.execute("SELECT name, email FROM users ORDER BY id")
        return cur.fetchall()


@pytest.fixture(autouse=True)
def clean_state(owner_connection, seed_users, test_redis_url, session_relay):
    """Every test starts from the seed rows, an empty cache and a relay caught up."""
    with owner_connection, owner_connection.cursor() as cur:
        cur.execute("TRUNCATE users, accounts, customer_addresses, incidents, orders, idempotency_keys RESTART IDENTITY")
        cur.executemany("INSERT INTO users (name, email) VALUES (%s, %s)", seed_users)
    redis.Redis.from_url(test_redis_url).flushdb()
    wait_caught_up(test_redis_url)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def redis_server():
    """A Redis server of this test's own, which the test may stop and start."""
    directory = tempfile.mkdtemp(prefix="redis-")
    socket_path = os.path.join(directory, "redis.sock")
    server = RedisServer(socket_path)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def redis_link(redis_server):
    """The path to ``redis_server`` through a link the test may cut and mend."""
    link = Link(redis_server.socket_path)
    yield link
    link.close()
