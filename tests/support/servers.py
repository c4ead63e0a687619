"""Test servers of a test's own: a Redis to stop and start, a link to cut,
as a partition looks to the app, and a Redis that never answers (tests/app
and tests/faults)."""

import socket
import subprocess
import threading

import redis

from tests.support.bounds import UNPROMISED_WAIT
from tests.support.waiting import eventually


def _serve(listener, handle):
    """``handle(connection)`` for each connection ``listener`` takes, in a thread, until it is closed."""

    def accept():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            handle(conn)

    threading.Thread(target=accept, daemon=True).start()


def _answers(client):
    try:
        return client.ping()
    except redis.ConnectionError:
        return False


class RedisServer:
    """redis-server on a unix socket, without persistence."""

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
        eventually(lambda: _answers(client), seconds=UNPROMISED_WAIT)
        client.close()

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


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
        _serve(self._listener, self._connect)

    def _connect(self, client):
        if not self.up:
            client.close()
            return
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


class SilentRedis:
    """A TCP listener that takes connections and reads what comes, never
    answering: a Redis that hangs. Notes, per connection, the bytes sent and
    whether the client gave up on it (closed it)."""

    def __init__(self):
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"redis://127.0.0.1:{self._listener.getsockname()[1]}/0"
        self.connections = []
        _serve(self._listener, self._take)

    def _take(self, conn):
        seen = {"bytes": 0, "given_up": False}
        self.connections.append(seen)
        threading.Thread(target=self._read, args=(conn, seen), daemon=True).start()

    @staticmethod
    def _read(conn, seen):
        conn.settimeout(UNPROMISED_WAIT)
        with conn:
            try:
                while data := conn.recv(65536):
                    seen["bytes"] += len(data)
                seen["given_up"] = True
            except OSError:
                pass  # the client kept waiting

    def close(self):
        self._listener.close()
