"""A commit whose synchronous standby never confirmed it is no
acknowledgement (cache/changes.py's notice list, infra/db.py): PostgreSQL
only warns, and the statement succeeds."""

from types import SimpleNamespace

import psycopg2
import pytest
from flask import Flask

from cache.changes import ChangeReports
from infra import db

# What PostgreSQL 15 sends when statement_timeout cancels a commit's wait.
WARNING = ("WARNING:  canceling wait for synchronous replication due to user request\n"
           "DETAIL:  The transaction has already committed locally, but might not have been replicated "
           "to the standby.\n")
CHANGE = 'NOTICE:  cache changes {"table": "users", "keys": ["7"]}\n'


def test_the_warning_is_noted_and_the_changes_kept():
    reports = ChangeReports()
    reports.append(CHANGE)
    reports.append(WARNING)
    assert reports.unreplicated and reports.changes == {"users": ["7"]}


def test_a_commit_not_replicated_is_a_database_error_after_its_changes_are_invalidated():
    app, invalidated = Flask(__name__), []
    app.extensions["db"] = {"after_commit": invalidated.append}
    conn = SimpleNamespace(notices=ChangeReports())
    conn.notices.append(CHANGE)
    conn.notices.append(WARNING)
    with app.app_context(), pytest.raises(db.CommitNotReplicated) as raised:
        db._committed(conn)
    assert invalidated == [{"users": ["7"]}] and not conn.notices.unreplicated
    assert isinstance(raised.value, psycopg2.OperationalError)  # the 503 of every database error


def test_a_replicated_commit_is_no_error():
    app = Flask(__name__)
    app.extensions["db"] = {"after_commit": lambda changes: None}
    conn = SimpleNamespace(notices=ChangeReports())
    conn.notices.append(CHANGE)
    with app.app_context():
        db._committed(conn)
