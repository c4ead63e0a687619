"""L1, nginx's proxy_cache: what it may keep of an answer, under which URI,
and how the relay has every nginx fetch a changed item afresh.

nginx keeps what the app's Cache-Control says (nginx/cache.conf); ``CACHEABLE``
is that value for a public answer. L1 keeps an item only under its canonical
URI (``/users/1``, not ``/users/01`` or ``/users/1?x=2``; cache/resources.py),
the one the relay has nginx fetch again after a change, and keeps a 404 only
from that refresh (``REFRESH_HEADER``), where it replaces a deleted item.
"""

import hashlib
import hmac
import http.client
import logging
import socket
import threading
import time
from urllib.parse import urlsplit

log = logging.getLogger("api.relay")

# What L1 may keep of a public answer, said in Cache-Control. nginx bounds in
# time only these two stale extensions, never its own proxy_cache_use_stale
# flags (nginx/cache.conf): an entry is fresh FRESH_SECONDS, then served for
# at most REFRESH_SECONDS more to the requests that arrive while one of them
# refreshes it (the 5 s bound, plus under 1 s of nginx's whole-second clock),
# and up to IF_ERROR_SECONDS past that only while the app or PostgreSQL
# fails. nginx keeps nothing else, and clients never see this header.
# s-maxage: for shared caches only; first and short, because nginx searches
# this value for its words on every hit.
FRESH_SECONDS = 4
REFRESH_SECONDS = 1
IF_ERROR_SECONDS = 60
CACHEABLE = (
    "Cache-Control",
    f"s-maxage={FRESH_SECONDS}, stale-while-revalidate={REFRESH_SECONDS}, stale-if-error={IF_ERROR_SECONDS}",
)

# Sent by the relay (with Cache-Control: no-cache, which makes nginx fetch and
# store afresh): a token only holders of SECRET_KEY can make.
REFRESH_HEADER = "X-L1-Refresh"
REFRESH_ENVIRON = "HTTP_X_L1_REFRESH"


def refresh_token(secret_key):
    return hmac.new(secret_key.encode(), b"l1-refresh", hashlib.sha256).hexdigest()


def request_uri(environ):
    """The URI as the client sent it, undecoded, the way nginx's cache key
    (``$request_uri``) has it: gunicorn's RAW_URI (werkzeug's server also
    sets it). The one reader of it."""
    return environ.get("RAW_URI", "")


class L1Refresher:
    """Has every nginx fetch URIs afresh, in a thread of its own so the relay
    never waits for it: ``Cache-Control: no-cache`` makes nginx fetch and
    store (nginx/http.conf), REFRESH_HEADER lets the app's 404 of a deleted
    item be stored too (cache/reads.py). Each URI is fetched again a second
    later, after any slow read that loaded the old row and was still on its
    way to nginx. A refresh that fails is dropped: L1 then catches up within
    its own 5 s bound."""

    AGAIN_AFTER = 1.0

    def __init__(self, bases, token):
        self.bases = list(bases)
        self._headers = {"Cache-Control": "no-cache", REFRESH_HEADER: token}
        self._due = {}  # URI -> (when to fetch it, monotonic; whether that is its second fetch)
        self._wake = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="l1-refresh", daemon=True)

    def start(self):
        if self.bases:
            self._thread.start()

    def stop(self):
        with self._wake:
            self._stopping = True
            self._wake.notify()

    def add(self, uris):
        now = time.monotonic()
        with self._wake:
            self._due.update(dict.fromkeys(uris, (now, False)))
            self._wake.notify()

    def _take_due(self):
        """[(URI, is its second fetch)] due now, waiting for the first; None when stopping."""
        with self._wake:
            while not self._stopping:
                now = time.monotonic()
                due = [(uri, second) for uri, (at, second) in self._due.items() if at <= now]
                if due:
                    for uri, _ in due:
                        del self._due[uri]
                    return due
                self._wake.wait(min(at for at, _ in self._due.values()) - now if self._due else None)
            return None

    def _run(self):
        connections = {}
        while (due := self._take_due()) is not None:
            for uri, _ in due:
                for base in self.bases:
                    self._refresh(connections, base, uri)
            again = time.monotonic() + self.AGAIN_AFTER
            with self._wake:
                for uri, second in due:
                    if not second:  # a newer change, added meanwhile, keeps its own earlier time
                        self._due.setdefault(uri, (again, True))

    def _refresh(self, connections, base, uri):
        for attempt in (1, 2):  # a kept-alive connection nginx closed meanwhile: once more on a new one
            conn = connections.get(base)
            try:
                if conn is None:
                    conn = connections[base] = connect(base)
                conn.request("GET", uri, headers=self._headers)
                conn.getresponse().read()
                return
            except Exception as error:  # noqa: BLE001 (whatever fails, the thread goes on)
                connections.pop(base, None)
                if conn is not None:
                    conn.close()
                if attempt == 2:
                    log.warning("relay: refreshing %s%s failed: %s", base, uri, error)


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a Unix socket: the local stack's nginx server for the relay."""

    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def connect(base, timeout=2):
    """A connection to one of L1_REFRESH_URLS: ``http://host:port`` or ``unix:/path``."""
    if base.startswith("unix:"):
        return UnixHTTPConnection(base.removeprefix("unix:"), timeout)
    parts = urlsplit(base)
    return http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
