"""The blueprints' pure pieces: the text rules every schema states, the page
header, and the hand-written dumps that stand in for marshmallow's."""

import json
from datetime import datetime, timezone

import marshmallow as ma
import pytest

from blueprints import pagination_header, printable, printable_with_line_breaks
from blueprints.incidents import IncidentSchema, incident_json
from blueprints.users import UserSchema, user_json


@pytest.mark.parametrize("text", ["Zoë Ørsted", "王秀英", "👩\u200d💻 Dev", "O'Brien; DROP TABLE users;--", ""])
def test_text_without_control_characters_passes(text):
    assert printable(text) == text


@pytest.mark.parametrize("text", ["Bell\x07", "Two\nlines", "tab\there", "C1\x85control", "DEL\x7f", "line\u2028sep",
                                  "ends with a newline\n", "lone \ud800 half"])
def test_control_characters_final_newlines_and_lone_surrogates_are_refused(text):
    with pytest.raises(ma.ValidationError):
        printable(text)


def test_messages_may_break_lines_and_nothing_else():
    assert printable_with_line_breaks("First line\nsecond\twith a tab") == "First line\nsecond\twith a tab"
    for text in ("escape \x1b[31m", "NUL\x00", "lone \udfff half"):
        with pytest.raises(ma.ValidationError):
            printable_with_line_breaks(text)


def test_a_full_page_points_at_the_next_and_a_short_one_ends_the_list():
    full = json.loads(pagination_header(5, 2, [{"id": 3}, {"id": 7}], page=1)["X-Pagination"])
    assert full == {"total": 5, "page_size": 2, "next_cursor": 7, "page": 1, "total_pages": 3}
    short = json.loads(pagination_header(5, 2, [{"id": 9}])["X-Pagination"])
    assert short == {"total": 5, "page_size": 2, "next_cursor": None}
    assert "next_cursor" not in json.loads(pagination_header(0, 10, [], cursors=False)["X-Pagination"])


@pytest.mark.parametrize("created_at", [datetime(2026, 1, 2, 3, 4, 5, 600, tzinfo=timezone.utc),
                                        datetime(2026, 1, 2, tzinfo=timezone.utc)])
def test_the_hand_written_user_dump_matches_the_schema(created_at):
    row = {"id": 7, "name": "Zoë", "email": "z@example.com", "created_at": created_at}
    assert user_json(row) == UserSchema().dump(row)


def test_the_hand_written_incident_dump_matches_the_schema():
    row = {"id": 3, "message": "Disk full", "status": "new", "source": "partner",
           "created_at": datetime(2026, 1, 2, 3, 4, 5, 600, tzinfo=timezone.utc)}
    assert incident_json(row) == IncidentSchema().dump(row)
