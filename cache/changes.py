"""Change capture: where a committed change becomes invalidations.

A trigger on every cached table (init.sql, note_cache_changes) notes each
change in ``cache_changes``, inside the writing transaction, and, on a
connection that set ``api.report_changes`` (the app's and the worker's:
infra/db.py), also reports it to the session as a notice. So each change is
applied twice, and neither needs a call someone must remember to place:

- at once, after the commit of the request or task that wrote: infra/db.py
  keeps the reports in ``ChangeReports`` and, once committed, calls
  ``invalidate_after_commit`` (app.py hands both to ``db.init_app``);
- durably, by the relay (cache/relay.py), which reads ``cache_changes`` and
  calls ``invalidate`` until Redis has taken them, then has L1 refresh the
  changed items it may hold.
"""

import json
import logging

import redis
from flask import current_app

log = logging.getLogger(__name__)

# The notice note_cache_changes (init.sql) sends: "NOTICE:  cache changes {json}".
_CHANGES_NOTICE = "cache changes "
# PostgreSQL's warning when a commit's wait for its synchronous standby was
# cancelled (statement_timeout, a cancel request): committed on this server
# only, which a failover may undo.
_NOT_REPLICATED_WARNING = "canceling wait for synchronous replication"


class ChangeReports:
    """Takes the place of a connection's ``notices`` list: keeps the changes
    the capture triggers report ({table: [keys]}), notes a commit that its
    synchronous standby never confirmed (``unreplicated``), and drops every
    other notice."""

    def __init__(self):
        self.changes = {}
        self.unreplicated = False

    def append(self, notice):
        if _NOT_REPLICATED_WARNING in notice:
            self.unreplicated = True
        _, found, payload = notice.partition(_CHANGES_NOTICE)
        if found:
            try:
                report = json.loads(payload)
                self.changes.setdefault(report["table"], []).extend(report["keys"])
            except (ValueError, KeyError, TypeError):  # psycopg2 would drop the error silently
                log.error("unreadable change report (the relay still applies it): %r", notice)

    def take(self):
        changes, self.changes = self.changes, {}
        return changes


def invalidate(changes, durably=False):
    """Invalidate in L2 what ``changes`` ({table: [keys]}) touched, and return
    its (resource, id) items; raises redis.RedisError if Redis did not take
    it (``durably``: or a replica of it did not, l2.invalidate_durably)."""
    levels = current_app.extensions["cache"]
    items, lists = levels.resources.touched_by(changes)
    if (items or lists) and levels.l2.enabled:
        (levels.l2.invalidate_durably if durably else levels.l2.invalidate)(items, lists)
    return items


def invalidate_after_commit(changes):
    """``invalidate`` right after a commit. A connection the server closed
    (a failover: Sentinel has the old primary's clients dropped) is tried
    once more on a new one, to whichever primary there is now: another
    process of the app may already read L2 there, and the writer's next read
    may reach it. Any other failure is logged and left to the relay, which
    applies every change durably; meanwhile L2 is not read past its
    caught-up second, and this process skips it for ``CACHE_RETRY_AFTER``."""
    l2 = current_app.extensions["cache"].l2
    try:
        try:
            invalidate(changes)
        except redis.ConnectionError:
            l2.reconnect()
            invalidate(changes)
    except redis.RedisError as error:
        log.error("redis invalidation failed, left to the relay: %s", error)
        l2.failed("invalidate", error)
