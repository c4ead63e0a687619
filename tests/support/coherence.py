"""A coherence checker: concurrent writers and readers on a running stack, every
operation recorded, and the worst staleness each cache level served computed
against the acknowledged writes.

Keys: users written through the API, a user written with SQL as psql would
(deleted and inserted again under the same id), phone numbers whose address
is created, changed and deleted through the API, and the list of those users.
One writer per key, so a key's writes are in order; each write carries a
version in the name or address it sets. Readers go through nginx and straight
to the app's socket, with think times that include gaps longer than L1's
lifetime (a key read once after a quiet spell), and each writer reads its own
write back at once (with ``Cache-Control: no-cache`` through nginx).

A read that returned version v is stale by ``read start - ack`` of the first
acknowledged write after v, when that ack came before the read started; a
write that got no answer may or may not have happened, so reading it is fine
but it obliges nobody. The level that answered is read from the headers:
``X-Cache-Status`` HIT, STALE or UPDATING is L1; else ``X-Cache-L2`` HIT is
L2; else PostgreSQL.
"""

import json
import random
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from urllib.parse import quote

import psycopg2

from tests.support.http import FRESH, Client
from tests.support.reporting import report

ABSENT = "absent"


@dataclass
class Write:
    key: str
    version: object  # an int, or (ABSENT, n) for a delete
    start: float
    end: float
    acked: bool


@dataclass
class Read:
    keys: tuple  # the keys it saw (one for an item, all listed users for a list)
    kind: str  # "item" or "list"
    via: str  # "nginx" or "app"
    start: float
    end: float
    status: int
    l1: str
    l2: str
    seen: dict = field(default_factory=dict)  # key -> version, or ABSENT
    own: bool = False  # a writer reading its own write back
    error: str = ""  # why there was no answer

    @property
    def level(self):
        if self.l1 in ("HIT", "STALE", "UPDATING"):
            return "L1"
        return "L2" if self.l2 == "HIT" else "db"


class History:
    """Every write and read of a run, and what they say: the worst staleness
    each cache level served, computed from times alone (no clock but
    time.monotonic(), no machine's speed)."""

    def __init__(self):
        self.writes = defaultdict(list)  # key -> [Write], in order
        self.reads = []
        self._lock = threading.Lock()

    def record(self, item):
        with self._lock:
            if isinstance(item, Write):
                self.writes[item.key].append(item)
            else:
                self.reads.append(item)

    def latest(self, key):
        """The version of the key's last acknowledged write, ABSENT for a delete."""
        with self._lock:
            acked = [w for w in self.writes[key] if w.acked]
        version = acked[-1].version
        return ABSENT if isinstance(version, tuple) else version

    def staleness(self, read, key):
        """Seconds ``read`` was behind the acknowledged writes of ``key``, or
        None if it saw a state no write made by the time it ended."""
        seen, writes = read.seen[key], self.writes[key]
        best = None
        for i, write in enumerate(writes):
            matches = isinstance(write.version, tuple) if seen == ABSENT else write.version == seen
            if not matches or write.start >= read.end:
                continue
            later = next((w for w in writes[i + 1:] if w.acked), None)
            behind = max(0.0, read.start - later.end) if later is not None else 0.0
            best = behind if best is None else min(best, behind)
        return best

    def figures(self, by_via=False):
        """A summary, and per level and kind (and, ``by_via``, per way in):
        reads, the worst staleness and the impossible reads."""
        table = defaultdict(lambda: {"reads": 0, "worst_s": 0.0, "impossible": 0})
        for read in self.reads:
            where = f" via {read.via}" if by_via else ""
            if not read.seen:
                row = table[f"no answer or error{where}"]
                row["reads"] += 1
                statuses = row.setdefault("statuses", {})
                status = f"no answer: {read.error}" if read.status == 0 else read.status
                statuses[status] = statuses.get(status, 0) + 1
                continue
            if read.own:
                row = table[f"own write, {read.via}"]
            elif read.l1 == "STALE":
                row = table[f"L1 stale-if-error {read.kind}{where}"]
            else:
                row = table[f"{read.level} {read.kind}{where}"]
            row["reads"] += 1
            for key in read.seen:
                behind = self.staleness(read, key)
                if behind is None:
                    row["impossible"] += 1
                else:
                    row["worst_s"] = max(row["worst_s"], round(behind, 3))
        writes = [w for ws in self.writes.values() for w in ws[1:]]
        summary = {"writes": len(writes), "writes_acknowledged": sum(w.acked for w in writes),
                   "reads": len(self.reads)}
        return summary, dict(table)

    def lines(self, by_via=False):
        """The figures as lines of text."""
        summary, table = self.figures(by_via)
        return [json.dumps(summary)] + [
            f"{level:36} {row['reads']:6} reads, worst {row['worst_s']:.3f} s behind, {row['impossible']} impossible"
            + (f", statuses {row['statuses']}" if "statuses" in row else "")
            for level, row in sorted(table.items())]


class Checker:
    """The load that makes a ``History`` on a running stack: ``run(seconds)``,
    then ``figures()``. Each thread thinks on a random sequence of its own,
    drawn from ``seed`` and its name, so a run's load is the same on any machine.

    Writers go through ``base_url`` (and SQL); readers, by default three
    through it and one straight to the app's socket. ``ways_in``: instead,
    {name: target} of the readers' ways in, one item reader and one list
    reader each (several hosts: the entry, each host's nginx and app).
    """

    def __init__(self, base_url, app_socket, database_url, api_users=4, psql_users=1, phones=2,
                 quiet_share=0.15, seed=None, ways_in=None):
        self.base_url = base_url
        self.targets = ways_in or {"nginx": base_url, "app": f"unix:{app_socket}"}
        self.item_readers = list(self.targets) if ways_in else ["nginx", "nginx", "nginx", "app"]
        self.by_via = bool(ways_in)
        self.database_url = database_url
        self.tag = uuid.uuid4().hex[:6]
        self.seed = seed
        self.history = History()
        self.quiet_share = quiet_share
        self._setup(api_users, psql_users, phones)

    # --- setup: every key exists at version 0 ---

    def _setup(self, api_users, psql_users, phones):
        nginx = Client(self.base_url)
        self.user_ids = {}
        for n in range(api_users + psql_users):
            key = f"u{n}"
            reply = nginx.request("POST", "/users", {"name": self._name(key, 0),
                                                    "email": f"chk-{self.tag}-{key}@example.com"})
            assert reply.status == 201, reply
            self.user_ids[key] = reply.json()["id"]
            self.history.record(Write(key, 0, reply.started, reply.ended, True))
        self.api_users = [f"u{n}" for n in range(api_users)]
        self.psql_users = [f"u{n}" for n in range(api_users, api_users + psql_users)]
        self.phones = {}
        for n in range(phones):
            key = f"p{n}"
            self.phones[key] = f"+44 7911 1{int(self.tag, 16) % 10**4:04d}{n}"  # the run's own
            reply = nginx.request("POST", "/addr_by_phone", {"phone": self.phones[key],
                                                            "address": self._address(key, 0)})
            assert reply.status == 201, reply
            self.history.record(Write(key, 0, reply.started, reply.ended, True))
        nginx.close()
        ids = sorted(self.user_ids.values())
        assert ids == list(range(ids[0], ids[0] + len(ids))), "the checker's users need consecutive ids"
        self.list_path = f"/users?cursor={ids[0] - 1}&page_size={len(ids)}"

    def _name(self, key, version):
        return f"chk {self.tag} {key} {version}"

    def _address(self, key, version):
        return f"chk {self.tag} {key} {version} High Street"

    def _version_of(self, key, text):
        prefix = f"chk {self.tag} {key} "
        assert text.startswith(prefix), (key, text)
        return int(text[len(prefix):].split(" ")[0])

    # --- the run ---

    def run(self, seconds, during=None):
        """Load for ``seconds``; ``during()``, if given, runs meanwhile (faults)."""
        deadline = time.monotonic() + seconds
        work = [(self._writer, key) for key in self.api_users]
        work += [(self._psql_writer, key) for key in self.psql_users]
        work += [(self._phone_writer, key) for key in self.phones]
        work += [(self._reader, via) for via in self.item_readers]
        work += [(self._list_reader, via) for via in self.targets]
        threads = [threading.Thread(target=target, args=(arg, deadline, self._random(n)))
                   for n, (target, arg) in enumerate(work)]
        for thread in threads:
            thread.start()
        if during:
            during()
        for thread in threads:
            thread.join(seconds + 60)

    def _random(self, n):
        return random.Random(f"{self.seed}:{n}")

    def _think(self, rng, short=0.2):
        """Mostly short pauses; now and then a quiet spell longer than L1 keeps an entry."""
        if rng.random() < self.quiet_share:
            return rng.uniform(5.5, 8)
        return rng.uniform(0, short)

    def _endpoint(self, via):
        return Client(self.targets[via])

    def _writer(self, key, deadline, rng):
        nginx, app = Client(self.base_url), self._endpoint(self.item_readers[-1])
        path = f"/users/{self.user_ids[key]}"
        for version in range(1, 10_000):
            if time.monotonic() + 0.5 > deadline:
                return
            reply = nginx.request("PUT", path, {"name": self._name(key, version)})
            self.history.record(Write(key, version, reply.started, reply.ended, reply.status == 200))
            if reply.status == 200:  # the writer reads its own write, through nginx and from the app
                self._read_item(nginx, "nginx", key, path, FRESH, own=True)
                self._read_item(app, "app", key, path, None, own=True)
            time.sleep(self._think(rng, 1.0))

    def _psql_writer(self, key, deadline, rng):
        """Writes with SQL: renames, and now and then a delete and an insert of the same id."""
        user_id, absent = self.user_ids[key], 0
        for version in range(1, 10_000):
            if time.monotonic() + 0.5 > deadline:
                return
            present = self.history.latest(key) != ABSENT
            if present and version % 4 == 0:
                absent += 1
                sql, params, written = "DELETE FROM users WHERE id = %s", (user_id,), (ABSENT, absent)
            elif present:
                sql, params, written = "UPDATE users SET name = %s WHERE id = %s", (self._name(key, version), user_id), version
            else:
                sql = "INSERT INTO users (id, name, email) VALUES (%s, %s, %s)"
                params, written = (user_id, self._name(key, version), f"chk-{self.tag}-{key}@example.com"), version
            started = time.monotonic()
            conn = None
            try:
                conn = psycopg2.connect(self.database_url, connect_timeout=2)
                with conn, conn.cursor() as cur:
                    cur.execute(sql, params)
                    # A write of a row an unanswered delete did remove changed nothing.
                    acked = cur.rowcount == 1
            except psycopg2.Error:
                acked = False
            finally:
                if conn is not None:
                    conn.close()
            self.history.record(Write(key, written, started, time.monotonic(), acked))
            time.sleep(self._think(rng, 1.0))

    def _phone_writer(self, key, deadline, rng):
        """An address created, changed, deleted and created again."""
        nginx = Client(self.base_url)
        phone, absent = self.phones[key], 0
        for version in range(1, 10_000):
            if time.monotonic() + 0.5 > deadline:
                return
            present = self.history.latest(key) != ABSENT
            if present and version % 3 == 0:
                absent += 1
                reply = nginx.request("DELETE", f"/addr_by_phone?phone={quote(phone)}")
                written, ok = (ABSENT, absent), reply.status == 204
            else:
                method, ok_status = ("PUT", 200) if present else ("POST", 201)
                reply = nginx.request(method, "/addr_by_phone", {"phone": phone, "address": self._address(key, version)})
                written, ok = version, reply.status == ok_status
            self.history.record(Write(key, written, reply.started, reply.ended, ok))
            time.sleep(self._think(rng, 1.0))

    def _item_path(self, key):
        if key in self.phones:
            return f"/addr_by_phone?phone={quote(self.phones[key])}"
        return f"/users/{self.user_ids[key]}"

    def _reader(self, via, deadline, rng):
        endpoint = self._endpoint(via)
        keys = sorted(self.history.writes)
        while time.monotonic() < deadline:
            key = rng.choice(keys)
            self._read_item(endpoint, via, key, self._item_path(key), None)
            time.sleep(self._think(rng))

    def _read_item(self, endpoint, via, key, path, headers, own=False):
        reply = endpoint.request("GET", path, headers=headers)
        read = Read((key,), "item", via, reply.started, reply.ended, reply.status, reply.l1, reply.l2, own=own,
                    error=reply.error)
        if reply.status == 200:
            data = reply.json()
            read.seen[key] = self._version_of(key, data["address"] if key in self.phones else data["name"])
        elif reply.status == 404:
            read.seen[key] = ABSENT
        self.history.record(read)

    def _list_reader(self, via, deadline, rng):
        endpoint = self._endpoint(via)
        by_id = {user_id: key for key, user_id in self.user_ids.items()}
        while time.monotonic() < deadline:
            reply = endpoint.request("GET", self.list_path)
            read = Read(tuple(self.user_ids), "list", via, reply.started, reply.ended, reply.status, reply.l1, reply.l2,
                        error=reply.error)
            if reply.status == 200:
                listed = {by_id[user["id"]]: self._version_of(by_id[user["id"]], user["name"])
                          for user in reply.json() if user["id"] in by_id}
                read.seen = {key: listed.get(key, ABSENT) for key in self.user_ids}
            self.history.record(read)
            time.sleep(self._think(rng))

    # --- the verdicts ---

    def figures(self):
        return self.history.figures(self.by_via)

    def report(self, name):
        """The figures, kept for the end of the session's report."""
        report(f"coherence checker: {name}", *self.history.lines(self.by_via))
