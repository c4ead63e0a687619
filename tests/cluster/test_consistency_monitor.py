"""The relay's consistency monitor (cache/monitor.py) on several hosts: it
checks a sample of the changes on every app host's L1 (the nginx the relay
refreshes, found by the same name) and on L2, and a healthy cluster under
writes reports no inconsistency on any of them."""

import subprocess
import time
import uuid

from prometheus_client.parser import text_string_to_metric_families

from cache import monitor
from tests.support.reporting import report

USERS = 5
# One change every CHANGE_EVERY, each user in turn: a user rests longer than
# a check's wait between its changes (a key that never rests is never
# checked), and the changes come no faster than the monitor samples them.
CHANGE_EVERY = 0.6
CHANGES = 25


def relay_counts(cluster):
    """{(metric, level, host): value} of the consistency counters, from the ops host's relay."""
    (ops,) = cluster.hosts("ops").values()
    text = subprocess.run(["ip", "netns", "exec", ops["namespace"], "curl", "-fsS", "http://127.0.0.1:9102/metrics"],
                          check=True, capture_output=True, text=True, timeout=10).stdout
    return {(sample.name, sample.labels["level"], sample.labels["host"]): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples
            if sample.name in ("api_consistency_checks_total", "api_consistency_inconsistent_total")}


def test_every_app_hosts_l1_is_checked_and_none_is_inconsistent(cluster, entry):
    assert CHANGE_EVERY * USERS > monitor.CHECK_AFTER and 1 / CHANGE_EVERY <= 2
    levels = {f"l1 {name}": ("l1", f"http://{host['address']}:8081") for name, host in cluster.hosts("app").items()}
    levels["l2"] = ("l2", monitor.L2_HOST)
    users = []
    for _ in range(USERS):
        tag = uuid.uuid4().hex[:10]
        reply = entry.request("POST", "/users", {"name": "v0", "email": f"mon-{tag}@example.com"})
        assert reply.status == 201, reply
        users.append(f"/users/{reply.json()['id']}")
    # What earlier tests' faults left to check is checked (retries included) before counting.
    time.sleep(monitor.CHECK_AFTER + monitor.L1_FRESH_FOR)
    before = relay_counts(cluster)
    for n in range(CHANGES):
        path = users[n % USERS]
        reply = entry.request("PUT", path, {"name": f"v{n + 1}"})
        assert reply.status == 200, reply
        entry.request("GET", path)  # an L1 holds it again
        time.sleep(CHANGE_EVERY)
    time.sleep(monitor.CHECK_AFTER + 1)  # the last changes are checked too
    after = relay_counts(cluster)

    def grew(metric, level, host):
        return after.get((metric, level, host), 0) - before.get((metric, level, host), 0)

    checks = {name: grew("api_consistency_checks_total", *where) for name, where in levels.items()}
    bad = {name: grew("api_consistency_inconsistent_total", *where) for name, where in levels.items()}
    report("consistency monitor across hosts", f"{CHANGES} changes, one each {CHANGE_EVERY} s: checks {checks}, "
           f"inconsistent {bad}")
    assert all(count > 0 for count in checks.values()), checks
    assert not any(bad.values()), bad
