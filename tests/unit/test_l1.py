"""What L1 may keep (cache/l1.py): the Cache-Control value nginx obeys."""

from cache.l1 import CACHEABLE, FRESH_SECONDS, IF_ERROR_SECONDS, REFRESH_SECONDS


def test_l1_keeps_an_answer_only_for_the_bounded_times_and_says_so_first():
    """nginx reads s-maxage and the two stale extensions, the only stale rules
    it bounds in time; the value is the one nginx finds on every hit."""
    name, value = CACHEABLE
    assert name == "Cache-Control"
    assert value == (f"s-maxage={FRESH_SECONDS}, stale-while-revalidate={REFRESH_SECONDS}, "
                     f"stale-if-error={IF_ERROR_SECONDS}")
