"""The coherence checker's verdicts (tests/support/coherence.py, History),
on histories written by hand: what is stale, by how much, and what no write
could have made."""

import pytest

from tests.support.coherence import ABSENT, History, Read, Write


def history(*writes):
    """A History of key "k" with ``writes``: (version, start, end, acked)."""
    made = History()
    for version, start, end, acked in writes:
        made.record(Write("k", version, start, end, acked))
    return made


def read(start, end, seen, l1="", l2="", via="nginx", own=False, kind="item"):
    return Read(("k",), kind, via, start, end, 200, l1, l2, seen={"k": seen}, own=own)


WRITES = [(0, 0.0, 0.1, True), (1, 1.0, 1.1, True), (2, 3.0, 3.1, True)]


@pytest.mark.parametrize("seen, start, behind", [
    (2, 4.0, 0.0),  # the latest
    (1, 2.0, 0.0),  # the latest when it began
    (1, 5.0, 1.9),  # version 2 was acknowledged at 3.1
    (0, 5.0, 3.9),  # the first write after it was acknowledged at 1.1
    (0, 1.05, 0.0),  # began before the next write was acknowledged
])
def test_a_read_is_behind_by_how_long_after_the_next_ack_it_began(seen, start, behind):
    assert history(*WRITES).staleness(read(start, start + 0.1, seen), "k") == pytest.approx(behind)


def test_a_write_that_got_no_answer_obliges_nobody_but_may_be_read():
    made = history((0, 0.0, 0.1, True), (1, 1.0, 6.0, False), (2, 7.0, 7.1, True))
    assert made.staleness(read(5.0, 5.1, 0), "k") == 0.0  # version 1 was never acknowledged
    assert made.staleness(read(2.0, 2.1, 1), "k") == 0.0  # but it may have committed
    assert made.latest("k") == 2


def test_a_read_of_what_no_write_had_begun_is_impossible():
    made = history(*WRITES)
    assert made.staleness(read(0.5, 0.6, 1), "k") is None  # version 1 began at 1.0
    assert made.staleness(read(4.0, 4.1, 7), "k") is None  # never written
    assert made.staleness(read(4.0, 4.1, ABSENT), "k") is None  # never deleted


def test_a_delete_is_a_version_too():
    made = history((0, 0.0, 0.1, True), ((ABSENT, 1), 1.0, 1.1, True), (2, 3.0, 3.1, True))
    assert made.latest("k") == 2
    assert made.staleness(read(2.0, 2.1, ABSENT), "k") == 0.0
    assert made.staleness(read(4.0, 4.1, ABSENT), "k") == pytest.approx(0.9)
    made.record(Write("k", (ABSENT, 2), 5.0, 5.1, True))
    assert made.latest("k") == ABSENT


def test_figures_are_per_level_with_the_worst_and_the_impossible():
    made = history(*WRITES)
    for reading in (read(5.0, 5.1, 0, l1="HIT"), read(5.0, 5.1, 1, l1="UPDATING"),  # L1: 3.9 and 1.9
                    read(5.0, 5.1, 2, l1="MISS", l2="HIT"),  # L2
                    read(3.2, 3.3, 1, l1="STALE"),  # stale-if-error
                    read(5.0, 5.1, 2, via="app"), read(3.2, 3.3, 2, via="app", own=True),  # PostgreSQL, own write
                    read(0.5, 0.6, 1, l1="MISS")):  # impossible
        made.record(reading)
    made.record(Read(("k",), "item", "nginx", 6.0, 6.1, 0, "", ""))  # no answer
    summary, table = made.figures()
    assert summary == {"writes": 2, "writes_acknowledged": 2, "reads": 8}
    assert table["L1 item"] == {"reads": 2, "worst_s": 3.9, "impossible": 0}
    assert table["L2 item"] == {"reads": 1, "worst_s": 0.0, "impossible": 0}
    assert table["L1 stale-if-error item"]["worst_s"] == pytest.approx(0.1)
    assert table["own write, app"]["reads"] == 1
    assert table["db item"] == {"reads": 2, "worst_s": 0.0, "impossible": 1}
    assert table["no answer or error"]["reads"] == 1
    assert len(made.lines()) == 1 + len(table)


def test_a_list_read_is_judged_key_by_key():
    made = History()
    for key in ("a", "b"):
        made.record(Write(key, 0, 0.0, 0.1, True))
        made.record(Write(key, 1, 1.0, 1.1, True))
    listing = Read(("a", "b"), "list", "nginx", 2.0, 2.1, 200, "HIT", "", seen={"a": 1, "b": 0})
    made.record(listing)
    assert (made.staleness(listing, "a"), made.staleness(listing, "b")) == (0.0, pytest.approx(0.9))
    assert made.figures()[1]["L1 list"]["worst_s"] == 0.9
