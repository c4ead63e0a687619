"""The product's timing promises (DESIGN.md, "Cache semantics"), each built
from the constant the code itself uses: the only time bounds a test asserts.

A machine's speed is no promise. A test measures a bound the way the
coherence checker does: a read is behind by how long after the write was
acknowledged it *began*, so a slow machine can only make a test see less
staleness, never fail it. What the product promises no time for (a worker
processing an order, Prometheus scraping, caching resuming after Redis
returns) is waited for as long as ``UNPROMISED_WAIT``, which only a broken
stack uses up.
"""

from cache import l1
from cache.l2 import CAUGHT_UP_SECONDS
from infra import settings

# L2: never more than this behind a committed change, whoever made it and whatever died.
L2_BOUND = CAUGHT_UP_SECONDS

# L1: an entry is fresh l1.FRESH_SECONDS, then served l1.REFRESH_SECONDS more
# while one request refreshes it; nginx counts whole seconds, hence one more.
L1_BOUND = l1.FRESH_SECONDS + l1.REFRESH_SECONDS + 1

# L1 items: after a change the relay has every nginx fetch the item again, so
# every client sees the new item (or its 404) within a second.
L1_ITEM_BOUND = 1.0

# stale-if-error: an expired entry answers past L1_BOUND, only while the app or
# PostgreSQL fails, and at most this long after it was filled.
STALE_IF_ERROR_BOUND = L1_BOUND + l1.IF_ERROR_SECONDS

# How long a client waits for an answer: as long as gunicorn lets a request run (WEB_TIMEOUT).
REQUEST_SECONDS = settings.web_settings()["timeout"]

# How long a test waits for what has no promised bound. Not a verdict on
# speed: a passing run stops waiting as soon as the thing happened.
UNPROMISED_WAIT = 60
