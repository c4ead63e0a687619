"""The staleness bounds of both cache levels, measured by the coherence
checker (tests/support/coherence.py) on the running stack: a short run here,
the same under faults in tests/faults/test_coherence_faults.py."""

import os

import pytest

from tests.support.bounds import L1_BOUND, L1_ITEM_BOUND, L2_BOUND
from tests.support.coherence import Checker
from tests.support.stack import app_socket

SECONDS = 25


@pytest.fixture(scope="module")
def checked(base_url):
    checker = Checker(base_url, app_socket(), os.environ["DATABASE_URL"], seed=10)
    checker.run(SECONDS)
    checker.report(f"{SECONDS} s, no faults")
    return checker.figures()


def worst(table, *names):
    return max((table[name]["worst_s"] for name in names if name in table), default=0.0)


def test_no_read_saw_a_state_that_no_write_made(checked):
    _, table = checked
    assert all(row["impossible"] == 0 for row in table.values()), table


def test_l1_items_follow_a_change_within_a_second_and_lists_within_their_lifetime(checked):
    summary, table = checked
    # Enough reads at the level for its worst case to mean something.
    assert table["L1 item"]["reads"] >= 20 and table["L1 list"]["reads"] >= 5, table
    assert worst(table, "L1 item") <= L1_ITEM_BOUND, table
    assert worst(table, "L1 list") <= L1_BOUND, table


def test_l2_is_never_more_than_a_second_behind(checked):
    _, table = checked
    assert table["L2 item"]["reads"] >= 5, table
    assert worst(table, "L2 item", "L2 list") <= L2_BOUND, table


def test_postgresql_answers_and_own_writes_are_never_behind(checked):
    _, table = checked
    assert worst(table, "db item", "db list", "own write, nginx", "own write, app") == 0.0, table


def test_nothing_stale_is_served_while_nothing_fails(checked):
    summary, table = checked
    assert not any(name.startswith("L1 stale-if-error") for name in table), table
    assert summary["writes_acknowledged"] == summary["writes"] > 20, summary
