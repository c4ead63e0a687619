"""The one HTTP client of the suite: to nginx (a base URL such as
``http://127.0.0.1:8080``) or straight to the app's unix socket
(``unix:/path/app.sock``), over a keep-alive connection.

nginx limits each client address on what L1 cannot answer, and the app each
address on sign-ins and orders. A real client has an address of its own, so
each ``Client`` has one too: every address in 127.0.0.0/8 is loopback on
Linux, and nginx sees the one a connection comes from.

A failed exchange is an answer too, with status 0 (refused, dropped or timed
out): a drill counts those rather than stopping at the first.
"""

import http.client
import ipaddress
import itertools
import json
import socket
import time
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

from tests.support.bounds import REQUEST_SECONDS

# Past L1: nginx answers from the app and stores the answer.
FRESH = {"Cache-Control": "no-cache"}

# Clients' addresses: 127.1.0.1 on; 127.0.0.1 stays the address of curl and the other tools.
_FIRST_SOURCE = ipaddress.IPv4Address("127.1.0.0")
_sources = itertools.count(1)


def new_source():
    """A loopback address no other client of this run has."""
    return str(_FIRST_SOURCE + next(_sources))


_IDEMPOTENT = frozenset(("GET", "HEAD", "PUT", "DELETE", "OPTIONS"))
_CLOSED_BEFORE_ANSWER = (" (RemoteDisconnected", " (BrokenPipeError", " (ConnectionResetError")


def _on_loopback(target):
    host = urlsplit(target).hostname
    return host == "localhost" or ipaddress.ip_address(host).is_loopback


@dataclass
class Reply:
    """One exchange: what came back and when."""

    status: int  # 0: no answer
    headers: http.client.HTTPMessage = field(default_factory=http.client.HTTPMessage)
    body: bytes = b""
    started: float = 0.0  # time.monotonic() when the request was sent
    seconds: float = 0.0
    error: str = ""  # why there was no answer

    @property
    def ok(self):
        return 200 <= self.status < 300

    @property
    def ended(self):
        return self.started + self.seconds

    @property
    def l1(self):
        """What nginx's cache did (X-Cache-Status); empty from the app's socket."""
        return self.headers.get("X-Cache-Status", "")

    @property
    def l2(self):
        """What the app's Redis cache did (X-Cache-L2)."""
        return self.headers.get("X-Cache-L2", "")

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"Reply({self.status}, L1 {self.l1 or '-'}, L2 {self.l2 or '-'}, {self.body[:200]!r}{self.error})"


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


class Client:
    """One client of the stack. With ``keep_alive`` (the default) it holds
    one connection, reopened after a failure, and one thread uses it; without,
    each request has a connection of its own and any thread may send."""

    def __init__(self, target, source=None, timeout=REQUEST_SECONDS, keep_alive=True):
        """``source``: the loopback address to send from; a new one when not
        given. To another host (the cluster's), the machine's own address."""
        self.target, self.timeout, self.keep_alive = target, timeout, keep_alive
        self.unix_path = target[len("unix:"):] if target.startswith("unix:") else None
        self.source = None if self.unix_path or not _on_loopback(target) else (source or new_source())
        self._conn = None

    def _open(self):
        if self.unix_path:
            return _UnixConnection(self.unix_path, self.timeout)
        parts = urlsplit(self.target)
        return http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=self.timeout,
                                          source_address=(self.source, 0) if self.source else None)

    def request(self, method, path, body=None, headers=None, form=None):
        """The ``Reply``. ``body``: bytes or text as they are, anything else as
        JSON; ``form``: fields sent as a form."""
        headers = dict(headers or {})
        if form is not None:
            body = urlencode(form)
            headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        elif body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
            headers.setdefault("Content-Type", "application/json")
        started = time.monotonic()
        reused = self.keep_alive and self._conn is not None
        conn, reply = self._exchange(self._conn if reused else self._open(), method, path, body, headers, started)
        if reused and reply.status == 0 and method in _IDEMPOTENT and reply.error.startswith(_CLOSED_BEFORE_ANSWER):
            # The server closed the kept-alive connection as the request went
            # out (an nginx reloading, say): sent again on a new one, as HTTP
            # clients do (RFC 9112, 9.3.1).
            conn, reply = self._exchange(self._open(), method, path, body, headers, started)
        reply.seconds = time.monotonic() - started
        if self.keep_alive:
            self._conn = conn
        return reply

    def _exchange(self, conn, method, path, body, headers, started):
        """(the connection to keep, or None; the Reply)."""
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            reply = Reply(response.status, response.headers, response.read(), started)
            if not self.keep_alive or response.will_close:
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException) as error:
            conn.close()
            conn = None
            reply = Reply(0, started=started, error=f" ({type(error).__name__}: {error})")
        return conn, reply

    def raw(self, data):
        """``data`` sent as it is, on a connection of its own; every byte that
        came back until the server closed it. For what no HTTP client would send."""
        if self.unix_path:
            conn = socket.socket(socket.AF_UNIX)
            conn.settimeout(self.timeout)
            conn.connect(self.unix_path)
        else:
            parts = urlsplit(self.target)
            conn = socket.create_connection((parts.hostname, parts.port or 80), timeout=self.timeout,
                                            source_address=(self.source, 0) if self.source else None)
        with conn:
            conn.sendall(data)
            chunks = []
            while chunk := conn.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)

    def close(self):
        if self._conn is not None:
            self._conn.close()
        self._conn = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
