"""nginx's configuration as files (nginx/): what the product's bounds and
connections rely on, read without starting it."""

import re

import pytest

from infra import settings
from tests.support import ROOT

NGINX = ROOT / "nginx"


def directives(name):
    """The lines of nginx/``name`` without comments."""
    return [line.split("#")[0].strip() for line in (NGINX / name).read_text().splitlines() if line.split("#")[0].strip()]


def test_l1_keeps_answers_only_as_the_apps_cache_control_says():
    """No proxy_cache_valid (an answer without max-age is not kept) and no
    proxy_cache_use_stale, whose flags serve an expired copy with no time bound."""
    used = {line.split()[0] for line in directives("cache.conf")}
    assert "proxy_cache" in used
    assert not used & {"proxy_cache_valid", "proxy_cache_use_stale"}


def test_clients_see_no_cache_control_meant_for_l1():
    lines = directives("cache.conf")
    assert "proxy_hide_header Cache-Control;" in lines
    assert "add_header Cache-Control $api_client_cache_control always;" in lines
    # What reaches the client is only a no-store the app said, never an L1 answer's s-maxage.
    http_conf = (NGINX / "http.conf").read_text()
    assert re.search(r'"~\*no-store" \$upstream_http_cache_control;', http_conf)


@pytest.mark.parametrize("conf", ["docker.conf", "local.conf.template"])
def test_gunicorn_keeps_idle_connections_longer_than_nginx(conf):
    """nginx must be the side that closes an idle upstream connection."""
    nginx_idle = int(re.search(r"keepalive_timeout\s+(\d+)s;", (NGINX / conf).read_text()).group(1))
    assert settings.web_settings()["keepalive"] > nginx_idle


def test_the_helm_charts_copies_are_nginxs_files():
    """.Files reads only inside a chart, so deploy/helm/api holds copies: equal, byte for byte."""
    copies = ROOT / "deploy/helm/api/files/nginx"
    assert sorted(path.name for path in copies.iterdir()) == sorted(
        ["docker.conf", "http.conf", "cache.conf", "limits.conf", "errors.conf", "bound-l1-log.sh"])
    for copy in copies.iterdir():
        assert copy.read_bytes() == (NGINX / copy.name).read_bytes(), f"cp nginx/{copy.name} {copies}/"
