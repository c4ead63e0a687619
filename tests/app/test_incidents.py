"""Incidents: create, list (newest first, filtered, paginated), read, change status."""

import json
import re

import pytest

from tests.app.conftest import wait_applied
from tests.support.errors import assert_error


def report(client, message="Disk almost full on db-1", incident_type="new", source="monitoring"):
    return client.post(
        "/incident/create",
        json={"incident_message": message, "incident_type": incident_type, "source": source},
    )


def test_create_read_list_and_change_status(client):
    created = report(client, message="  Payment gateway timeouts  ")
    assert created.status_code == 201
    body = created.get_json()
    assert body == {"message": "Incident created", "incident_id": body["incident_id"]}
    incident_id = body["incident_id"]

    incident = client.get(f"/incident/get/{incident_id}").get_json()
    assert set(incident) == {"incident_id", "incident_message", "incident_type", "source", "created_at"}
    assert incident["incident_message"] == "Payment gateway timeouts"
    assert (incident["incident_type"], incident["source"]) == ("new", "monitoring")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", incident["created_at"])

    changed = client.patch("/incident/update-status", query_string={"incident_id": incident_id, "status": "completed"})
    assert changed.status_code == 200
    assert changed.get_json() == {**incident, "incident_type": "completed"}
    assert client.get(f"/incident/get/{incident_id}").get_json()["incident_type"] == "completed"


def test_list_is_newest_first_with_pagination(client):
    ids = [report(client, message=f"Incident number {n}").get_json()["incident_id"] for n in range(12)]
    first = client.get("/incident/get")
    assert [i["incident_id"] for i in first.get_json()] == ids[::-1][:10]
    assert json.loads(first.headers["X-Pagination"]) == {
        "total": 12, "total_pages": 2, "page": 1, "page_size": 10, "next_cursor": ids[2],
    }
    second = client.get("/incident/get?page=2&limit=10")
    assert [i["incident_id"] for i in second.get_json()] == ids[::-1][10:]
    assert client.get("/incident/get?page=5").get_json() == []
    by_cursor = client.get(f"/incident/get?cursor={ids[2]}")
    assert [i["incident_id"] for i in by_cursor.get_json()] == ids[1::-1]
    assert json.loads(by_cursor.headers["X-Pagination"])["next_cursor"] is None


def test_list_filters_by_status_and_source(client):
    report(client, incident_type="new", source="operator")
    failed_partner = report(client, incident_type="failed", source="partner").get_json()["incident_id"]
    report(client, incident_type="failed", source="monitoring")
    assert len(client.get("/incident/get?status=failed").get_json()) == 2
    assert len(client.get("/incident/get?source=operator").get_json()) == 1
    both = client.get("/incident/get?status=failed&source=partner")
    assert [i["incident_id"] for i in both.get_json()] == [failed_partner]


def test_filtered_totals_follow_creates_and_status_changes(client):
    report(client, incident_type="new", source="operator")
    second = report(client, incident_type="new", source="partner").get_json()["incident_id"]
    report(client, incident_type="failed", source="partner")

    def total(query):
        return json.loads(client.get(f"/incident/get?{query}").headers["X-Pagination"])["total"]

    assert (total(""), total("status=new"), total("source=partner"), total("status=new&source=partner")) == (3, 2, 2, 1)
    client.patch("/incident/update-status", query_string={"incident_id": second, "status": "completed"})
    assert (total(""), total("status=new"), total("status=completed&source=partner")) == (3, 1, 1)


def test_lists_are_cached_and_retired_by_create_and_status_change(app, client):
    report(client)
    wait_applied(app)  # else the relay's second application may retire the list read below
    assert client.get("/incident/get?status=new").headers["X-Cache-L2"] == "MISS"
    assert client.get("/incident/get?status=new").headers["X-Cache-L2"] == "HIT"
    incident_id = report(client).get_json()["incident_id"]
    listed = client.get("/incident/get?status=new")
    assert (listed.headers["X-Cache-L2"], len(listed.get_json())) == ("MISS", 2)
    client.patch("/incident/update-status", query_string={"incident_id": incident_id, "status": "failed"})
    assert len(client.get("/incident/get?status=new").get_json()) == 1
    assert len(client.get("/incident/get?status=failed").get_json()) == 1


@pytest.mark.parametrize(
    "field, value",
    [
        ("incident_message", "abcd"),
        ("incident_message", "   abcd   "),
        ("incident_message", "x" * 1001),
        ("incident_message", "NULL"),
        ("incident_message", " Test "),
        ("incident_message", "bad \x1b[31m escape"),
        ("incident_message", None),
        ("incident_type", "open"),
        ("incident_type", "NEW"),
        ("source", "customer"),
        ("source", ""),
    ],
)
def test_create_rejects_invalid_values(client, field, value):
    body = {"incident_message": "Valid message", "incident_type": "new", "source": "operator", field: value}
    assert_error(client.post("/incident/create", json=body), 422)
    assert client.get("/incident/get").get_json() == []


def test_create_accepts_multiline_messages(client):
    assert report(client, message="First line\nsecond line\twith a tab").status_code == 201


@pytest.mark.parametrize(
    "query",
    ["page=0", "page=-1", "page=x", "limit=0", "limit=101", "status=open", "source=customer", "page=2&cursor=5"],
)
def test_list_rejects_invalid_arguments(client, query):
    assert_error(client.get(f"/incident/get?{query}"), 422)


def test_missing_incidents_are_404(client):
    assert_error(client.get("/incident/get/999999"), 404)
    assert_error(client.get("/incident/get/99999999999999999999999"), 404)
    assert_error(client.patch("/incident/update-status", query_string={"incident_id": 999999, "status": "failed"}), 404)


@pytest.mark.parametrize(
    "query",
    [{}, {"incident_id": 1}, {"status": "failed"}, {"incident_id": "x", "status": "failed"},
     {"incident_id": 0, "status": "failed"}, {"incident_id": 10**20, "status": "failed"},
     {"incident_id": 1, "status": "closed"}],
)
def test_update_status_rejects_invalid_arguments(client, query):
    report(client)
    assert_error(client.patch("/incident/update-status", query_string=query), 422)
    assert client.get("/incident/get/1").get_json()["incident_type"] == "new"
