"""The users API, row by row of its contract, on real PostgreSQL and Redis."""

import json

import pytest

from blueprints import printable
from tests.support.errors import assert_error


def user_count(client):
    return json.loads(client.get("/users").headers["X-Pagination"])["total"]


def test_list_has_the_seed_users_in_id_order(client):
    response = client.get("/users")
    assert response.status_code == 200
    users = response.get_json()
    assert [u["name"] for u in users] == ["Alice", "Bob", "Charlie"]
    assert [u["email"] for u in users] == ["alice@example.com", "bob@example.com", "charlie@example.com"]
    assert set(users[0]) == {"id", "name", "email", "created_at"}
    assert json.loads(response.headers["X-Pagination"]) == {
        "total": 3, "total_pages": 1, "page": 1, "page_size": 100, "next_cursor": None,
    }


def test_list_pages(client):
    response = client.get("/users?page=2&page_size=2")
    assert [u["name"] for u in response.get_json()] == ["Charlie"]
    assert json.loads(response.headers["X-Pagination"])["total_pages"] == 2
    assert client.get("/users?page=9").get_json() == []


def test_list_by_cursor_walks_every_user_once(client):
    for n in range(4):
        client.post("/users", json={"name": f"U{n}", "email": f"u{n}@example.com"})
    client.delete("/users/2")  # a hole in the ids
    seen, cursor = [], None
    while True:
        query = "page_size=2" + (f"&cursor={cursor}" if cursor is not None else "")
        response = client.get(f"/users?{query}")
        seen += [u["id"] for u in response.get_json()]
        info = json.loads(response.headers["X-Pagination"])
        assert info["total"] == 6
        cursor = info["next_cursor"]
        if cursor is None:
            break
    assert seen == [1, 3, 4, 5, 6, 7]
    assert "page" not in info  # a cursor page has no number


def test_totals_follow_creates_and_deletes(client):
    client.post("/users", json={"name": "Dana", "email": "dana@example.com"})
    client.delete("/users/1")
    client.delete("/users/2")
    assert json.loads(client.get("/users").headers["X-Pagination"])["total"] == 2


@pytest.mark.parametrize(
    "query", ["page=0", "page=-1", "page=x", "page_size=0", "page_size=1001", "cursor=-1", "cursor=x", "page=2&cursor=1"]
)
def test_list_rejects_bad_arguments(client, query):
    assert_error(client.get(f"/users?{query}"), 422)


def test_create_read_list_update_delete(client):
    created = client.post("/users", json={"name": "Dana", "email": "dana@example.com"})
    assert created.status_code == 201
    user_id = created.get_json()["id"]
    assert created.get_data(as_text=True) == f'{{"id":{user_id},"message":"Created"}}\n'
    assert created.headers["Location"] == f"/users/{user_id}"

    user = client.get(f"/users/{user_id}").get_json()
    assert user["name"] == "Dana" and user["email"] == "dana@example.com"
    assert user["created_at"].endswith("+00:00")
    assert user_id in [u["id"] for u in client.get("/users").get_json()]

    updated = client.put(f"/users/{user_id}", json={"name": "Dana B."})
    assert updated.status_code == 200 and updated.get_json() == {"message": "Updated"}
    assert client.get(f"/users/{user_id}").get_json()["name"] == "Dana B."
    client.put(f"/users/{user_id}", json={"email": "dana.b@example.com"})
    after = client.get(f"/users/{user_id}").get_json()
    assert (after["name"], after["email"]) == ("Dana B.", "dana.b@example.com")

    deleted = client.delete(f"/users/{user_id}")
    assert deleted.status_code == 200 and deleted.get_json() == {"message": "Deleted"}
    assert_error(client.get(f"/users/{user_id}"), 404)
    assert user_id not in [u["id"] for u in client.get("/users").get_json()]


@pytest.mark.parametrize(
    "body",
    [
        {"email": "no-name@example.com"},
        {"name": "No Email"},
        {"name": "", "email": "empty@example.com"},
        {"name": "   ", "email": "blank@example.com"},
        {"name": "x" * 101, "email": "long@example.com"},
        {"name": "Bad", "email": "not-an-email"},
        {"name": "Long", "email": "a" * 95 + "@example.com"},
        {"name": None, "email": "null@example.com"},
        {"name": "Bell\x07", "email": "bell@example.com"},
        {"name": "Two\nlines", "email": "newline@example.com"},
        {"name": "C1\x85control", "email": "c1@example.com"},
        {"name": "Extra", "email": "extra@example.com", "role": "admin"},
        ["not", "an", "object"],
    ],
)
def test_create_rejects_invalid_users_and_stores_nothing(client, body):
    before = user_count(client)
    assert_error(client.post("/users", json=body), 422)
    assert user_count(client) == before


def test_a_lone_surrogate_escape_is_rejected_not_a_server_error(client):
    body = '{"name": "Lone \\ud800 half", "email": "surrogate@example.com"}'
    assert_error(client.post("/users", data=body, content_type="application/json"), 400)
    assert user_count(client) == 3


def test_a_body_over_one_mib_is_refused_by_the_app_too(client):
    body = '{"name": "%s", "email": "big@example.com"}' % ("x" * (1024 * 1024))
    assert_error(client.post("/users", data=body, content_type="application/json"), 413)
    assert user_count(client) == 3


def test_create_accepts_the_longest_valid_values(client):
    response = client.post("/users", json={"name": "n" * 100, "email": "e" * 88 + "@example.com"})
    assert response.status_code == 201


@pytest.mark.parametrize("name", ["Zoë Ørsted", "王秀英", "👩\u200d💻 Dev", "O'Brien; DROP TABLE users;--"])
def test_any_text_without_control_characters_is_stored_verbatim(client, name):
    created = client.post("/users", json={"name": name, "email": "text@example.com"})
    assert created.status_code == 201
    assert client.get(f"/users/{created.get_json()['id']}").get_json()["name"] == name


def test_the_text_rule_is_stated_in_the_openapi_document(client):
    spec = client.get("/openapi.json").get_json()
    name = spec["components"]["schemas"]["User"]["properties"]["name"]
    assert name["pattern"] == printable.regex.pattern


def test_create_rejects_a_duplicate_email_whatever_its_case(client):
    assert_error(client.post("/users", json={"name": "A2", "email": "alice@example.com"}), 409)
    response = client.post("/users", json={"name": "A3", "email": "ALICE@Example.COM"})
    assert_error(response, 409)
    assert "already exists" in response.get_json()["message"]
    assert user_count(client) == 3


def test_create_rejects_malformed_json(client):
    response = client.post("/users", data='{"name": "x",', content_type="application/json")
    assert_error(response, 400)
    assert user_count(client) == 3


def test_create_rejects_a_body_that_is_not_json(client):
    assert_error(client.post("/users", data="name=x&email=x@example.com"), 415)
    assert_error(client.post("/users", data='{"name":"x"}', content_type="text/plain"), 415)


@pytest.mark.parametrize("path", ["/users/999999", "/users/99999999999999999999999", "/users/abc", "/users/-1"])
def test_get_unknown_user_is_404(client, path):
    assert_error(client.get(path), 404)


@pytest.mark.parametrize("body", [{}, {"nickname": "x"}, {"email": "bad"}, {"name": ""}])
def test_update_rejects_empty_unknown_or_invalid_bodies(client, body):
    assert_error(client.put("/users/1", json=body), 422)
    assert client.get("/users/1").get_json()["name"] == "Alice"


def test_update_unknown_user_is_404(client):
    assert_error(client.put("/users/999999", json={"name": "Ghost"}), 404)


def test_update_to_a_taken_email_is_409_and_changes_nothing(client):
    assert_error(client.put("/users/2", json={"name": "Bobby", "email": "alice@example.com"}), 409)
    bob = client.get("/users/2").get_json()
    assert (bob["name"], bob["email"]) == ("Bob", "bob@example.com")


def test_delete_unknown_user_is_404(client):
    assert_error(client.delete("/users/999999"), 404)


def test_wrong_method_is_a_json_405(client):
    assert_error(client.patch("/users/1", json={"name": "x"}), 405)


def test_unknown_path_is_a_json_404(client):
    assert_error(client.get("/nowhere"), 404)


@pytest.mark.parametrize(
    "name",
    ["Robert'); DROP TABLE users;--", "' OR '1'='1", "x\"; DELETE FROM users WHERE ''='", "Zoë 李 🙂 %s %(x)s"],
)
def test_hostile_strings_are_stored_and_returned_verbatim(client, name):
    response = client.post("/users", json={"name": name, "email": "hostile@example.com"})
    assert response.status_code == 201
    user_id = response.get_json()["id"]
    assert client.get(f"/users/{user_id}").get_json()["name"] == name
    assert user_count(client) == 4


def test_created_at_is_identical_from_database_and_cache(client):
    from_db = client.get("/users/1")
    from_cache = client.get("/users/1")
    assert (from_db.headers["X-Cache-L2"], from_cache.headers["X-Cache-L2"]) == ("MISS", "HIT")
    assert from_db.get_data() == from_cache.get_data()
    assert from_db.get_json()["created_at"] == from_cache.get_json()["created_at"]
