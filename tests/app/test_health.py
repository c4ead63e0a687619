"""GET /health: what each dependency says, never cached."""


def test_health_reports_both_dependencies(client):
    response = client.get("/health")
    assert response.status_code == 200
    body = response.get_json()
    assert {k: body[k] for k in ("status", "database", "cache")} == {"status": "healthy", "database": "ok", "cache": "ok"}
    assert body["relay"]["state"] == "ok" and body["relay"]["changes_waiting"] >= 0
    # The session's relay runs the consistency monitor; before its first publication it is unknown.
    assert body["consistency"]["state"] in ("ok", "unknown")
    assert response.headers["Cache-Control"] == "no-store"


def test_health_is_503_when_postgresql_is_unreachable(make_app, tmp_path):
    app = make_app(DATABASE_URL=f"postgresql:///app?host={tmp_path}&user=app", DB_CONNECT_TIMEOUT=1)
    response = app.test_client().get("/health")
    assert response.status_code == 503
    assert response.get_json()["status"] == "unhealthy"
    assert response.get_json()["database"] == "down"


def test_live_answers_while_postgresql_and_redis_are_unreachable(make_app, tmp_path):
    app = make_app(DATABASE_URL=f"postgresql:///app?host={tmp_path}&user=app", DB_CONNECT_TIMEOUT=1,
                   REDIS_URL=f"unix://{tmp_path}/no-redis.sock")
    response = app.test_client().get("/health/live")
    assert (response.status_code, response.get_json()) == (200, {"status": "alive"})
    assert response.headers["Cache-Control"] == "no-store"
