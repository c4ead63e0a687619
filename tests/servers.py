"""Test servers of a test's own: a Redis to stop and start, and a link to
cut, as a partition looks to the app (tests/app and tests/faults)."""

import socket
import subprocess
import threading
import time

import redis


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
