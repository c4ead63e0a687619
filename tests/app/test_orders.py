"""Accounts, tokens and orders: who may see and change what, and what the worker does."""

import json
import os
import subprocess
import sys
import time
import uuid
from datetime import timedelta

import jwt as pyjwt
import pytest
from flask_jwt_extended import create_access_token

from infra import db
from blueprints.orders import _Outage, process_order, sweep_unprocessed
from tests.app.conftest import wait_applied
from tests.support import ROOT
from tests.support.accounts import ORDER, bearer, new_account, place, register, token_for
from tests.support.bounds import UNPROMISED_WAIT
from tests.support.errors import assert_error
from tests.support.waiting import eventually


@pytest.fixture
def account(app):
    """An account: its id, email and headers with a fresh token."""
    return new_account(app)


@pytest.fixture
def other_account(app):
    return new_account(app)


# --- accounts and tokens ---

def test_register_returns_the_account_without_its_password(client):
    created = client.post("/api/user/register", json={"email": "new@example.com", "password": "long enough"})
    assert created.status_code == 201
    body = created.get_json()
    assert set(body) == {"id", "name", "email", "created_at"}
    assert (body["email"], body["name"]) == ("new@example.com", "new")
    assert "long enough" not in created.get_data(as_text=True)


@pytest.mark.parametrize(
    "body",
    [{"email": "x@example.com", "password": "short"}, {"email": "not-an-email", "password": "long enough"},
     {"email": "x@example.com"}, {"password": "long enough"}, {"email": "x@example.com", "password": "p" * 129}],
)
def test_register_rejects_invalid_accounts(client, body):
    assert_error(client.post("/api/user/register", json=body), 422)


def test_register_refuses_a_taken_email(client):
    register(client, email="alice@example.com")
    assert_error(client.post("/api/user/register", json={"email": "ALICE@example.com", "password": "long enough"}), 409)


def test_token_is_a_bearer_jwt_that_no_cache_keeps(client, app):
    created = register(client)
    response = client.post("/api/user/token/", data={"username": created["email"], "password": "correct horse"})
    assert response.status_code == 200
    assert response.get_json()["token_type"] == "bearer"
    assert response.headers["Cache-Control"] == "no-store"
    claims = pyjwt.decode(response.get_json()["access_token"], app.config["SECRET_KEY"], algorithms=["HS256"])
    assert claims["sub"] == str(created["id"])
    assert 29 * 60 <= claims["exp"] - claims["iat"] <= 30 * 60


def test_wrong_email_and_wrong_password_get_the_same_answer(client):
    created = register(client)
    wrong_password = client.post("/api/user/token/", data={"username": created["email"], "password": "wrong one"})
    unknown_email = client.post("/api/user/token/", data={"username": "nobody@example.com", "password": "wrong one"})
    no_password_set = client.post("/api/user/token/", data={"username": "alice@example.com", "password": "anything"})
    for response in (wrong_password, unknown_email, no_password_set):
        assert_error(response, 401)
        assert response.get_json()["message"] == "Wrong email or password."
        assert response.headers["WWW-Authenticate"] == "Bearer"


def test_token_wants_form_fields(client):
    assert_error(client.post("/api/user/token/", json={"username": "a@example.com", "password": "x"}), 422)


# --- orders ---

def test_place_read_change_and_list_orders(client, app, account):
    placed = place(client, account)
    assert placed.status_code == 201
    wait_applied(app)  # else the relay's second application may retire the read below
    order = placed.get_json()
    assert uuid.UUID(order["id"])
    assert order["user_id"] == account["id"]
    assert (order["status"], order["processed_at"], order["total_price"]) == ("PENDING", None, 24.98)
    assert order["items"] == ORDER["items"]

    read = client.get(f"/api/orders/{order['id']}/", headers=account["headers"])
    assert read.get_json() == order
    assert read.headers["Cache-Control"] == "private, no-store"
    assert client.get(f"/api/orders/{order['id']}/", headers=account["headers"]).headers["X-Cache-L2"] == "HIT"

    paid = client.patch(f"/api/orders/{order['id']}/", json={"status": "PAID"}, headers=account["headers"])
    assert (paid.status_code, paid.get_json()["status"]) == (200, "PAID")
    assert client.get(f"/api/orders/{order['id']}/", headers=account["headers"]).get_json()["status"] == "PAID"

    second = place(client, account).get_json()
    listed = client.get(f"/api/orders/user/{account['id']}/", headers=account["headers"])
    assert [o["id"] for o in listed.get_json()] == [second["id"], order["id"]]
    assert json.loads(listed.headers["X-Pagination"])["total"] == 2


@pytest.mark.parametrize(
    "order",
    [
        {"items": [], "total_price": 0},
        {"items": [{"name": "W", "quantity": 1, "price": 10}], "total_price": 11},
        {"items": [{"name": "W", "quantity": 0, "price": 10}], "total_price": 0},
        {"items": [{"name": "W", "quantity": 1.5, "price": 10}], "total_price": 15},
        {"items": [{"name": "W", "quantity": 1, "price": -1}], "total_price": -1},
        {"items": [{"name": "W", "quantity": 1, "price": 0.001}], "total_price": 0.001},
        {"items": [{"name": "W", "quantity": 1, "price": "NaN"}], "total_price": 0},
        {"items": [{"name": "", "quantity": 1, "price": 1}], "total_price": 1},
        {"items": [{"quantity": 1, "price": 1}], "total_price": 1},
        {"items": [{"name": "W", "quantity": 1, "price": 1}]},
        {"total_price": 1},
    ],
)
def test_invalid_orders_are_422_and_store_nothing(client, account, order):
    assert_error(place(client, account, order), 422)
    assert client.get(f"/api/orders/user/{account['id']}/", headers=account["headers"]).get_json() == []


def test_total_price_is_exact_to_the_cent(client, account):
    order = {"items": [{"name": "A", "quantity": 3, "price": 0.1}], "total_price": 0.3}
    assert place(client, account, order).status_code == 201


def test_orders_need_a_valid_token(client, app, account):
    order_id = place(client, account).get_json()["id"]
    with app.app_context():
        expired = create_access_token(identity=str(account["id"]), expires_delta=timedelta(seconds=-1))
    forged = pyjwt.encode({"sub": str(account["id"]), "exp": int(time.time()) + 600, "type": "access"},
                          "not-the-secret-but-just-as-long-as-one", algorithm="HS256")
    for headers in ({}, bearer("garbage"), bearer(expired), bearer(forged), {"Authorization": "Basic abc"}):
        assert_error(client.get(f"/api/orders/{order_id}/", headers=headers), 401)
        assert_error(client.post("/api/orders/", json=ORDER, headers=headers), 401)


def test_another_accounts_order_is_404_even_when_cached(client, account, other_account):
    order_id = place(client, account).get_json()["id"]
    # Cached once the relay has applied the insert too (it invalidates again).
    eventually(lambda: client.get(f"/api/orders/{order_id}/", headers=account["headers"]),
               lambda r: r.headers["X-Cache-L2"] == "HIT", seconds=UNPROMISED_WAIT)
    assert_error(client.get(f"/api/orders/{order_id}/", headers=other_account["headers"]), 404)
    assert_error(client.patch(f"/api/orders/{order_id}/", json={"status": "CANCELED"},
                              headers=other_account["headers"]), 404)
    assert client.get(f"/api/orders/{order_id}/", headers=account["headers"]).get_json()["status"] == "PENDING"


def test_listing_another_accounts_orders_is_403(client, account, other_account):
    assert_error(client.get(f"/api/orders/user/{account['id']}/", headers=other_account["headers"]), 403)


@pytest.mark.parametrize("order_id", ["not-a-uuid", "1234", "' OR 1=1 --"])
def test_malformed_order_ids_are_422(client, account, order_id):
    assert_error(client.get(f"/api/orders/{order_id}/", headers=account["headers"]), 422)


def test_unknown_order_is_404(client, account):
    assert_error(client.get(f"/api/orders/{uuid.uuid4()}/", headers=account["headers"]), 404)


@pytest.mark.parametrize("path", ["PAID", "CANCELED"])
def test_final_statuses_cannot_change(client, account, path):
    order_id = place(client, account).get_json()["id"]
    headers = account["headers"]
    if path == "PAID":
        client.patch(f"/api/orders/{order_id}/", json={"status": "PAID"}, headers=headers)
        client.patch(f"/api/orders/{order_id}/", json={"status": "SHIPPED"}, headers=headers)
        assert_error(client.patch(f"/api/orders/{order_id}/", json={"status": "CANCELED"}, headers=headers), 409)
    else:
        client.patch(f"/api/orders/{order_id}/", json={"status": "CANCELED"}, headers=headers)
        assert_error(client.patch(f"/api/orders/{order_id}/", json={"status": "PAID"}, headers=headers), 409)
    assert_error(client.patch(f"/api/orders/{order_id}/", json={"status": "LOST"}, headers=headers), 422)


# --- rate limits ---

def test_register_and_token_are_rate_limited(make_app):
    client = make_app(RATE_LIMIT_AUTH="2 per hour").test_client()
    for n in range(2):
        registered = client.post("/api/user/register", json={"email": f"r{n}@example.com", "password": "long enough"})
        assert registered.status_code == 201
    limited = client.post("/api/user/register", json={"email": "r9@example.com", "password": "long enough"})
    assert_error(limited, 429)
    assert int(limited.headers["Retry-After"]) > 0
    for _ in range(2):
        client.post("/api/user/token/", data={"username": "r0@example.com", "password": "long enough"})
    assert_error(client.post("/api/user/token/", data={"username": "r0@example.com", "password": "long enough"}), 429)


def test_order_endpoints_share_one_limit(make_app):
    client = make_app(RATE_LIMIT_ORDERS="3 per hour").test_client()
    created = register(client)
    headers = bearer(token_for(client, created["email"]))
    order_id = client.post("/api/orders/", json=ORDER, headers=headers).get_json()["id"]
    client.get(f"/api/orders/{order_id}/", headers=headers)
    client.get(f"/api/orders/user/{created['id']}/", headers=headers)
    assert_error(client.get(f"/api/orders/{order_id}/", headers=headers), 429)


# --- the worker ---

def start_worker(test_database_url, test_redis_url, tmp_path, state_redis_url=None):
    """A Celery worker; ``state_redis_url``: its queue and limits, else ``test_redis_url``."""
    state = state_redis_url or test_redis_url
    env = {**os.environ, "DATABASE_URL": test_database_url, "REDIS_URL": test_redis_url,
           "RATE_LIMIT_STORAGE_URL": state, "QUEUE_REDIS_URL": state}
    log = open(tmp_path / "worker.log", "w")
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "worker", "worker", "-Q", "orders", "--pool", "solo",
         "--loglevel", "INFO", "--without-mingle", "--without-gossip"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )


def wait_processed(client, account, order_id):
    """The order once a worker has processed it (the product promises no time for that)."""
    return eventually(lambda: client.get(f"/api/orders/{order_id}/", headers=account["headers"]).get_json(),
                      lambda order: order["processed_at"] is not None, seconds=UNPROMISED_WAIT, step=0.2).value


@pytest.fixture
def worker(test_database_url, test_redis_url, tmp_path):
    process = start_worker(test_database_url, test_redis_url, tmp_path)
    yield process
    process.terminate()
    process.wait(UNPROMISED_WAIT)


def test_a_real_worker_processes_new_orders(client, account, worker):
    placed = place(client, account).get_json()
    client.get(f"/api/orders/{placed['id']}/", headers=account["headers"])  # cache it unprocessed
    processed = wait_processed(client, account, placed["id"])
    assert processed["status"] == "PENDING"
    assert processed["created_at"] <= processed["processed_at"]


def test_orders_queued_while_the_broker_was_down_are_swept_up(make_app, test_database_url, test_redis_url, tmp_path):
    offline = make_app(QUEUE_REDIS_URL=f"unix://{tmp_path}/nothing.sock").test_client()
    created = register(offline)
    account = {**created, "headers": bearer(token_for(offline, created["email"]))}
    placed = offline.post("/api/orders/", json=ORDER, headers=account["headers"])
    assert placed.status_code == 201  # the order is safe in PostgreSQL all the same
    process = start_worker(test_database_url, test_redis_url, tmp_path)
    try:
        wait_processed(offline, account, placed.get_json()["id"])
    finally:
        process.terminate()
        process.wait(UNPROMISED_WAIT)


def test_processing_twice_changes_nothing(app, client, account):
    order_id = place(client, account).get_json()["id"]
    with app.app_context():
        assert process_order.run(order_id) == "processed"
        first = db.fetch_one("SELECT processed_at FROM orders WHERE id = %s", (order_id,))["processed_at"]
        assert process_order.run(order_id) == "already processed"
        again = db.fetch_one("SELECT processed_at FROM orders WHERE id = %s", (order_id,))["processed_at"]
    assert first == again


def test_an_outage_is_one_warning_and_its_end_one_line(make_app, capsys):
    _Outage.down = False
    # Nothing listens on port 1: every connection is refused at once.
    down = make_app(DATABASE_URL="postgresql://api@127.0.0.1:1/app", DB_CONNECT_TIMEOUT=1)
    up = make_app()
    capsys.readouterr()
    for _ in range(3):
        with down.app_context():
            assert sweep_unprocessed.run(0) == 0
    with up.app_context():
        sweep_unprocessed.run(10**6)  # orders older than that: none
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    lines = [line for line in lines if line["logger"] == "blueprints.orders"]
    assert [(line["level"], line["message"].split(",")[0]) for line in lines] == [
        ("WARNING", "orders sweep: PostgreSQL is unavailable"), ("INFO", "orders sweep: PostgreSQL answers again")]
    assert not any("exception" in line for line in lines)
