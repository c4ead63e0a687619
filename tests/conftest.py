"""Fixtures on real services: the PostgreSQL, Redis and nginx of a running stack.

scripts/test.sh starts a throwaway stack and exports its settings:
  DATABASE_URL, REDIS_URL  the stack's servers. In-process tests use a database
                           of their own (<name>_test) and Redis db 1, so the
                           stack's own data and cache are never touched.
  BASE_URL                 the stack's nginx, for the tests of the L1 level.
"""

import http.client
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from urllib.parse import parse_qsl, urlencode, urlsplit

import psycopg2
import pytest
import redis
from psycopg2.extensions import make_dsn, parse_dsn

os.environ.setdefault("APP_ENV", "test")
os.environ.setdefault("SECRET_KEY", "test-secret-key-of-at-least-32-bytes")

import db  # noqa: E402  (after the environment above: app.py builds an app on import)
from app import create_app  # noqa: E402
from cache import CAUGHT_UP  # noqa: E402
from relay import Relay  # noqa: E402


def _stack_setting(name):
    value = os.environ.get(name)
    if not value:
        pytest.exit(f"{name} is not set: run the tests with 'make test'", returncode=2)
    return value


def _with_redis_db(url, number):
    base, _, query = url.partition("?")
    params = dict(parse_qsl(query))
    params["db"] = str(number)
    return f"{base}?{urlencode(params)}"


@pytest.fixture(scope="session")
def test_database_url():
    """A fresh database beside the stack's, created once per test run."""
    stack_dsn = parse_dsn(_stack_setting("DATABASE_URL"))
    name = f"{stack_dsn.get('dbname', 'app')}_test"
    admin = psycopg2.connect(make_dsn(**stack_dsn))
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cur.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    url = make_dsn(**{**stack_dsn, "dbname": name})
    os.environ["TEST_DATABASE_URL"] = url  # for tests that write as psql would
    return url


@pytest.fixture(scope="session")
def test_redis_url():
    return _with_redis_db(_stack_setting("REDIS_URL"), 1)


@pytest.fixture(scope="session")
def make_app(test_database_url, test_redis_url):
    """Builds an app on the test database and Redis db; overrides win."""
    # Celery prefers CELERY_BROKER_URL from the environment to any setting,
    # and the stack's (its state Redis) is there: the apps' own setting must win.
    os.environ.pop("CELERY_BROKER_URL", None)

    def make(**overrides):
        config = {
            "DATABASE_URL": test_database_url,
            "REDIS_URL": test_redis_url,
            # Every app of the run counts rate limits in one place (flask-limiter
            # keeps one storage per process), with limits no other test reaches.
            "RATE_LIMIT_STORAGE_URL": test_redis_url,
            "CELERY_BROKER_URL": test_redis_url,
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
    app = make_app()
    with app.app_context():
        db.init_db()
    return app


class RunningRelay:
    """The cache relay (relay.py) of one app, in a thread of this process."""

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


def wait_caught_up(redis_url, seconds=5):
    """Until the relay has said it caught up in that Redis (cache.CAUGHT_UP)."""
    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + seconds
    while not client.exists(CAUGHT_UP):
        assert time.monotonic() < deadline, "the relay did not catch up"
        time.sleep(0.01)


def wait_applied(app, seconds=5):
    """Until the relay has applied every noted change: it applies each once
    more after the writer's own invalidation, which would retire a value
    cached in between."""
    deadline = time.monotonic() + seconds
    with app.app_context():
        while db.fetch_one("SELECT count(*) AS n FROM cache_changes")["n"]:
            assert time.monotonic() < deadline, "the relay did not apply the changes"
            time.sleep(0.01)


@pytest.fixture(autouse=True)
def clean_state(app, test_redis_url, session_relay):
    """Every test starts from the seed rows, an empty cache and a relay caught up."""
    with app.app_context():
        with db.transaction() as cur:
            cur.execute("TRUNCATE users, accounts, customer_addresses, incidents, orders RESTART IDENTITY")
        db.init_db()
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


class RedisServer:
    def __init__(self, socket_path):
        self.socket_path = socket_path
        self.url = f"unix://{socket_path}"
        self.process = None

    def start(self):
        self.process = subprocess.Popen(
            ["redis-server", "--port", "0", "--unixsocket", self.socket_path,
             "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@pytest.fixture
def redis_link(redis_server):
    """The path to ``redis_server`` through a link the test may cut and mend."""
    link = Link(redis_server.socket_path)
    yield link
    link.close()


class Link:
    """A unix-socket relay to Redis. ``cut()`` drops every connection and
    refuses new ones, as a partition looks to the app; Redis keeps its data."""

    def __init__(self, target_path, path=None):
        self.target_path = target_path
        self.path = path or target_path + ".link"
        self.url = f"unix://{self.path}"
        self.up = True
        self._sockets = []
        self._listener = socket.socket(socket.AF_UNIX)
        self._listener.bind(self.path)
        self._listener.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            server = socket.socket(socket.AF_UNIX)
            server.connect(self.target_path)
            self._sockets += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source, sink):
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            end.close()

    def cut(self):
        self.up = False
        for end in self._sockets:
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._sockets = []

    def mend(self):
        self.up = True

    def close(self):
        self.cut()
        self._listener.close()


# Through the stack's nginx, over HTTP at BASE_URL.

@pytest.fixture(scope="session")
def base_url():
    url = os.environ.get("BASE_URL")
    if not url:
        pytest.exit("BASE_URL is not set: run the tests with 'make test'", returncode=2)
    return url


class Reply:
    def __init__(self, response):
        self.status = response.status
        self.headers = response.headers
        self.body = response.read()

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"Reply({self.status}, {self.headers.get('X-Cache-Status')}, {self.body[:200]!r})"

    @property
    def l1(self):
        return self.headers["X-Cache-Status"]


@pytest.fixture
def send(base_url):
    parts = urlsplit(base_url)

    def request(method, path, body=None, headers=None):
        conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=10)
        headers = dict(headers or {})
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
            headers.setdefault("Content-Type", "application/json")
        try:
            conn.request(method, path, body=body, headers=headers)
            return Reply(conn.getresponse())
        finally:
            conn.close()

    return request


@pytest.fixture
def new_user(send):
    """A user of this test's own, so runs never depend on each other."""
    tag = uuid.uuid4().hex[:10]
    reply = send("POST", "/users", {"name": f"L1 {tag}", "email": f"l1-{tag}@example.com"})
    assert reply.status == 201
    return reply.json()["id"]


def pytest_terminal_summary(terminalreporter):
    from tests.helpers import REPORTS  # noqa: PLC0415

    for name, lines in REPORTS:
        terminalreporter.section(name)
        for line in lines:
            terminalreporter.write_line(line)
