"""Metric labels from routes (infra/request_log.py): bounded, readable templates."""

import pytest

from infra.request_log import route_label


@pytest.mark.parametrize("rule, label", [
    ("/users/<int(max=9223372036854775807):user_id>", "/users/<int:user_id>"),
    ("/api/orders/<uuid:order_id>/", "/api/orders/<uuid:order_id>/"),
    ("/users", "/users"),
    ("unmatched", "unmatched"),
])
def test_a_route_label_is_its_template_without_converter_arguments(rule, label):
    assert route_label(rule) == label
    assert route_label(rule) == label  # and again, from what it kept
