"""A mixed load of reads and writes through nginx, bounded in time and count,
and the checks that run on what it saw."""

import http.client
import json
import random
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

from blueprints.users import USERS

FRESH = {"Cache-Control": "no-cache"}


@dataclass
class Call:
    kind: str  # "read", "update" or "create"
    status: int  # 0: no answer (connection dropped or timed out)
    started: float  # time.monotonic()
    seconds: float
    l1: str = ""
    l2: str = ""
    user_id: int | None = None
    name: str | None = None  # what a write sent
    email: str | None = None
    body: bytes = b""

    @property
    def ok(self):
        return 200 <= self.status < 300

    @property
    def ended(self):
        return self.started + self.seconds


class Client:
    """One keep-alive connection to nginx; a dropped one is reopened."""

    def __init__(self, base_url, timeout=5, source=None):
        """``source``: the address to send from (another 127.x.y.z is another client to nginx)."""
        parts = urlsplit(base_url)
        self.host, self.port, self.timeout = parts.hostname, parts.port or 80, timeout
        self.source = (source, 0) if source else None
        self.conn = None

    def call(self, kind, method, path, body=None, headers=None, form=None, raw=None, **fields):
        """``body``: JSON; ``form``: a form; ``raw``: bytes sent as they are."""
        headers = dict(headers or {})
        if body is not None:
            body = json.dumps(body)
            headers["Content-Type"] = "application/json"
        if form is not None:
            body = urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        if raw is not None:
            body = raw
        started = time.monotonic()
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout,
                                                       source_address=self.source)
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
            data = response.read()
            status, l1, l2 = response.status, response.getheader("X-Cache-Status", ""), response.getheader("X-Cache-L2", "")
            if response.getheader("Connection", "").lower() == "close":
                self.close()
        except (OSError, http.client.HTTPException):
            self.close()
            status, l1, l2, data = 0, "", "", b""
        return Call(kind, status, started, time.monotonic() - started, l1, l2, body=data, **fields)

    def close(self):
        if self.conn is not None:
            self.conn.close()
        self.conn = None


class Load:
    """Readers GET /users/<id>; writers PUT new names (each writer owns its ids,
    so its writes to one id are in order) and every ``create_every``-th write
    POSTs a new user instead. Stops on ``stop()``, after ``max_seconds`` or
    after ``max_calls`` per thread, whichever comes first."""

    def __init__(self, base_url, read_ids, write_ids, readers=4, writers=2, fresh_reads=False,
                 create_every=5, pause=0.005, max_seconds=60, max_calls=20_000):
        self.base_url = base_url
        self.read_ids, self.write_ids = list(read_ids), list(write_ids)
        self.readers, self.writers = readers, writers
        self.fresh_reads, self.create_every, self.pause = fresh_reads, create_every, pause
        self.max_seconds, self.max_calls = max_seconds, max_calls
        self.tag = uuid.uuid4().hex[:8]
        self.calls = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = []

    def __enter__(self):
        self.started = time.monotonic()
        for n in range(self.readers):
            self._threads.append(threading.Thread(target=self._run, args=(self._read, n), daemon=True))
        for n in range(self.writers):
            self._threads.append(threading.Thread(target=self._run, args=(self._write, n), daemon=True))
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        self._stop.set()
        for thread in self._threads:
            thread.join(30)
        self.stopped = time.monotonic()

    def _run(self, step, n):
        client = Client(self.base_url)
        deadline = time.monotonic() + self.max_seconds
        for seq in range(self.max_calls):
            if self._stop.is_set() or time.monotonic() > deadline:
                break
            call = step(client, n, seq)
            with self._lock:
                self.calls.append(call)
            time.sleep(self.pause)
        client.close()

    def _read(self, client, n, seq):
        user_id = random.choice(self.read_ids)
        headers = FRESH if self.fresh_reads and seq % 2 else None
        return client.call("read", "GET", f"/users/{user_id}", headers=headers, user_id=user_id)

    def _write(self, client, n, seq):
        if self.create_every and seq % self.create_every == self.create_every - 1:
            email = f"load-{self.tag}-{n}-{seq}@example.com"
            return client.call("create", "POST", "/users", {"name": "Load", "email": email}, email=email, name="Load")
        mine = self.write_ids[n :: self.writers]
        user_id = mine[seq % len(mine)]
        name = f"load {self.tag} {n} {seq}"
        return client.call("update", "PUT", f"/users/{user_id}", {"name": name}, user_id=user_id, name=name)

    def between(self, start, end, kind=None):
        """Calls that started in [start, end)."""
        return [c for c in self.calls if start <= c.started < end and (kind is None or c.kind == kind)]

    def figures(self, calls=None):
        calls = self.calls if calls is None else calls
        writes = [c for c in calls if c.kind != "read"]
        return {
            "requests": len(calls),
            "non_2xx": sum(not c.ok for c in calls),
            "5xx": sum(c.status >= 500 for c in calls),
            "no_answer": sum(c.status == 0 for c in calls),
            "writes_sent": len(writes),
            "writes_acknowledged": sum(c.ok for c in writes),
        }


def lost_writes(load, cur):
    """Acknowledged writes PostgreSQL does not hold.

    An update is lost when the user's final name is neither its last
    acknowledged name nor one sent after it (an unanswered write may still
    have committed). A create is lost when its row is missing."""
    lost = []
    updates = defaultdict(list)
    for call in load.calls:
        if call.kind == "update":
            updates[call.user_id].append(call)
    for user_id, calls in updates.items():
        calls.sort(key=lambda c: c.started)
        acked = [i for i, c in enumerate(calls) if c.ok]
        if not acked:
            continue
        cur.execute("SELECT name FROM users WHERE id = %s", (user_id,))
        row = cur.fetchone()
        if row is None or row[0] not in {c.name for c in calls[acked[-1] :]}:
            lost.append(("update", user_id, calls[acked[-1]].name, row and row[0]))
    for call in load.calls:
        if call.kind == "create" and call.ok:
            user_id = json.loads(call.body)["id"]
            cur.execute("SELECT email FROM users WHERE id = %s", (user_id,))
            row = cur.fetchone()
            if row is None or row[0] != call.email:
                lost.append(("create", user_id, call.email, row and row[0]))
    return lost


def stale_l2_entries(redis_client, cur, user_ids):
    """Users whose L2 entry disagrees with PostgreSQL (no entry is fine)."""
    user_ids = list(user_ids)
    values = redis_client.mget([USERS.item_keys(user_id)[0] for user_id in user_ids])
    stale = []
    for user_id, value in zip(user_ids, values):
        if value is None:
            continue
        cached = json.loads(value)
        cur.execute("SELECT name, email FROM users WHERE id = %s", (user_id,))
        row = cur.fetchone()
        if row is None or (cached["name"], cached["email"]) != row:
            stale.append((user_id, cached["name"], row))
    return stale
