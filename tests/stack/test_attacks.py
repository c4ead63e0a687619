"""Hostile requests through nginx, as an attacker sends them: whoever answers
(nginx, gunicorn or the app), the answer is the API's JSON, never a 5xx, an
HTML page or a version number, and the public users API cannot touch an
account."""

import json
import os
import random
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg2
import pytest

from tests.support.accounts import bearer, new_email, register, signed_up, token_for
from tests.support.http import FRESH
from tests.support.reporting import report

# Answers with no body by definition.
BODILESS = {100, 204, 304}
# The 5xx a client can cause, HTTP's own answers to what nginx does not
# implement (RFC 9112): a transfer coding other than chunked (501) and an
# HTTP version other than 1.x (505). No failure of the server.
NOT_IMPLEMENTED = {501, 505}


def raw_request(nginx, line, headers=(), body=b""):
    """One request as bytes on its own connection: shapes no HTTP client would send."""
    head = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    return nginx.raw(line + b"\r\nHost: api\r\nConnection: close\r\n" + head + b"\r\n" + body)


def answers(received):
    """Each response in ``received`` (a 100 Continue comes before the real one): (status, headers, body)."""
    found = []
    while received:
        head, _, rest = received.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ")[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines[1:])}
        length = int(headers.get(b"content-length", b"0"))
        found.append((status, headers, rest[:length]))
        received = rest[length:]
    return found


def assert_api_answer(received, shape, method=b"GET"):
    assert received, f"{shape}: the connection closed with no answer"
    for status, headers, body in answers(received):
        assert status < 500 or status in NOT_IMPLEMENTED, f"{shape}: {status} {body[:200]!r}"
        assert headers.get(b"server", b"nginx") == b"nginx", f"{shape}: Server {headers[b'server']!r}"
        if status in BODILESS or method == b"HEAD":
            continue
        assert headers.get(b"content-type", b"").startswith(b"application/json"), f"{shape}: {status} {body[:200]!r}"
        parsed = json.loads(body)
        if status >= 400:
            assert parsed["code"] == status and isinstance(parsed["message" if "message" in parsed else "status"], str)
        assert b"<html" not in body.lower() and b"Traceback" not in body


# Every shape an earlier release answered with HTML, a 5xx or a version.
KNOWN_SHAPES = {
    "X-Forwarded-Ssl (gunicorn: contradictory scheme headers)": (b"POST /users HTTP/1.1", [
        (b"X-Forwarded-Ssl", b"on"), (b"Content-Type", b"application/json"), (b"Content-Length", b"2")], b"{}"),
    "X-Forwarded-Protocol": (b"GET /users?shape=1 HTTP/1.1", [(b"X-Forwarded-Protocol", b"ssl")], b""),
    "If-Match on a cached item (nginx 412)": (b"GET /users/1 HTTP/1.1", [(b"If-Match", b'"abc"')], b""),
    "If-Unmodified-Since (nginx 412)": (b"GET /openapi.json HTTP/1.1", [
        (b"If-Unmodified-Since", b"Mon, 01 Jan 2001 00:00:00 GMT")], b""),
    "request line past gunicorn's limit": (b"GET /users?x=" + b"a" * 5000 + b" HTTP/1.1", [], b""),
    "more headers than gunicorn takes": (b"GET /users?shape=2 HTTP/1.1", [(b"X-%d" % i, b"a") for i in range(150)], b""),
    "control byte in a header value": (b"GET /users?shape=3 HTTP/1.1", [(b"X-Forwarded-Host", b"evil\x01")], b""),
    "OPTIONS (Flask: empty text/html)": (b"OPTIONS /users/1 HTTP/1.1", [], b""),
}


@pytest.mark.parametrize("shape", KNOWN_SHAPES)
def test_known_shapes_get_the_apis_json(nginx, shape):
    line, headers, body = KNOWN_SHAPES[shape]
    raw_request(nginx, b"GET /users/1 HTTP/1.1")  # L1 holds the item, so nginx itself answers it
    assert_api_answer(raw_request(nginx, line, headers, body), shape, line.split(b" ")[0])


def test_the_server_header_names_no_version(send):
    assert send("GET", "/users/1").headers["Server"] == "nginx"
    assert send("GET", "/nowhere").headers["Server"] == "nginx"


# /users/{own}: the fuzz's own user, whatever PUT or DELETE does to it.
PATHS = [b"/users/{own}", b"/users", b"/users?page_size=2", b"/incident", b"/openapi.json", b"/health", b"/nowhere",
         b"/api/user/me", b"/api/orders/", b"/customer-addresses/tel:+1-202-555-0187"]
METHODS = [b"GET", b"HEAD", b"POST", b"PUT", b"PATCH", b"DELETE", b"OPTIONS", b"TRACE", b"PROPFIND", b"get", b"G\xe9T"]
HEADER_NAMES = [b"If-Match", b"If-None-Match", b"If-Modified-Since", b"If-Unmodified-Since", b"If-Range", b"Range",
                b"X-Forwarded-For", b"X-Forwarded-Proto", b"X-Forwarded-Ssl", b"X-Forwarded-Protocol",
                b"X-Forwarded-Host", b"X-Forwarded-Port", b"Forwarded", b"X-Real-IP", b"X-Request-ID", b"Cache-Control",
                b"Pragma", b"Authorization", b"Cookie", b"Accept", b"Accept-Encoding", b"Content-Type", b"Expect",
                b"Upgrade", b"TE", b"Transfer-Encoding", b"Content-Length", b"X-HTTP-Method-Override", b"Host",
                b"X_Under_Score", b"X-" + b"N" * 300]
HEADER_VALUES = [b"", b"*", b'"x"', b"W/\"x\"", b"on", b"ssl", b"https", b"bytes=0-1", b"bytes=99999-", b"bytes=0-1,3-4",
                 b"bytes=-0", b"no-cache", b"no-store", b"max-age=0", b"Bearer x", b"Bearer " + b"A" * 2000,
                 b"Mon, 01 Jan 2001 00:00:00 GMT", b"Thu, 01 Jan 2099 00:00:00 GMT", b"garbage", b"-1", b"99999999999",
                 b"chunked", b"gzip", b"100-continue", b"websocket", b"a\x01b", b"a\x7fb", b"\xff\xfe", b"caf\xc3\xa9",
                 b"1.2.3.4, 5.6.7.8", b"evil.example", b"a" * 7000, b"%00", b"<script>"]


def fuzzed_requests(seed, count, own_user):
    """Random request shapes, the same ones for a seed: method, path, 0-40
    headers from lists of risky names and values, some padding and bytes."""
    rng = random.Random(seed)
    for _ in range(count):
        method, path = rng.choice(METHODS), rng.choice(PATHS).replace(b"{own}", b"%d" % own_user)
        if rng.random() < 0.1:
            path += b"?" + b"q" * rng.choice([100, 3000, 7000, 9000])
        if rng.random() < 0.05:
            path = path.replace(b"/", b"/%" + rng.choice([b"00", b"ff", b"2e%2e", b"zz"]), 1)
        version = rng.choice([b"HTTP/1.1"] * 8 + [b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.2", b"HTTX/1.1"])
        headers = [(rng.choice(HEADER_NAMES), rng.choice(HEADER_VALUES)) for _ in range(rng.choice([0, 1, 2, 5, 40]))]
        if rng.random() < 0.05:
            headers += [(b"X-%d" % n, b"v") for n in range(rng.choice([90, 150, 400]))]
        body = b""
        if method in (b"POST", b"PUT", b"PATCH") and rng.random() < 0.7:
            body = rng.choice([b"{}", b'{"name": "Fuzz"}', b"[" * 2000, b"\xff", b"{" + b"9" * 5000])
            headers = [h for h in headers if h[0].lower() not in (b"content-length", b"transfer-encoding")]
            headers += [(b"Content-Type", b"application/json"), (b"Content-Length", b"%d" % len(body))]
        yield method, method + b" " + path + b" " + version, headers, body


def test_fuzzed_request_shapes_get_json_and_never_a_5xx(nginx, new_user):
    statuses = {}
    for method, line, headers, body in fuzzed_requests(seed=11, count=400, own_user=new_user):
        received = raw_request(nginx, line, headers, body)
        shape = f"{line[:80]!r} {[(n[:30], v[:30]) for n, v in headers][:6]}"
        assert_api_answer(received, shape, method)
        for status, _, _ in answers(received):
            statuses[status] = statuses.get(status, 0) + 1
    report("request-shape fuzz through nginx", f"400 requests, statuses {dict(sorted(statuses.items()))}")


def test_anonymous_writes_to_users_never_reach_an_account(nginx, send):
    # The attack writes /users/<the account's id>. Ids are each table's own,
    # so the account's is moved past every public user's (in the stack's
    # database): the attack must find no one, and no seeded user is touched.
    conn = psycopg2.connect(os.environ["MIGRATE_DATABASE_URL"])  # setval: the owner's
    with conn, conn.cursor() as cur:
        cur.execute("SELECT setval(pg_get_serial_sequence('accounts', 'id'), greatest("
                    "nextval(pg_get_serial_sequence('users', 'id')), nextval(pg_get_serial_sequence('accounts', 'id'))) + 100)")
    conn.close()
    account = register(nginx, new_email("owner"))
    put = send("PUT", f"/users/{account['id']}", {"email": new_email("attacker")})
    delete = send("DELETE", f"/users/{account['id']}")
    assert (put.status, delete.status) == (404, 404)
    token = token_for(nginx, account["email"])  # the owner can still sign in
    me = send("GET", "/api/user/me", headers=bearer(token))
    assert (me.status, me.json()["email"]) == (200, account["email"])
    listed = send("GET", "/users?page_size=1000", headers=FRESH).json()
    assert account["email"] not in {user["email"] for user in listed}


def test_a_body_of_unknown_keys_costs_little_and_answers_little(send):
    # Before: 1 MiB of 100,000 unknown keys took 0.7 s of a worker and came back as 2.7 MB of errors.
    flood = "{" + ",".join(f'"k{n}":0' for n in range(100_000)) + "}"
    # nginx: over the largest body of any operation
    assert send("POST", "/users", flood, {"Content-Type": "application/json"}).status == 413
    most = "{" + ",".join(f'"k{n}":0' for n in range(1_600)) + "}"  # just under the 16 KiB of POST /users
    assert len(most) < 16 * 1024
    reply = send("POST", "/users", most, {"Content-Type": "application/json"})
    assert reply.status == 422 and len(reply.body) < 4096
    errors = reply.json()["errors"]["json"]
    # 1,600 unknown keys, and name and email missing: 20 listed, the rest counted.
    assert len(errors) == 21 and errors["_more"] == [f"{1_600 + 2 - 20} more errors not listed."]
    over = "{" + ",".join(f'"k{n}":0' for n in range(2_000)) + "}"
    # the app: this operation's limit
    assert len(over) > 16 * 1024 and send("POST", "/users", over, {"Content-Type": "application/json"}).status == 413


@pytest.mark.parametrize("method, path, status", [
    ("POST", "/users", 413),  # over this operation's 16 KiB, refused by its size
    ("POST", "/api/orders/", 401),  # refused before the body: no token
    ("PUT", "/nothing/here", 404),
    ("GET", "/users/{user}", 200),  # answered by the item-read fast path (cache/reads.py)
])
def test_a_body_the_app_does_not_read_is_answered_not_502(send, new_user, method, path, status):
    # Before: gunicorn reads at most 64 KiB of a body the app left unread
    # before it closes the connection, and nginx, still sending the rest,
    # answered 502 instead of the app's answer.
    path = path.format(user=new_user)
    body = json.dumps({"items": "x" * 250_000})  # nginx takes up to 256 KiB
    with ThreadPoolExecutor(4) as pool:  # a few at once, as a flood sends them
        headers = {"Content-Type": "application/json", **FRESH}
        replies = list(pool.map(lambda _: send(method, path, body, headers), range(24)))
    assert [reply.status for reply in replies] == [status] * len(replies)


def test_the_largest_valid_bodies_are_taken(nginx, send):
    escaped = "\\u00e9" * 100  # 100 characters, each written as a 6-byte escape
    created = send("POST", "/users", '{"name": "%s", "email": "%s@example.com"}' % (escaped, uuid.uuid4().hex * 2),
                   {"Content-Type": "application/json"})
    assert created.status == 201, created
    headers = signed_up(nginx, "big")["headers"]
    name = "\\u00e9" * 200
    items = ",".join('{"name": "%s", "quantity": 1, "price": 0.01}' % name for _ in range(100))
    order = '{"items": [%s], "total_price": 1.00}' % items
    assert len(order) > 120 * 1024
    placed = send("POST", "/api/orders/", order, {"Content-Type": "application/json", **headers})
    assert placed.status == 201, placed


def test_the_stacks_processes_hold_a_role_that_only_reads_and_writes_rows(send):
    """An SQL injection or a process taken over gets rows, not the schema."""
    assert send("GET", "/users/1", headers=FRESH).status == 200  # the app has connected
    owner = psycopg2.connect(os.environ["MIGRATE_DATABASE_URL"])
    with owner, owner.cursor() as cur:
        cur.execute("SELECT DISTINCT usename FROM pg_stat_activity WHERE application_name IN ('api', 'cache-relay')")
        roles = [name for (name,) in cur.fetchall()]
        cur.execute("SELECT current_user")
        assert roles and cur.fetchone()[0] not in roles
        cur.execute("SELECT bool_or(rolsuper OR rolcreatedb OR rolcreaterole) FROM pg_roles WHERE rolname = ANY(%s)", (roles,))
        assert cur.fetchone() == (False,)
        cur.execute("SELECT count(*) FROM pg_class WHERE relowner IN (SELECT oid FROM pg_roles WHERE rolname = ANY(%s))",
                    (roles,))
        assert cur.fetchone() == (0,)  # owns nothing: may alter nothing
    owner.close()
    app = psycopg2.connect(os.environ["DATABASE_URL"])
    with pytest.raises(psycopg2.errors.InsufficientPrivilege), app, app.cursor() as cur:
        cur.execute("CREATE TABLE loot (x int)")
    app.close()
