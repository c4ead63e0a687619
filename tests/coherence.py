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

import http.client
import json
import random
import socket
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

import psycopg2

from tests.helpers import REPORTS

ABSENT = "absent"
FRESH = {"Cache-Control": "no-cache"}


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

    @property
    def level(self):
        if self.l1 in ("HIT", "STALE", "UPDATING"):
            return "L1"
        return "L2" if self.l2 == "HIT" else "db"


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("app", timeout=timeout)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


class Endpoint:
    """One keep-alive connection, to nginx (a base URL) or to the app's unix socket."""

    def __init__(self, target, timeout=5):
        self.target, self.timeout, self.conn = target, timeout, None

    def request(self, method, path, body=None, headers=None):
        """(status, headers, body bytes); status 0 when there was no answer."""
        headers = dict(headers or {})
        if body is not None:
            body = json.dumps(body)
            headers["Content-Type"] = "application/json"
        try:
            if self.conn is None:
                if self.target.startswith("unix:"):
                    self.conn = UnixHTTPConnection(self.target[5:], self.timeout)
                else:
                    parts = urlsplit(self.target)
                    self.conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=self.timeout)
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
            return response.status, response.headers, response.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = None
            return 0, {}, b""


class Checker:
    """Run with ``run(seconds)``, then read ``figures()``."""

    def __init__(self, base_url, app_socket, database_url, api_users=4, psql_users=1, phones=2,
                 quiet_share=0.15, seed=None):
        self.base_url, self.app_socket, self.database_url = base_url, app_socket, database_url
        self.tag = uuid.uuid4().hex[:6]
        self.random = random.Random(seed)
        self.writes = defaultdict(list)  # key -> [Write], in order
        self.reads = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.quiet_share = quiet_share
        self._setup(api_users, psql_users, phones)

    # --- setup: every key exists at version 0 ---

    def _setup(self, api_users, psql_users, phones):
        nginx = Endpoint(self.base_url)
        self.user_ids = {}
        for n in range(api_users + psql_users):
            key = f"u{n}"
            started = time.monotonic()
            status, _, body = nginx.request("POST", "/users", {"name": self._name(key, 0),
                                                               "email": f"chk-{self.tag}-{key}@example.com"})
            assert status == 201, (status, body)
            self.user_ids[key] = json.loads(body)["id"]
            self.writes[key].append(Write(key, 0, started, time.monotonic(), True))
        self.api_users = [f"u{n}" for n in range(api_users)]
        self.psql_users = [f"u{n}" for n in range(api_users, api_users + psql_users)]
        self.phones = {}
        for n in range(phones):
            key = f"p{n}"
            self.phones[key] = f"+44 7911 1{int(self.tag, 16) % 10**4:04d}{n}"  # the run's own
            started = time.monotonic()
            status, _, body = nginx.request("POST", "/addr_by_phone", {"phone": self.phones[key],
                                                                       "address": self._address(key, 0)})
            assert status == 201, (status, body)
            self.writes[key].append(Write(key, 0, started, time.monotonic(), True))
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
        threads = [threading.Thread(target=self._writer, args=(key, deadline)) for key in self.api_users]
        threads += [threading.Thread(target=self._psql_writer, args=(key, deadline)) for key in self.psql_users]
        threads += [threading.Thread(target=self._phone_writer, args=(key, deadline)) for key in self.phones]
        for via in ("nginx", "nginx", "nginx", "app"):
            threads.append(threading.Thread(target=self._reader, args=(via, deadline)))
        for via in ("nginx", "app"):
            threads.append(threading.Thread(target=self._list_reader, args=(via, deadline)))
        for thread in threads:
            thread.start()
        if during:
            during()
        for thread in threads:
            thread.join(seconds + 60)

    def _think(self, short=0.2):
        """Mostly short pauses; now and then a quiet spell longer than L1 keeps an entry."""
        if self.random.random() < self.quiet_share:
            return self.random.uniform(5.5, 8)
        return self.random.uniform(0, short)

    def _record(self, item):
        with self._lock:
            if isinstance(item, Write):
                self.writes[item.key].append(item)
            else:
                self.reads.append(item)

    def _writer(self, key, deadline):
        nginx, app = Endpoint(self.base_url), Endpoint(f"unix:{self.app_socket}")
        path = f"/users/{self.user_ids[key]}"
        for version in range(1, 10_000):
            if time.monotonic() + 0.5 > deadline:
                return
            started = time.monotonic()
            status, _, _ = nginx.request("PUT", path, {"name": self._name(key, version)})
            self._record(Write(key, version, started, time.monotonic(), status == 200))
            if status == 200:  # the writer reads its own write, through nginx and from the app
                self._read_item(nginx, "nginx", key, path, FRESH, own=True)
                self._read_item(app, "app", key, path, None, own=True)
            time.sleep(self._think(1.0))

    def _psql_writer(self, key, deadline):
        """Writes with SQL: renames, and now and then a delete and an insert of the same id."""
        user_id, absent = self.user_ids[key], 0
        for version in range(1, 10_000):
            if time.monotonic() + 0.5 > deadline:
                return
            present = self._latest(key) != ABSENT
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
            self._record(Write(key, written, started, time.monotonic(), acked))
            time.sleep(self._think(1.0))

    def _phone_writer(self, key, deadline):
        """An address created, changed, deleted and created again."""
        nginx = Endpoint(self.base_url)
        phone, absent = self.phones[key], 0
        for version in range(1, 10_000):
            if time.monotonic() + 0.5 > deadline:
                return
            present = self._latest(key) != ABSENT
            started = time.monotonic()
            if present and version % 3 == 0:
                absent += 1
                status, _, _ = nginx.request("DELETE", f"/addr_by_phone?phone={quote(phone)}")
                written, ok = (ABSENT, absent), status == 204
            else:
                method, ok_status = ("PUT", 200) if present else ("POST", 201)
                status, _, _ = nginx.request(method, "/addr_by_phone", {"phone": phone, "address": self._address(key, version)})
                written, ok = version, status == ok_status
            self._record(Write(key, written, started, time.monotonic(), ok))
            time.sleep(self._think(1.0))

    def _latest(self, key):
        """The version of the key's last acknowledged write, ABSENT for a delete."""
        with self._lock:
            acked = [w for w in self.writes[key] if w.acked]
        version = acked[-1].version
        return ABSENT if isinstance(version, tuple) else version

    def _item_path(self, key):
        if key in self.phones:
            return f"/addr_by_phone?phone={quote(self.phones[key])}"
        return f"/users/{self.user_ids[key]}"

    def _reader(self, via, deadline):
        endpoint = Endpoint(self.base_url if via == "nginx" else f"unix:{self.app_socket}")
        keys = sorted(self.writes)
        while time.monotonic() < deadline:
            key = self.random.choice(keys)
            self._read_item(endpoint, via, key, self._item_path(key), None)
            time.sleep(self._think())

    def _read_item(self, endpoint, via, key, path, headers, own=False):
        started = time.monotonic()
        status, response_headers, body = endpoint.request("GET", path, headers=headers)
        read = Read((key,), "item", via, started, time.monotonic(), status,
                    response_headers.get("X-Cache-Status", ""), response_headers.get("X-Cache-L2", ""), own=own)
        if status == 200:
            data = json.loads(body)
            read.seen[key] = self._version_of(key, data["address"] if key in self.phones else data["name"])
        elif status == 404:
            read.seen[key] = ABSENT
        self._record(read)

    def _list_reader(self, via, deadline):
        endpoint = Endpoint(self.base_url if via == "nginx" else f"unix:{self.app_socket}")
        by_id = {user_id: key for key, user_id in self.user_ids.items()}
        while time.monotonic() < deadline:
            started = time.monotonic()
            status, headers, body = endpoint.request("GET", self.list_path)
            read = Read(tuple(self.user_ids), "list", via, started, time.monotonic(), status,
                        headers.get("X-Cache-Status", ""), headers.get("X-Cache-L2", ""))
            if status == 200:
                listed = {by_id[user["id"]]: self._version_of(by_id[user["id"]], user["name"])
                          for user in json.loads(body) if user["id"] in by_id}
                read.seen = {key: listed.get(key, ABSENT) for key in self.user_ids}
            self._record(read)
            time.sleep(self._think())

    # --- the analysis ---

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

    def figures(self):
        """Per level and kind: reads, the worst staleness and the impossible reads."""
        table = defaultdict(lambda: {"reads": 0, "worst_s": 0.0, "impossible": 0})
        for read in self.reads:
            if not read.seen:
                table["no answer or error"]["reads"] += 1
                continue
            if read.own:
                row = table[f"own write, {read.via}"]
            elif read.l1 == "STALE":
                row = table[f"L1 stale-if-error {read.kind}"]
            else:
                row = table[f"{read.level} {read.kind}"]
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

    def report(self, name=None):
        """The figures as lines of text; with ``name``, also kept for the end of the session."""
        summary, table = self.figures()
        lines = [json.dumps(summary)]
        lines += [f"{level:28} {row['reads']:6} reads, worst {row['worst_s']:.3f} s behind, {row['impossible']} impossible"
                  for level, row in sorted(table.items())]
        if name:
            REPORTS.append((f"coherence checker: {name}", lines))
        return "\n".join(lines)
