"""Both cache levels, one story: L1 (nginx) and L2 (Redis) in front of PostgreSQL.

A read, and where it is answered:
    nginx's L1 (nginx/cache.conf: what it keeps, l1.py: what the app lets it keep)
    -> the fast path or the view (reads.py) -> L2 (l2.py) -> PostgreSQL (the
    resource's loader, declared with its blueprint: resources.py).

A change, from the trigger to every nginx:
    a write commits -> the table's trigger noted it (init.sql) ->
    at once: infra/db.py hands the commit's reports to changes.py, which
    invalidates L2;
    durably: the relay (relay.py here; the process is relay.py at the top)
    reads cache_changes, invalidates L2 again (changes.py), marks L2 caught
    up, and has every nginx fetch the changed items L1 may hold (l1.py).

The bounds this keeps (docs/caching.md): L2 within 1 s of any committed
change (the relay's caught-up mark), L1 items refreshed within 1 s of a change
and every L1 answer within 5 s (Cache-Control, l1.py).

Each app keeps its cache state in ``app.extensions["cache"]`` (``Levels``):
its declared resources, its L2, and the token of L1 refreshes.
"""

from dataclasses import dataclass

from cache import l1
from cache.l2 import L2
from cache.resources import Registry


@dataclass(frozen=True)
class Levels:
    resources: Registry
    l2: L2
    refresh_token: str


def init_app(app):
    """The app's cache state; the blueprints declare their resources into it
    as they are registered, and ``reads.init_app`` then serves the item reads."""
    app.extensions["cache"] = Levels(
        resources=Registry(),
        l2=L2(app.config, app.extensions["metrics"]),
        refresh_token=l1.refresh_token(app.config["SECRET_KEY"]),
    )
