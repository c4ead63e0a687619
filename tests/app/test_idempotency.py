"""Idempotency-Key on the POSTs that create (infra/idempotency.py): a retry gets
the first answer and creates nothing; the key and the write are kept or lost
together, a switch of primary included."""

import threading
import uuid
from datetime import timedelta

import pytest

from infra import db, tasks
from infra.idempotency import LOCK_CLASS, purge_expired
from tests.support.accounts import ORDER, new_account
from tests.support.bounds import UNPROMISED_WAIT
from tests.support.errors import assert_error

# Every POST that creates, with a body it accepts and the table it writes.
CREATES = {
    "users": ("/users", {"name": "Dana", "email": "dana@example.com"}, "users"),
    "addresses": ("/addr_by_phone", {"phone": "+44 7911 123456", "address": "221B Baker Street, London"},
                  "customer_addresses"),
    "incidents": ("/incident/create", {"incident_message": "Disk full on db-1", "incident_type": "new",
                                       "source": "monitoring"}, "incidents"),
    "accounts": ("/api/user/register", {"email": "dana@example.com", "password": "long enough"}, "accounts"),
}
SEED_USERS = 3


def key():
    return str(uuid.uuid4())


def with_key(value, headers=None):
    return {**(headers or {}), "Idempotency-Key": value}


def rows(owner_connection, table):
    with owner_connection, owner_connection.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {table}")
        return cur.fetchone()[0]


def stored_keys(owner_connection):
    return rows(owner_connection, "idempotency_keys")


@pytest.fixture
def account(app):
    return new_account(app)


@pytest.mark.parametrize("route", CREATES)
def test_a_retry_gets_the_first_answer_and_creates_nothing(client, owner_connection, route):
    path, body, table = CREATES[route]
    before, sent = rows(owner_connection, table), key()
    first = client.post(path, json=body, headers=with_key(sent))
    assert first.status_code == 201, first.get_json()
    assert "Idempotent-Replayed" not in first.headers

    again = client.post(path, json=body, headers=with_key(sent))
    assert again.status_code == 201
    assert again.get_data() == first.get_data()
    assert again.headers["Content-Type"] == first.headers["Content-Type"]
    assert again.headers.get("Location") == first.headers.get("Location")
    assert again.headers["Idempotent-Replayed"] == "true"
    assert rows(owner_connection, table) == before + 1


def test_an_order_retried_is_one_order_answered_twice_alike(client, account, owner_connection):
    sent = key()
    first = client.post("/api/orders/", json=ORDER, headers=with_key(sent, account["headers"]))
    again = client.post("/api/orders/", json=ORDER, headers=with_key(sent, account["headers"]))
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.get_json() == first.get_json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Cache-Control"] == "private, no-store"  # as authenticated as the first
    assert rows(owner_connection, "orders") == 1


def test_without_a_key_each_post_creates(client, owner_connection):
    for email in ("dana@example.com", "erin@example.com"):
        assert client.post("/users", json={"name": "Dana", "email": email}).status_code == 201
    assert rows(owner_connection, "users") == SEED_USERS + 2
    assert stored_keys(owner_connection) == 0


def test_the_same_key_with_another_body_is_a_422_and_creates_nothing(client, owner_connection):
    sent = key()
    assert client.post("/users", json={"name": "Dana", "email": "dana@example.com"},
                       headers=with_key(sent)).status_code == 201
    other = client.post("/users", json={"name": "Erin", "email": "erin@example.com"}, headers=with_key(sent))
    assert_error(other, 422)
    assert "Idempotency-Key" in other.get_json()["errors"]["headers"]
    assert rows(owner_connection, "users") == SEED_USERS + 1


def test_a_body_that_parses_alike_is_the_same_request(client, owner_connection):
    sent = key()
    first = client.post("/users", data='{"name": "Dana", "email": "dana@example.com"}',
                        content_type="application/json", headers=with_key(sent))
    again = client.post("/users", data='{"email":"dana@example.com","name":"  Dana "}',
                        content_type="application/json", headers=with_key(sent))
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_data() == first.get_data()


def test_an_accounts_key_sent_to_another_route_is_a_422(client, account):
    """An account's keys are one namespace over its routes: the key names one request."""
    sent = key()
    assert client.post("/api/orders/", json=ORDER, headers=with_key(sent, account["headers"])).status_code == 201
    order = {"items": [{"name": "Widget", "quantity": 1, "price": 1}], "total_price": 1}
    assert_error(client.post("/api/orders/", json=order, headers=with_key(sent, account["headers"])), 422)


def test_two_accounts_keys_never_collide(client, app, owner_connection):
    first, second = new_account(app), new_account(app)
    sent = key()
    one = client.post("/api/orders/", json=ORDER, headers=with_key(sent, first["headers"]))
    other_order = {"items": [{"name": "Gadget", "quantity": 3, "price": 2}], "total_price": 6}
    two = client.post("/api/orders/", json=other_order, headers=with_key(sent, second["headers"]))
    assert (one.status_code, two.status_code) == (201, 201)
    assert "Idempotent-Replayed" not in two.headers
    assert (one.get_json()["user_id"], two.get_json()["user_id"]) == (first["id"], second["id"])
    assert rows(owner_connection, "orders") == 2
    # Each replays its own.
    assert client.post("/api/orders/", json=ORDER, headers=with_key(sent, first["headers"])).get_json() == one.get_json()


def test_anonymous_keys_are_per_route(client, owner_connection):
    """Anonymous clients have nothing to tell them apart: a key is scoped to
    its route, so that one client's key on one route never blocks another's elsewhere."""
    sent = key()
    path, body, _ = CREATES["incidents"]
    assert client.post("/users", json={"name": "Dana", "email": "dana@example.com"},
                       headers=with_key(sent)).status_code == 201
    made = client.post(path, json=body, headers=with_key(sent))
    assert made.status_code == 201 and "Idempotent-Replayed" not in made.headers
    assert rows(owner_connection, "incidents") == 1


@pytest.mark.parametrize("bad", ["", "two words", "x" * 256, "caf\u00e9", "tab\there"])
def test_a_malformed_key_is_a_422_and_creates_nothing(client, owner_connection, bad):
    response = client.post("/users", json={"name": "Dana", "email": "dana@example.com"}, headers=with_key(bad))
    assert_error(response, 422)
    assert "Idempotency-Key" in response.get_json()["errors"]["headers"]
    assert rows(owner_connection, "users") == SEED_USERS
    assert stored_keys(owner_connection) == 0


def test_the_longest_key_and_every_visible_character_are_taken(client):
    for sent in ("k" * 255, "".join(chr(c) for c in range(0x21, 0x7F))):
        assert client.post("/incident/create", json=CREATES["incidents"][1], headers=with_key(sent)).status_code == 201


def test_an_error_leaves_the_key_free(client, owner_connection):
    sent = key()
    taken = client.post("/users", json={"name": "Al", "email": "alice@example.com"}, headers=with_key(sent))
    assert_error(taken, 409)  # the email is taken: nothing kept
    assert stored_keys(owner_connection) == 0
    retried = client.post("/users", json={"name": "Al", "email": "al@example.com"}, headers=with_key(sent))
    assert retried.status_code == 201 and "Idempotent-Replayed" not in retried.headers


def test_a_key_in_flight_is_a_409_with_retry_after_and_creates_nothing(client, owner_connection):
    """The lock a running request with that key holds, held here instead: no timing involved."""
    sent, body = key(), {"name": "Dana", "email": "dana@example.com"}
    with owner_connection.cursor() as cur:  # a transaction of its own until the commit below
        cur.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (LOCK_CLASS, f"POST /users\n{sent}"))
        busy = client.post("/users", json=body, headers=with_key(sent))
        assert_error(busy, 409)
        assert busy.headers["Retry-After"] == "1"
        assert rows(owner_connection, "users") == SEED_USERS  # commits, and so releases the lock
    assert client.post("/users", json=body, headers=with_key(sent)).status_code == 201


def test_the_same_key_sent_twice_at_once_creates_one_order(app, account, owner_connection):
    rounds = 5
    for _ in range(rounds):
        sent, start, answers = key(), threading.Barrier(2), []

        def send():
            client = app.test_client()
            start.wait(UNPROMISED_WAIT)
            answers.append(client.post("/api/orders/", json=ORDER, headers=with_key(sent, account["headers"])))

        threads = [threading.Thread(target=send) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(UNPROMISED_WAIT)
        # Whichever came second: replayed if the first had committed, 409 if it still ran.
        statuses = sorted((a.status_code, a.headers.get("Idempotent-Replayed", "")) for a in answers)
        assert statuses in ([(201, ""), (201, "true")], [(201, ""), (409, "")]), statuses
        created = [a.get_json() for a in answers if a.status_code == 201]
        assert all(body == created[0] for body in created)
    assert rows(owner_connection, "orders") == rounds


def test_an_order_is_queued_for_the_worker_only_once_committed(client, account, owner_connection, monkeypatch):
    """Queued earlier, the worker could look for the order before it exists."""
    seen = []
    send = tasks.send

    def send_and_look(name, *args):
        seen.append(rows(owner_connection, "orders"))
        return send(name, *args)

    monkeypatch.setattr(tasks, "send", send_and_look)
    assert client.post("/api/orders/", json=ORDER, headers=with_key(key(), account["headers"])).status_code == 201
    assert seen == [1]


def age(owner_connection, seconds):
    """Makes every stored key ``seconds`` older."""
    with owner_connection, owner_connection.cursor() as cur:
        cur.execute("UPDATE idempotency_keys SET created_at = created_at - %s", (timedelta(seconds=seconds),))


def test_an_expired_key_is_a_new_request(client, app, owner_connection):
    sent = key()
    client.post("/users", json={"name": "Dana", "email": "dana@example.com"}, headers=with_key(sent))
    age(owner_connection, app.config["IDEMPOTENCY_KEY_TTL"])
    fresh = client.post("/users", json={"name": "Erin", "email": "erin@example.com"}, headers=with_key(sent))
    assert fresh.status_code == 201 and "Idempotent-Replayed" not in fresh.headers
    # And that answer is the key's now.
    again = client.post("/users", json={"name": "Erin", "email": "erin@example.com"}, headers=with_key(sent))
    assert again.headers["Idempotent-Replayed"] == "true"
    assert rows(owner_connection, "users") == SEED_USERS + 2


def test_the_purge_deletes_expired_keys_and_keeps_live_ones(client, app, owner_connection):
    ttl = app.config["IDEMPOTENCY_KEY_TTL"]
    for name in ("Old One", "Old Two"):
        client.post("/incident/create", json={**CREATES["incidents"][1], "incident_message": name},
                    headers=with_key(key()))
    age(owner_connection, ttl)
    live = key()
    client.post("/incident/create", json=CREATES["incidents"][1], headers=with_key(live))
    with app.app_context():
        assert purge_expired.run() == 2
        assert purge_expired.run() == 0
        assert db.fetch_all("SELECT key FROM idempotency_keys") == [{"key": live}]


def test_a_write_refused_by_a_read_only_server_keeps_no_key(make_app, read_only, owner_connection):
    """A switch of primary: the write and its key are refused together (503),
    and the retry, once a primary takes writes, is a first request."""
    sent, body = key(), {"name": "Dana", "email": "dana@example.com"}
    read_only(True)
    client = make_app(CACHE_ENABLED=False).test_client()
    refused = client.post("/users", json=body, headers=with_key(sent))
    assert_error(refused, 503)
    assert refused.headers["Retry-After"] == "1"
    assert (rows(owner_connection, "users"), stored_keys(owner_connection)) == (SEED_USERS, 0)

    read_only(False)
    created = client.post("/users", json=body, headers=with_key(sent))
    assert created.status_code == 201 and "Idempotent-Replayed" not in created.headers

    # A retry that reaches a read-only server after the commit still gets its answer: a lookup writes nothing.
    read_only(True)
    replayed = make_app(CACHE_ENABLED=False).test_client().post("/users", json=body, headers=with_key(sent))
    assert (replayed.status_code, replayed.headers["Idempotent-Replayed"]) == (201, "true")
    assert replayed.get_data() == created.get_data()
