"""The dashboard (monitoring/grafana/dashboards/api.json) against the
Prometheus of the running stack (make test starts it with MONITORING=1): every
query of every panel returns series once the stack has seen some traffic."""

import json
import re
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.support import ROOT
from tests.support.accounts import ORDER, signed_up
from tests.support.bounds import REQUEST_SECONDS, UNPROMISED_WAIT
from tests.support.http import FRESH
from tests.support.stack import setting
from tests.support.waiting import eventually

DASHBOARD = ROOT / "monitoring" / "grafana" / "dashboards" / "api.json"


def query(expr):
    url = f"http://{setting('PROMETHEUS_BIND')}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=REQUEST_SECONDS) as response:
        answer = json.load(response)
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def dashboard_queries():
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [(panel["title"], target["legendFormat"], target["expr"]) for panel in panels for target in panel["targets"]]


def scraped_since(moment):
    """Until Prometheus has scraped every part after ``moment`` (time.time())."""
    eventually(lambda: query("min(timestamp(up))"), lambda result: result and float(result[0]["value"][1]) > moment,
               seconds=UNPROMISED_WAIT, step=0.5)


@pytest.fixture(scope="module")
def traffic(nginx, send):
    """What an hour of a real stack has: cached and uncached reads, writes,
    an order for the worker; twice, a scrape after each, so that every rate
    has two samples."""
    headers = signed_up(nginx, "dash")["headers"]
    for _ in range(2):
        user = send("POST", "/users", {"name": "Dash", "email": f"dash-{uuid.uuid4().hex[:8]}@example.com"}).json()["id"]
        for _ in range(5):
            send("GET", f"/users/{user}")
            send("GET", f"/users/{user}", headers=FRESH)
            send("GET", "/users?page_size=5")
        send("PUT", f"/users/{user}", {"name": "Dash again"})
        send("POST", "/api/orders/", ORDER, headers)
        scraped_since(time.time())


def eventually_each(check, items):
    """Until ``check(item)`` has held for every one of ``items``, each checked
    again until it does (a series appears with the scrape after its first sample)."""
    missing = list(items)

    def recheck():
        missing[:] = [item for item in missing if not check(item)]
        return missing

    eventually(recheck, lambda left: not left, seconds=UNPROMISED_WAIT, step=1)


def test_prometheus_scrapes_every_part_of_the_stack(traffic):
    parts = ["app", "relay", "worker", "l1"]
    # A scrape that failed on a busy machine is followed by another.
    eventually_each(lambda job: [series["value"][1] for series in query(f'up{{job="{job}"}}')] == ["1"], parts)
    assert {series["metric"]["job"] for series in query("up")} == set(parts)


def test_every_dashboard_query_returns_series(traffic):
    eventually_each(lambda target: query(target[2]), dashboard_queries())


def test_every_metric_a_query_names_exists(traffic):
    """Error rates fall back to 0 ("or vector(0)") while nothing failed: the
    metric each one reads must exist all the same, or a misspelt name would
    draw a quiet 0 forever."""
    names = {name for _, _, expr in dashboard_queries() for name in re.findall(r"\b(?:api|nginx)_[a-z0-9_]+", expr)}
    assert len(names) > 10
    eventually_each(lambda name: query(f"count({{__name__={name!r}}})".replace("'", '"')), sorted(names))


@pytest.mark.parametrize("config", ["the stack's", "compose's"])
def test_both_prometheus_configurations_pass_promtool(config):
    path = {"the stack's": Path(setting("STACK_DIR")) / "monitoring" / "prometheus.yml",
            "compose's": ROOT / "monitoring" / "prometheus.yml"}[config]
    checked = subprocess.run(["promtool", "check", "config", str(path)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
