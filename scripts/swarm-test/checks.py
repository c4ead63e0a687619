"""The measurements of `make swarm-test` (run.sh beside this file) on a
deployed stack, each printing its figures and exiting 1 when a promise broke.

    checks.py coherence SECONDS ENTRY DATABASE_URL NAME=URL ...
        The coherence checker (tests/support/coherence.py) through the entry
        and straight to each NAME=URL (each L1, an app), with the bounds that
        tests/cluster asserts, here with no fault: every read answered.
    checks.py reads ENTRY STOP_FILE MAX_SECONDS
        Reads through the entry, each past L1 to an app, until STOP_FILE
        exists (a rolling update is over): none may fail.
    checks.py monitor RELAY_METRICS_URL SNAPSHOT [L1_COUNT]
        The relay's consistency monitor (cache/monitor.py): without
        L1_COUNT, its counters saved to SNAPSHOT; with it, what it counted
        since: every L1 and L2 checked, none inconsistent.
"""

import json
import os
import sys
import time
import urllib.request
from collections import Counter

from prometheus_client.parser import text_string_to_metric_families

from tests.support.bounds import L1_BOUND, L1_ITEM_BOUND, L2_BOUND, STALE_IF_ERROR_BOUND
from tests.support.coherence import Checker
from tests.support.http import Client


def coherence(seconds, entry, database_url, *named):
    ways_in = {"entry": entry, **dict(way.split("=", 1) for way in named)}
    checker = Checker(entry, None, database_url, seed=22, ways_in=ways_in)
    checker.run(float(seconds))
    print("\n".join(checker.history.lines(by_via=True)))
    summary, table = checker.figures()

    def rows(prefix):
        return {name: row for name, row in table.items() if name.startswith(prefix)}

    broken = []
    if summary["writes_acknowledged"] <= 20:
        broken.append(f"too few acknowledged writes to judge: {summary}")
    broken += [f"{name}: {row['impossible']} impossible reads" for name, row in table.items() if row["impossible"]]
    broken += [f"{name}: {row['statuses']}" for name, row in rows("no answer or error").items()]
    for prefix, bound in (("L1 item", L1_ITEM_BOUND), ("L1 list", L1_BOUND), ("L2 ", L2_BOUND),
                          ("L1 stale-if-error", STALE_IF_ERROR_BOUND), ("db ", 0.0), ("own write", 0.0)):
        broken += [f"{name}: {row['worst_s']} s behind, bound {bound} s"
                   for name, row in rows(prefix).items() if row["worst_s"] > bound]
    # Every L1 answered from its cache, or it was not measured at all.
    broken += [f"no L1 item read via {name}" for name in named_ways(named) if f"L1 item via {name}" not in table]
    report(broken)


def named_ways(named):
    return [way.split("=", 1)[0] for way in named if not way.startswith("app")]


def reads(entry, stop_file, max_seconds):
    """One read after another, each a new URI (so L1 has none and an app answers)."""
    statuses, slowest, deadline = Counter(), 0.0, time.monotonic() + float(max_seconds)
    client = Client(entry)
    n = 0
    while not os.path.exists(stop_file) and time.monotonic() < deadline:
        n += 1
        reply = client.request("GET", f"/users?page_size=1&cursor={n}")
        statuses[reply.status if reply.status else f"no answer{reply.error}"] += 1
        slowest = max(slowest, reply.seconds)
        time.sleep(0.05)
    failed = sum(count for status, count in statuses.items() if status != 200)
    print(f"reads through the entry: {n}, failed {failed}, statuses {dict(statuses)}, slowest {slowest:.3f} s")
    report([f"{failed} of {n} reads failed"] if failed or not n else [])


def monitor(metrics_url, snapshot, l1_count=None):
    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        text = response.read().decode()
    counts = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in ("api_consistency_checks_total", "api_consistency_inconsistent_total"):
                counts[f"{sample.name} {sample.labels['level']} {sample.labels['host']}"] += sample.value
    if l1_count is None:
        with open(snapshot, "w") as out:
            json.dump(counts, out)
        return
    with open(snapshot) as saved:
        counts.subtract(json.load(saved))
    checks = {key.split(" ", 1)[1]: n for key, n in counts.items() if key.startswith("api_consistency_checks")}
    bad = {key.split(" ", 1)[1]: n for key, n in counts.items() if key.startswith("api_consistency_inconsistent")}
    print(f"consistency monitor meanwhile: checks {checks}, inconsistent {bad}")
    broken = [f"{where}: {n} inconsistent" for where, n in bad.items() if n]
    if sum(1 for where, n in checks.items() if where.startswith("l1 ") and n) < int(l1_count):
        broken.append(f"not every one of the {l1_count} L1s was checked")
    if not checks.get("l2 redis"):
        broken.append("L2 was not checked")
    report(broken)


def report(broken):
    for line in broken:
        print(f"BROKEN: {line}")
    sys.exit(1 if broken else 0)


if __name__ == "__main__":
    {"coherence": coherence, "reads": reads, "monitor": monitor}[sys.argv[1]](*sys.argv[2:])
