"""Reading the environment (infra/settings.py): empty is unset, types as declared,
lists split, flags spelt several ways."""

import pytest

from infra import settings

# A setting of each kind: (variable, Flask key, default).
EXAMPLES = [("CACHE_TTL", "CACHE_TTL", 60), ("CACHE_TIMEOUT", "CACHE_TIMEOUT", 0.25),
            ("LOG_LEVEL", "LOG_LEVEL", "INFO"), ("L1_REFRESH_URLS", "L1_REFRESH_URLS", [])]


@pytest.mark.parametrize("variable, key, default", EXAMPLES)
@pytest.mark.parametrize("unset", ["missing", "empty"])
def test_an_empty_variable_is_an_unset_one(monkeypatch, variable, key, default, unset):
    if unset == "missing":
        monkeypatch.delenv(variable, raising=False)
    else:
        monkeypatch.setenv(variable, "")
    assert settings.app_settings()[key] == default


def test_values_have_their_declared_types(monkeypatch):
    monkeypatch.setenv("CACHE_TTL", "30")
    monkeypatch.setenv("CACHE_TIMEOUT", "0.5")
    monkeypatch.setenv("WEB_THREADS", "4")
    monkeypatch.delenv("DB_POOL_SIZE", raising=False)
    read = settings.app_settings()
    assert (read["CACHE_TTL"], read["CACHE_TIMEOUT"]) == (30, 0.5)
    assert read["DB_POOL_SIZE"] == 4, "one connection per gunicorn thread by default"


def test_refresh_urls_are_a_comma_separated_list(monkeypatch):
    monkeypatch.setenv("L1_REFRESH_URLS", " unix:/a/refresh.sock , http://nginx:8081,, ")
    assert settings.app_settings()["L1_REFRESH_URLS"] == ["unix:/a/refresh.sock", "http://nginx:8081"]


@pytest.mark.parametrize("value, enabled", [("true", True), ("1", True), ("YES", True), ("false", False),
                                            ("0", False), ("off", False)])
def test_flags_take_true_1_or_yes(monkeypatch, value, enabled):
    monkeypatch.setenv("CACHE_ENABLED", value)
    monkeypatch.setenv("METRICS_ENABLED", value)
    assert settings.app_settings()["CACHE_ENABLED"] is enabled
    assert settings.metrics_settings()["enabled"] is enabled


def test_secrets_have_no_usable_default(monkeypatch):
    monkeypatch.delenv("SECRET_KEY", raising=False)
    assert settings.app_settings()["SECRET_KEY"] == ""
