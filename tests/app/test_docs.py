"""The OpenAPI document and Swagger UI, as the app serves them (a real
browser renders them in tests/stack/test_docs_browser.py)."""


def test_docs_and_openapi_are_served(client):
    spec = client.get("/openapi.json").get_json()
    assert {"/users", "/users/{user_id}", "/health"} <= set(spec["paths"])
    assert "409" in spec["paths"]["/users"]["post"]["responses"]
    page = client.get("/docs")
    assert page.status_code == 200 and b"swagger-ui" in page.data
    assert client.get("/docs/assets/swagger-ui-bundle.js").status_code == 200
    assert client.get("/").get_json()["docs"] == "/docs"
