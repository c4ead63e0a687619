"""L1 across hosts: every nginx that may hold an item is refreshed after a
change, found by one name the relay looks up again (cache/l1.py), not by a
list kept by hand; a host that is dead or cut off never delays the others."""

import time
import uuid

from cache.l1 import L1Refresher
from tests.support.bounds import L1_BOUND, L1_ITEM_BOUND, UNPROMISED_WAIT
from tests.support.http import Client
from tests.support.waiting import eventually


def new_user(entry):
    reply = entry.request("POST", "/users", {"name": "v0", "email": f"cl-{uuid.uuid4().hex[:10]}@example.com"})
    assert reply.status == 201, reply
    return f"/users/{reply.json()['id']}"


def cached_at(url, path):
    """Reads ``path`` from one nginx until it answers from its L1."""
    with Client(url) as client:
        eventually(lambda: client.request("GET", path), lambda reply: reply.l1 == "HIT", seconds=UNPROMISED_WAIT)


def rename(entry, path, name):
    reply = entry.request("PUT", path, {"name": name})
    assert reply.status == 200, reply
    return reply.ended


def seen_at(url, path, name, since):
    """How long after ``since`` the last read from ``url``'s L1 still showed another name."""
    with Client(url) as client:
        waited = eventually(lambda: client.request("GET", path),
                            lambda reply: reply.status == 200 and reply.json()["name"] == name,
                            seconds=UNPROMISED_WAIT, since=since)
    return waited.unmet_for


def test_a_host_added_after_the_relay_started_is_refreshed(cluster, entry, figures):
    added = cluster("add").strip()
    # Discovery: the relay's next look at the name, at most this long after its last.
    time.sleep(L1Refresher.RESOLVE_SECONDS)
    path = new_user(entry)
    cached_at(cluster.l1(added), path)
    acked = rename(entry, path, "v1")
    behind = seen_at(cluster.l1(added), path, "v1", acked)
    figures.update(host=added, discovery_s=L1Refresher.RESOLVE_SECONDS, behind_s=round(behind, 3))
    assert behind <= L1_ITEM_BOUND


def test_a_host_cut_off_delays_no_other_and_catches_up_within_its_bound(cluster, entry, figures):
    apps = sorted(cluster.hosts("app"))
    cut, others = apps[0], apps[1:]
    path = new_user(entry)
    for name in apps:
        cached_at(cluster.l1(name), path)
    cluster("partition", cut)
    try:
        acked = rename(entry, path, "v1")
        behind = {name: seen_at(cluster.l1(name), path, "v1", acked) for name in others}
    finally:
        cluster("heal", cut)
    behind[cut] = seen_at(cluster.l1(cut), path, "v1", acked)
    figures.update(cut=cut, behind_s={name: round(s, 3) for name, s in behind.items()})
    assert all(behind[name] <= L1_ITEM_BOUND for name in others), behind
    assert behind[cut] <= L1_BOUND, behind
