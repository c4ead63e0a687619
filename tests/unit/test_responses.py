"""JSON bodies as every level serves them (responses.py): compact, the one
error shape, the packed form L2 stores, and what L1 may keep."""

import json

import pytest

from responses import (
    L1_CACHEABLE,
    L1_FRESH_SECONDS,
    L1_IF_ERROR_SECONDS,
    L1_REFRESH_SECONDS,
    error_body,
    pack,
    to_json,
    unpack,
)


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


def test_l1_keeps_an_answer_only_for_the_bounded_times_and_says_so_first():
    """nginx reads s-maxage and the two stale extensions, the only stale rules
    it bounds in time; the value is the one nginx finds on every hit."""
    name, value = L1_CACHEABLE
    assert name == "Cache-Control"
    assert value == (f"s-maxage={L1_FRESH_SECONDS}, stale-while-revalidate={L1_REFRESH_SECONDS}, "
                     f"stale-if-error={L1_IF_ERROR_SECONDS}")
