"""Waiting without guessing the machine's speed: the one waiter of the suite
(``eventually``), and a stated rate for loads (``Pace``)."""

import time
from dataclasses import dataclass


@dataclass
class Waited:
    """What ``eventually`` saw. The moment the condition came true lies
    between ``unmet_for`` and ``met_after`` (seconds since the wait began)."""

    value: object  # the first probe's result that met the condition
    unmet_for: float  # when the last probe that did not meet it began; 0.0 if none did not
    met_after: float  # when the probe that met it began


def eventually(probe, until=bool, *, seconds, step=0.02, since=None):
    """``probe()`` again and again until ``until(result)`` holds; fails after
    ``seconds``. ``since``: the time.monotonic() the wait counts from (by
    default, now).

    A bound is asserted on ``unmet_for``: no probe that began later than the
    bound saw the old state. A slow probe delays the next one, which only
    makes ``unmet_for`` smaller, so the verdict does not depend on the
    machine's speed, while ``seconds`` is how long to keep trying, never a bound."""
    began = time.monotonic()
    since = began if since is None else since
    unmet_for = 0.0
    while True:
        started = time.monotonic()
        value = probe()
        if until(value):
            return Waited(value, unmet_for, started - since)
        unmet_for = started - since
        assert time.monotonic() - began < seconds, f"not within {seconds} s: {value!r}"
        time.sleep(step)


class Pace:
    """A stated rate: ``wait()`` returns at most ``per_second`` times a
    second. A slow machine sends less; a fast one never more."""

    def __init__(self, per_second):
        self.interval = 1 / per_second
        self._next = 0.0

    def wait(self):
        delay = self._next - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self._next = time.monotonic() + self.interval
