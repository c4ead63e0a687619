"""Round robin (every host's L1 may hold an item, the relay refreshes them
all) against consistent hashing at the entry (each URI to one host: one L1
copy of each item), measured with the coherence checker, no faults: the
share of reads through the entry that L1 answered, and the staleness."""

import pytest

from tests.support.bounds import L1_BOUND, L1_ITEM_BOUND
from tests.support.coherence import Checker
from tests.support.reporting import report

SECONDS = 20


@pytest.fixture(scope="module")
def measured(cluster):
    results = {}
    try:
        for how in ("round-robin", "hash"):
            cluster("balance", how)
            checker = Checker(cluster.entry, None, cluster.database_url(), seed=30,
                              ways_in={"entry": cluster.entry, "app": cluster.app_socket("app1")})
            checker.run(SECONDS)
            summary, table = checker.figures()
            entry = {name: row for name, row in table.items() if name.endswith("via entry")}
            reads = sum(row["reads"] for row in entry.values())
            l1 = sum(row["reads"] for name, row in entry.items() if name.startswith("L1 "))
            results[how] = {"reads": reads, "l1_share": round(l1 / reads, 3), "table": table}
            report(f"balance {how}, {SECONDS} s", f"reads through the entry {reads}, answered by L1 {l1 / reads:.1%}",
                   *checker.history.lines(by_via=True)[1:])
    finally:
        cluster("balance", "round-robin")
    return results


@pytest.mark.parametrize("how", ["round-robin", "hash"])
def test_either_way_every_bound_holds(measured, how):
    table = measured[how]["table"]
    assert all(row["impossible"] == 0 for row in table.values()), table
    assert all(row["worst_s"] <= L1_ITEM_BOUND for name, row in table.items() if name.startswith("L1 item")), table
    assert all(row["worst_s"] <= L1_BOUND for name, row in table.items() if name.startswith("L1 list")), table

