"""Assertions shared by the test modules."""


def assert_error(response, code):
    assert response.status_code == code
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["code"] == code
    assert isinstance(body["status"], str)
    text = response.get_data(as_text=True)
    for leak in ("Traceback", "SELECT", "INSERT", "psycopg2", "<html"):
        assert leak not in text
