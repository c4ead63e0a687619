"""The application factory (app.py): no app at import, per-app state only."""

from flask import Flask

from app import create_app
from infra import metrics

CONFIG = {"APP_ENV": "test", "SECRET_KEY": "a test secret of at least 32 characters"}


def test_no_module_builds_an_app_at_import():
    import app as app_module  # noqa: PLC0415

    assert not any(isinstance(value, Flask) for value in vars(app_module).values())


def test_each_app_has_its_own_metrics_setting():
    assert create_app({**CONFIG, "METRICS_ENABLED": False}).extensions["metrics"] is metrics.OFF
    assert create_app({**CONFIG, "METRICS_ENABLED": True}).extensions["metrics"] is metrics.recording()


def test_each_app_declares_its_own_cached_resources():
    first, second = create_app(CONFIG), create_app(CONFIG)
    assert first.extensions["cache"].resources is not second.extensions["cache"].resources
    assert set(first.extensions["cache"].resources.by_table) == {"users", "customer_addresses", "incidents", "orders"}
