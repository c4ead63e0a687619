"""Accounts and orders as tests need them, through either client: the
stack's (``tests.support.http.Client``, through nginx) or Flask's test client
(the app in-process)."""

import functools
import uuid

from werkzeug.security import generate_password_hash

from infra import db
from blueprints.accounts import access_token
from tests.support.http import Client

PASSWORD = "correct horse"
# An order as a client places it: two lines, the total to the cent.
ORDER = {"items": [{"name": "Widget", "quantity": 2, "price": 9.99}, {"name": "Gadget", "quantity": 1, "price": 5}],
         "total_price": 24.98}


def new_email(tag="user"):
    """An address no other account of any run has."""
    return f"{tag}-{uuid.uuid4().hex[:8]}@example.com"


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def _post(client, path, body=None, form=None):
    """(status, JSON body) of a POST through either client."""
    if isinstance(client, Client):
        reply = client.request("POST", path, body, form=form)
        return reply.status, reply.json() if reply.body else None
    response = client.post(path, json=body, data=form)
    return response.status_code, response.get_json()


def register(client, email=None, password=PASSWORD):
    """A new account, as POST /api/user/register answers it."""
    status, body = _post(client, "/api/user/register", {"email": email or new_email(), "password": password})
    assert status == 201, (status, body)
    return body


def token_for(client, email, password=PASSWORD):
    """The bearer token the sign-in endpoint gives."""
    status, body = _post(client, "/api/user/token/", form={"username": email, "password": password})
    assert status == 200, (status, body)
    return body["access_token"]


def signed_up(client, tag="user", password=PASSWORD):
    """A new account, registered and signed in: its id, email and headers with a bearer token."""
    created = register(client, new_email(tag), password)
    return {"id": created["id"], "email": created["email"],
            "headers": bearer(token_for(client, created["email"], password))}


@functools.cache
def password_hash(password):
    return generate_password_hash(password)


def new_account(app, password=PASSWORD):
    """What ``signed_up`` gives, written directly: each scrypt costs a good
    part of a second, which only the tests of register and sign-in need to pay."""
    email = new_email()
    with app.app_context():
        created = db.write_one(
            "INSERT INTO accounts (name, email, password_hash) VALUES (%s, %s, %s) RETURNING id, email, token_version",
            (email.split("@")[0], email, password_hash(password)))
        return {"id": created["id"], "email": email, "headers": bearer(access_token(created))}


def place(client, account, order=ORDER):
    """POST /api/orders/ as ``account`` (its headers): the client's own answer."""
    if isinstance(client, Client):
        return client.request("POST", "/api/orders/", order, headers=account["headers"])
    return client.post("/api/orders/", json=order, headers=account["headers"])
