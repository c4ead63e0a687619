"""A mixed load of reads and writes through nginx, at a stated rate, bounded
in time and count, and the checks that run on what it saw."""

import json
import random
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass

from blueprints.users import USERS
from tests.support.bounds import REQUEST_SECONDS
from tests.support.http import FRESH, Client, Reply
from tests.support.waiting import Pace


@dataclass
class Call:
    """A ``Reply`` (its fields read through) and what the load meant by it."""

    kind: str  # "read", "update" or "create"
    reply: Reply
    user_id: int | None = None
    name: str | None = None  # what a write sent
    email: str | None = None

    def __getattr__(self, name):  # status, ok, started, seconds, ended, l1, l2, body
        return getattr(self.reply, name)


class Load:
    """Readers GET /users/<id>; writers PUT new names (each writer owns its ids,
    so its writes to one id are in order) and every ``create_every``-th write
    POSTs a new user instead. Each thread is a client of its own (its own
    address) sending at most ``rate`` requests a second, each after the
    answer to the last. Stops on ``stop()``, after ``max_seconds`` or after
    ``rate * max_seconds`` calls per thread, whichever comes first."""

    def __init__(self, base_url, read_ids, write_ids, readers=4, writers=2, fresh_reads=False,
                 create_every=5, rate=100, max_seconds=60):
        self.base_url = base_url
        self.read_ids, self.write_ids = list(read_ids), list(write_ids)
        self.readers, self.writers = readers, writers
        self.fresh_reads, self.create_every, self.rate = fresh_reads, create_every, rate
        self.max_seconds, self.max_calls = max_seconds, int(rate * max_seconds)
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
            thread.join(REQUEST_SECONDS + 1)  # a call in flight ends with its answer or its timeout
        self.stopped = time.monotonic()

    def _run(self, step, n):
        client, pace = Client(self.base_url), Pace(self.rate)
        deadline = time.monotonic() + self.max_seconds
        for seq in range(self.max_calls):
            pace.wait()
            if self._stop.is_set() or time.monotonic() > deadline:
                break
            call = step(client, n, seq)
            with self._lock:
                self.calls.append(call)
        client.close()

    def _read(self, client, n, seq):
        user_id = random.choice(self.read_ids)
        headers = FRESH if self.fresh_reads and seq % 2 else None
        return Call("read", client.request("GET", f"/users/{user_id}", headers=headers), user_id=user_id)

    def _write(self, client, n, seq):
        if self.create_every and seq % self.create_every == self.create_every - 1:
            email = f"load-{self.tag}-{n}-{seq}@example.com"
            reply = client.request("POST", "/users", {"name": "Load", "email": email})
            return Call("create", reply, email=email, name="Load")
        mine = self.write_ids[n :: self.writers]
        user_id = mine[seq % len(mine)]
        name = f"load {self.tag} {n} {seq}"
        return Call("update", client.request("PUT", f"/users/{user_id}", {"name": name}), user_id=user_id, name=name)

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
