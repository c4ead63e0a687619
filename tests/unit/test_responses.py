"""JSON bodies as every level serves them (infra/responses.py): compact, the one
error shape (infra/errors.py), the packed form L2 stores."""

import json

import pytest

from infra.errors import error_body
from infra.responses import pack, to_json, unpack


def test_json_is_compact_in_field_order_and_keeps_text_as_it_is():
    assert to_json({"id": 4, "message": "Zoë", "a": [1, None]}) == '{"id":4,"message":"Zoë","a":[1,null]}'


@pytest.mark.parametrize("code, status", [(404, "Not Found"), (409, "Conflict"), (422, "Unprocessable Entity"),
                                          (429, "Too Many Requests"), (503, "Service Unavailable")])
def test_the_error_body_is_the_apis_one_shape(code, status):
    assert json.loads(error_body(code, "Why.")) == {"code": code, "status": status, "message": "Why."}


@pytest.mark.parametrize("body, headers", [
    ('[{"name":"Two\\nlines"}]', {"X-Pagination": '{"total":1}'}),
    ("{}\n\n{}", {}),
    ('{"name":"王"}', {"X-Note": "Zoë\nline"}),
])
def test_a_packed_page_unpacks_to_the_same_body_and_headers(body, headers):
    assert unpack(pack(body, headers)) == (body, headers)

