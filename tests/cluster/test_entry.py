"""The entry in front of the app hosts: a host that dies, is cut off or is
restarted costs no read; the database behind them is never its business;
client addresses survive the extra hop."""

import json
import threading
import time
import uuid

import pytest

from tests.support.bounds import L1_BOUND, STALE_IF_ERROR_BOUND, UNPROMISED_WAIT
from tests.support.http import FRESH, Client
from tests.support.waiting import Pace, eventually

READS_PER_SECOND = 40


class Reads:
    """Reads through the entry at a stated rate, from a client of their own,
    until stopped (at most ``UNPROMISED_WAIT`` seconds); each reply kept."""

    def __init__(self, url, paths, headers=None):
        self.url, self.paths, self.headers = url, paths, headers
        self.replies = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self):
        pace, deadline, n = Pace(READS_PER_SECOND), time.monotonic() + UNPROMISED_WAIT, 0
        with Client(self.url, keep_alive=False) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                pace.wait()
                self.replies.append(client.request("GET", self.paths[n % len(self.paths)], headers=self.headers))
                n += 1

    def figures(self, since=None):
        """Of the reads that began after ``since`` (all by default): how many, failed, slow."""
        since = since if since is not None else min((r.started for r in self.replies), default=0.0)
        replies = [r for r in self.replies if r.started >= since]
        slow = [r for r in replies if r.seconds > 0.5]
        return {"reads": len(replies), "failed": sum(not r.ok for r in replies),
                "slower_than_0.5_s": len(slow), "last_slow_after_s": round(max((r.started for r in slow),
                                                                               default=since) - since, 3)}


@pytest.mark.parametrize("fault, undo, which", [("kill", "start", 1), ("partition", "heal", 2)])
def test_a_host_killed_or_cut_off_costs_no_read(cluster, entry, figures, fault, undo, which):
    victim = sorted(cluster.hosts("app"))[which]
    with Reads(cluster.entry, ["/users/1", "/users/2"]) as reads:
        time.sleep(1)
        struck = time.monotonic()
        cluster(fault, victim)
        time.sleep(4)
    try:
        figures.update(host=victim, **reads.figures(struck))
        assert reads.figures()["failed"] == 0, [r for r in reads.replies if not r.ok][:5]
    finally:
        cluster(undo, victim)


def test_a_rolling_restart_of_every_app_host_fails_no_read(cluster, entry, figures):
    hosts = sorted(cluster.hosts("app"))
    with Reads(cluster.entry, ["/users/1", "/users/2"]) as reads:
        for host in hosts:
            cluster("stop", host)
            cluster("start", host)
    measured = reads.figures()
    figures.update(hosts=hosts, **measured)
    assert measured["failed"] == 0


def test_the_entry_keeps_every_host_while_the_data_tier_is_unreachable(cluster, entry, figures):
    """PostgreSQL and Redis out of every app host's reach (their packets
    dropped): L1 keeps answering its cached items, STALE once expired and
    within stale-if-error's bound, from every host; the entry drops none."""
    apps = sorted(cluster.hosts("app"))
    paths = ["/users/1", "/users/2", "/users/3"]
    for host in apps:
        with Client(cluster.l1(host)) as client:
            for path in paths:
                eventually(lambda path=path: client.request("GET", path), lambda reply: reply.l1 == "HIT",
                           seconds=UNPROMISED_WAIT)
    filled = time.monotonic()
    for host in apps:
        cluster("partition", host, "data")
    try:
        with Reads(cluster.entry, paths) as reads:
            time.sleep(L1_BOUND + 4)
        per_host = {}
        for host in apps:
            with Client(cluster.l1(host)) as client:
                reply = client.request("GET", paths[0])
                per_host[host] = (reply.status, reply.l1)
    finally:
        for host in apps:
            cluster("heal", host, "data")
    expired = [r for r in reads.replies if r.started - filled > L1_BOUND]
    measured = reads.figures()
    figures.update(**measured, expired_reads=len(expired), per_host=per_host,
                   slowest_s=round(max(r.seconds for r in reads.replies), 3))
    assert measured["failed"] == 0
    assert expired and all(r.l1 == "STALE" for r in expired)
    assert all(r.started - filled <= STALE_IF_ERROR_BOUND for r in reads.replies)
    assert set(per_host.values()) == {(200, "STALE")}


def test_client_addresses_survive_the_extra_hop(cluster):
    """Each app host sees the client's address, not the entry's: in its log,
    and in its per-client limit (nginx/limits.conf), which a flood from one
    client meets while another client still passes."""
    tag = uuid.uuid4().hex[:8]
    entry_address = cluster.status()["hosts"][0]["bridge_address"]
    with Client(cluster.entry) as flooder, Client(cluster.entry) as other:
        replies = [flooder.request("POST", "/users", {"name": "x", "email": f"fl-{tag}-{n}@example.com"})
                   for n in range(400)]
        assert 429 in {r.status for r in replies}
        assert other.request("GET", "/users/1", headers=FRESH).status == 200
    logs = [f"{cluster.env['CLUSTER_DIR']}/hosts/{host}/nginx/access.log" for host in cluster.hosts("app")]

    def clients():
        """The client of every request the app hosts' nginx logged (each log is
        flushed once a second): writes only, which come through the entry alone."""
        lines = [json.loads(line) for log in logs for line in open(log).read().splitlines()]
        return {line["client"] for line in lines if line["method"] == "POST"}, {line["client"] for line in lines}

    writers, seen = eventually(clients, lambda found: {flooder.source, other.source} <= found[1],
                               seconds=UNPROMISED_WAIT).value
    assert flooder.source in writers and entry_address not in writers
