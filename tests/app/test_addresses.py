"""Phone -> address book: one path, four methods, numbers normalised to RFC 3966."""

import pytest

from tests.app.conftest import wait_applied
from tests.support.errors import assert_error

PATH = "/addr_by_phone"
ADDRESS = "221B Baker Street, London"


def add(client, phone="+447911123456", address=ADDRESS):
    return client.post(PATH, json={"phone": phone, "address": address})


def test_create_read_update_delete(client):
    created = add(client)
    assert created.status_code == 201
    assert created.get_json() == {
        "detail": "Created",
        "customer_addr": {"phone": "tel:+44-7911-123456", "address": ADDRESS},
    }

    read = client.get(PATH, query_string={"phone": "+447911123456"})
    assert read.status_code == 200
    assert read.get_json() == {"phone": "tel:+44-7911-123456", "address": ADDRESS}

    updated = client.put(PATH, json={"phone": "tel:+44-7911-123456", "address": "10 Downing Street, London"})
    assert updated.status_code == 200
    assert updated.get_json() == {
        "detail": "Updated",
        "customer_addr": {"phone": "tel:+44-7911-123456", "address": "10 Downing Street, London"},
    }
    assert client.get(PATH, query_string={"phone": "+44 7911 123456"}).get_json()["address"] == "10 Downing Street, London"

    deleted = client.delete(PATH, query_string={"phone": "+447911123456"})
    assert (deleted.status_code, deleted.data) == (204, b"")
    assert_error(client.get(PATH, query_string={"phone": "+447911123456"}), 404)


@pytest.mark.parametrize("spelling", ["+447911123456", "+44 7911 123456", "tel:+44-7911-123456", "+44 (0)7911 123456"])
def test_every_spelling_of_a_number_is_one_record(client, spelling):
    assert add(client).status_code == 201
    assert client.get(PATH, query_string={"phone": spelling}).get_json()["phone"] == "tel:+44-7911-123456"
    assert_error(add(client, phone=spelling), 409)


def test_an_unencoded_plus_in_the_query_string_still_works(client):
    add(client)
    assert client.get(f"{PATH}?phone=+447911123456").status_code == 200


@pytest.mark.parametrize("phone", ["447911123456", "+1234", "+44 7911", "hello", "", "+" + "1" * 70, "tel:"])
def test_invalid_numbers_are_422(client, phone):
    assert_error(client.get(PATH, query_string={"phone": phone}), 422)
    assert_error(add(client, phone=phone), 422)
    assert_error(client.delete(PATH, query_string={"phone": phone}), 422)


@pytest.mark.parametrize("address", ["too short", "x" * 256, "", None, "Line one\x00 and more"])
def test_invalid_addresses_are_422_and_store_nothing(client, address):
    assert_error(add(client, address=address), 422)
    assert_error(client.get(PATH, query_string={"phone": "+447911123456"}), 404)


def test_missing_phone_is_422(client):
    assert_error(client.get(PATH), 422)
    assert_error(client.delete(PATH), 422)


def test_update_and_delete_of_an_unknown_number_are_404(client):
    assert_error(client.put(PATH, json={"phone": "+447911123456", "address": ADDRESS}), 404)
    assert_error(client.delete(PATH, query_string={"phone": "+447911123456"}), 404)


def test_body_must_be_json(client):
    assert_error(client.post(PATH, data="phone=+447911123456"), 415)
    assert_error(client.post(PATH, data="{", content_type="application/json"), 400)


def test_reads_are_cached_and_writes_invalidate(app, client):
    add(client)
    wait_applied(app)  # else the relay's second application may retire the value read below
    query = {"phone": "+447911123456"}
    assert client.get(PATH, query_string=query).headers["X-Cache-L2"] == "MISS"
    assert client.get(PATH, query_string={"phone": "tel:+44-7911-123456"}).headers["X-Cache-L2"] == "HIT"
    client.put(PATH, json={"phone": "+447911123456", "address": "Another address, 1"})
    after = client.get(PATH, query_string=query)
    assert (after.headers["X-Cache-L2"], after.get_json()["address"]) == ("MISS", "Another address, 1")
    client.delete(PATH, query_string=query)
    assert client.get(PATH, query_string=query).status_code == 404


def test_the_path_comes_from_endpoint_prefix(make_app):
    client = make_app(ENDPOINT_PREFIX="/phones").test_client()
    assert client.post("/phones", json={"phone": "+447911123456", "address": ADDRESS}).status_code == 201
    assert client.get("/phones", query_string={"phone": "+447911123456"}).status_code == 200
