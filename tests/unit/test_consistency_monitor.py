"""The consistency monitor's sampling (cache/monitor.py): the rate it promises."""

from cache import l1, monitor
from cache.l2 import CAUGHT_UP_SECONDS


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_the_bucket_allows_its_rate_and_no_more_however_hard_changes_flood():
    clock = Clock()
    bucket = monitor.TokenBucket(2, clock)
    taken = 0
    for step in range(10_000):  # 10 s of a change every millisecond
        clock.now = step / 1000
        taken += bucket.take()
    assert taken <= 2 + 2 * 10  # the burst, then the rate
    assert taken >= 2 * 10


def test_a_rate_under_one_still_allows_one_check():
    clock = Clock()
    bucket = monitor.TokenBucket(0.5, clock)
    assert bucket.take() and not bucket.take()
    clock.now = 2.0
    assert bucket.take()


def test_a_check_comes_after_both_bounds():
    assert monitor.L2_BOUND == CAUGHT_UP_SECONDS
    assert monitor.L1_BOUND > l1.L1Refresher.AGAIN_AFTER
    assert monitor.CHECK_AFTER > max(monitor.L1_BOUND, monitor.L2_BOUND)
    # An L1 entry is fresh this long after its fill: a check finds a refresh that was lost.
    assert monitor.CHECK_AFTER < l1.FRESH_SECONDS
