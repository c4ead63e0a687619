"""Accounts live apart from the public users CRUD: only their owner reads,
changes or deletes one, and a token outlives neither a new password or email
nor the account itself."""

import time

import jwt as pyjwt
import pytest

from tests.support.accounts import ORDER, bearer, place, register, token_for
from tests.support.errors import assert_error

ME = "/api/user/me"


def signed(app, claims):
    """A token signed with the app's own key: what a forgery could never be, so
    only the claims decide."""
    now = int(time.time())
    return pyjwt.encode({"iat": now, "nbf": now, "type": "access", "fresh": False, "jti": "t", **claims},
                        app.config["SECRET_KEY"], algorithm="HS256")


# --- the public users API cannot reach an account ---

def test_an_account_is_not_a_public_user(client):
    created = register(client, email="owner@example.com")
    # Ids are the two tables' own: the same number may be some public user.
    shown = client.get(f"/users/{created['id']}")
    assert shown.status_code == 404 or shown.get_json()["email"] != "owner@example.com"
    listed = client.get("/users?page_size=1000").get_json()
    assert "owner@example.com" not in {user["email"] for user in listed}


def test_anonymous_users_writes_leave_accounts_alone(client):
    created = register(client, email="owner@example.com")
    # What used to lock the owner out or delete the account:
    client.put(f"/users/{created['id']}", json={"email": "attacker@example.com"})
    client.delete(f"/users/{created['id']}")
    assert client.post("/users", json={"name": "Squatter", "email": "taken-later@example.com"}).status_code == 201
    assert token_for(client, "owner@example.com")
    # A public user's email does not block anyone's registration.
    assert register(client, email="taken-later@example.com")["email"] == "taken-later@example.com"


# --- /api/user/me: the owner alone ---

def test_me_shows_the_owners_account_and_nothing_to_anyone_else(client):
    created = register(client, email="me@example.com")
    token = token_for(client, "me@example.com")
    mine = client.get(ME, headers=bearer(token))
    assert mine.status_code == 200
    assert mine.get_json() == {"id": created["id"], "name": "me", "email": "me@example.com",
                               "created_at": created["created_at"]}
    assert mine.headers["Cache-Control"] == "private, no-store"
    for method in ("get", "patch", "delete"):
        assert_error(getattr(client, method)(ME, json={}), 401)


def test_the_owner_changes_the_name_with_the_token_alone(client):
    register(client, email="me@example.com")
    headers = bearer(token_for(client, "me@example.com"))
    changed = client.patch(ME, json={"name": "New Name"}, headers=headers)
    assert (changed.status_code, changed.get_json()["name"]) == (200, "New Name")
    assert client.get(ME, headers=headers).get_json()["name"] == "New Name"


@pytest.mark.parametrize("change", [{"email": "new@example.com"}, {"password": "a new password"}])
def test_email_and_password_changes_need_the_current_password(client, change):
    register(client, email="me@example.com")
    headers = bearer(token_for(client, "me@example.com"))
    assert_error(client.patch(ME, json=change, headers=headers), 422)
    assert_error(client.patch(ME, json={**change, "current_password": "wrong password"}, headers=headers), 403)
    assert client.get(ME, headers=headers).get_json()["email"] == "me@example.com"
    assert token_for(client, "me@example.com")


def test_a_new_password_refuses_every_older_token(client):
    register(client, email="me@example.com")
    old = bearer(token_for(client, "me@example.com"))
    changed = client.patch(ME, json={"password": "a new password", "current_password": "correct horse"}, headers=old)
    assert changed.status_code == 200
    assert_error(client.get(ME, headers=old), 401)
    assert_error(place(client, {"headers": old}), 401)
    assert_error(client.post("/api/user/token/", data={"username": "me@example.com", "password": "correct horse"}), 401)
    new = bearer(token_for(client, "me@example.com", password="a new password"))
    assert client.get(ME, headers=new).status_code == 200


def test_a_new_email_is_the_new_sign_in_and_refuses_older_tokens(client):
    register(client, email="me@example.com")
    old = bearer(token_for(client, "me@example.com"))
    changed = client.patch(ME, json={"email": "moved@example.com", "current_password": "correct horse"}, headers=old)
    assert (changed.status_code, changed.get_json()["email"]) == (200, "moved@example.com")
    assert_error(client.get(ME, headers=old), 401)
    assert token_for(client, "moved@example.com")
    assert_error(client.post("/api/user/token/", data={"username": "me@example.com", "password": "correct horse"}), 401)


def test_an_email_taken_by_another_account_is_409(client):
    register(client, email="me@example.com")
    register(client, email="other@example.com")
    headers = bearer(token_for(client, "me@example.com"))
    assert_error(client.patch(ME, json={"email": "OTHER@example.com", "current_password": "correct horse"},
                              headers=headers), 409)


def test_deleting_the_account_takes_its_orders_and_its_tokens(client):
    created = register(client, email="me@example.com")
    headers = bearer(token_for(client, "me@example.com"))
    order = place(client, {"headers": headers}).get_json()
    assert_error(client.delete(ME, json={"current_password": "wrong password"}, headers=headers), 403)
    assert_error(client.delete(ME, headers=headers), 415)  # no body at all: "send JSON"
    assert_error(client.delete(ME, json={}, headers=headers), 422)
    deleted = client.delete(ME, json={"current_password": "correct horse"}, headers=headers)
    assert deleted.status_code == 200
    for reply in (client.get(ME, headers=headers), client.get(f"/api/orders/{order['id']}/", headers=headers),
                  client.post("/api/orders/", json=ORDER, headers=headers)):
        assert_error(reply, 401)
    assert_error(client.post("/api/user/token/", data={"username": "me@example.com", "password": "correct horse"}), 401)
    # The address is free again.
    assert register(client, email="me@example.com")["id"] != created["id"]


# --- tokens the app signed but must not honour ---

@pytest.mark.parametrize(
    "claims",
    [
        lambda account, exp: {"sub": "abc", "exp": exp, "ver": 0},  # not an account id: was a 500
        lambda account, exp: {"sub": "9" * 30, "exp": exp, "ver": 0},  # beyond any id
        lambda account, exp: {"sub": str(account), "ver": 0},  # no exp: would never expire
        lambda account, exp: {"sub": str(account), "exp": exp},  # issued before token versions
    ],
    ids=["sub-not-a-number", "sub-too-large", "no-exp", "no-version"],
)
def test_tokens_the_app_signed_without_a_valid_account_expiry_or_version_are_401(client, app, claims):
    account = register(client, email="me@example.com")["id"]
    token = bearer(signed(app, claims(account, int(time.time()) + 600)))
    assert_error(client.get(ME, headers=token), 401)
    assert_error(place(client, {"headers": token}), 401)
    valid = bearer(signed(app, {"sub": str(account), "exp": int(time.time()) + 600, "ver": 0}))
    assert client.get(ME, headers=valid).status_code == 200


# --- input that used to end in a 500 or be stored as sent ---

def test_a_lone_surrogate_in_a_password_is_a_400(client):
    body = '{"email": "s@example.com", "password": "long enough \\ud800"}'
    assert_error(client.post("/api/user/register", data=body, content_type="application/json"), 400)


def test_an_integer_too_long_for_python_is_a_400(client):
    body = '{"name": "N", "email": "n@example.com", "extra": ' + "9" * 5000 + "}"
    assert_error(client.post("/users", data=body, content_type="application/json"), 400)


@pytest.mark.parametrize("path", ["/users", "/api/user/register"])
def test_control_characters_in_an_email_are_refused(client, path):
    # A quoted local part lets RFC 5322 carry almost any byte; marshmallow accepts it.
    body = {"name": "Esc", "email": "\"esc\x1b[31m\"@example.com"}
    if path != "/users":
        body["password"] = "long enough"
    assert_error(client.post(path, json=body), 422)
