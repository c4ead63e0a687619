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
    """Has every nginx fetch URIs afresh, in threads of its own so the relay
    never waits for it: ``Cache-Control: no-cache`` makes nginx fetch and
    store (nginx/http.conf), REFRESH_HEADER lets the app's 404 of a deleted
    item be stored too (cache/reads.py). Each URI is fetched again
    ``AGAIN_AFTER`` later, after any slow read that loaded the old row and
    was still on its way to nginx (nginx stores whichever answer ends last):
    well inside the second an item's change promises, so the repair of an
    entry such a read overwrote lands within it too. A read slower than
    that (still on its way after the second fetch) leaves its old answer in
    L1 for the entry's life: the 5 s bound holds, not the second. A refresh
    that fails is dropped: that L1 then catches up within its own 5 s bound.

    Which nginx: each of ``bases`` (L1_REFRESH_URLS) is ``unix:/path`` or
    ``http://NAME:PORT``, where NAME may resolve to several addresses, one
    per nginx of the deployment (a hosts file, compose's service name, a
    Kubernetes headless Service, Swarm's ``tasks.NAME``). A thread of its own
    looks the names up every RESOLVE_SECONDS, so an L1 that joins is
    refreshed from then on, one that leaves is dropped, and a slow resolver
    delays no refresh. Each nginx has a sender thread of its own: one that
    is dead or cut off never delays the refresh of the others.
    """

    AGAIN_AFTER = 0.5
    RESOLVE_SECONDS = 1.0

    def __init__(self, bases, token, resolve=None):
        for base in bases:
            check_base(base)
        self.bases = list(bases)
        self._headers = {"Cache-Control": "no-cache", REFRESH_HEADER: token}
        self._resolve = resolve or resolve_targets
        self._due = {}  # URI -> (when to fetch it, monotonic; whether that is its second fetch)
        self._wake = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="l1-refresh", daemon=True)
        self._targets = {}  # base -> the nginx it named at its last successful look
        self._senders = {}  # target -> _Sender; replaced whole by the resolver thread
        self._resolved = threading.Event()

    def start(self):
        if self.bases:
            threading.Thread(target=self._resolve_every_second, name="l1-resolve", daemon=True).start()
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

    def targets(self):
        """The nginx refreshed now (one per address its names resolve to)."""
        return list(self._senders)

    def _resolve_every_second(self):
        while not self._stopping:
            try:
                self._look_up()
            except Exception:  # noqa: BLE001 (whatever fails, the next look comes)
                log.exception("relay: looking up the L1s failed")
            self._resolved.set()
            time.sleep(self.RESOLVE_SECONDS)
        for sender in self._senders.values():
            sender.stop()

    def _look_up(self):
        for base in self.bases:
            try:
                self._targets[base] = self._resolve(base)
            except OSError as error:  # the name does not resolve now: keep what it named
                log.warning("relay: cannot look up %s, refreshing what it named before: %s", base, error)
        current = set().union(*self._targets.values())
        senders = dict(self._senders)
        for gone in senders.keys() - current:
            senders.pop(gone).stop()
            log.info("relay: %s left, no longer refreshed", gone)
        for new in current - senders.keys():
            senders[new] = _Sender(new, self._headers)
            log.info("relay: refreshing %s", new)
        self._senders = senders  # one assignment: the dispatcher sees the old set or the new one

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
        self._resolved.wait(self.RESOLVE_SECONDS)  # the first look, unless the resolver hangs
        while (due := self._take_due()) is not None:
            for sender in self._senders.values():
                sender.send([uri for uri, _ in due])
            again = time.monotonic() + self.AGAIN_AFTER
            with self._wake:
                for uri, second in due:
                    if not second:  # a newer change, added meanwhile, keeps its own earlier time
                        self._due.setdefault(uri, (again, True))


def check_base(base):
    """Refuse, at the start, an L1_REFRESH_URLS entry the refresher could not use."""
    if base.startswith("unix:"):
        return
    parts = urlsplit(base)
    try:
        _ = parts.port  # a port that is not a number raises ValueError
    except ValueError as error:
        raise ValueError(f"L1_REFRESH_URLS: {base!r}: {error}") from None
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"L1_REFRESH_URLS: {base!r} is neither http://HOST[:PORT] nor unix:/path")


def resolve_targets(base):
    """The nginx ``base`` names now: itself for ``unix:/path``, else one
    ``http://ADDRESS:PORT`` per address its host name resolves to."""
    if base.startswith("unix:"):
        return {base}
    parts = urlsplit(base)
    port = parts.port or 80
    found = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    return {f"http://{_host(address[0])}:{port}" for *_, address in found}


def _host(address):
    return f"[{address}]" if ":" in address else address


class _Sender:
    """Refreshes one nginx, in a thread of its own. While it fails, what waits
    for it is dropped (its own 5 s bound covers it) and each new URI is one
    more try: it never holds more than one failing attempt's worth of work."""

    TIMEOUT = 2.0

    def __init__(self, target, headers):
        self.target, self._headers = target, headers
        self._waiting = {}  # URI -> None: in order, each once
        self._wake = threading.Condition()
        self._stopping = False
        self._failing = False
        threading.Thread(target=self._run, name=f"l1-refresh {target}", daemon=True).start()

    def send(self, uris):
        with self._wake:
            self._waiting.update(dict.fromkeys(uris))
            self._wake.notify()

    def stop(self):
        with self._wake:
            self._stopping = True
            self._wake.notify()

    def _next(self):
        with self._wake:
            while not self._stopping and not self._waiting:
                self._wake.wait()
            if self._stopping:
                return None
            uri = next(iter(self._waiting))
            del self._waiting[uri]
            return uri

    def _run(self):
        conn = None
        while (uri := self._next()) is not None:
            conn, error = self._refresh(conn, uri)
            if error is None and self._failing:
                log.warning("relay: refreshing %s works again", self.target)
            elif error is not None:
                with self._wake:
                    dropped, self._waiting = len(self._waiting), {}
                if not self._failing:
                    log.warning("relay: refreshing %s%s failed, dropping its refreshes (%d waiting) until one "
                                "works: %s", self.target, uri, dropped, error)
            self._failing = error is not None
        if conn is not None:
            conn.close()

    def _refresh(self, conn, uri):
        """(the connection to keep, the error if the refresh failed)."""
        for attempt in (1, 2):  # a kept-alive connection nginx closed meanwhile: once more on a new one
            try:
                if conn is None:
                    conn = connect(self.target, self.TIMEOUT)
                conn.request("GET", uri, headers=self._headers)
                conn.getresponse().read()
                return conn, None
            except Exception as error:  # noqa: BLE001 (whatever fails, the thread goes on)
                if conn is not None:
                    conn.close()
                conn = None
                if attempt == 2:
                    return None, error


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
