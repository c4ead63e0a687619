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

from tests.conftest import stack_setting
from tests.stack.conftest import signed_up

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "monitoring" / "grafana" / "dashboards" / "api.json"


def query(expr):
    url = f"http://{stack_setting('PROMETHEUS_BIND')}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as response:
        answer = json.load(response)
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def dashboard_queries():
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [(panel["title"], target["legendFormat"], target["expr"]) for panel in panels for target in panel["targets"]]


@pytest.fixture(scope="module")
def traffic(send):
    """What an hour of a real stack has: cached and uncached reads, writes,
    an order for the worker; twice, so that every rate has two samples."""
    token = signed_up(send, "dash")
    for _ in range(2):
        user = send("POST", "/users", {"name": "Dash", "email": f"dash-{uuid.uuid4().hex[:8]}@example.com"}).json()["id"]
        for _ in range(5):
            send("GET", f"/users/{user}")
            send("GET", f"/users/{user}", headers={"Cache-Control": "no-cache"})
            send("GET", "/users?page_size=5")
        send("PUT", f"/users/{user}", {"name": "Dash again"})
        send("POST", "/api/orders/", {"items": [{"name": "Widget", "quantity": 1, "price": 1}], "total_price": 1},
             {"Authorization": f"Bearer {token}"})
        time.sleep(6)  # past one scrape


def test_prometheus_scrapes_every_part_of_the_stack(traffic):
    jobs = {series["metric"]["job"]: series["value"][1] for series in query("up")}
    assert jobs == {"app": "1", "relay": "1", "worker": "1", "l1": "1"}


def test_every_dashboard_query_returns_series(traffic):
    deadline = time.monotonic() + 30
    empty = dashboard_queries()
    while empty and time.monotonic() < deadline:
        empty = [(title, legend, expr) for title, legend, expr in empty if not query(expr)]
        time.sleep(1)
    assert not empty, "\n".join(f"{title} / {legend}: {expr}" for title, legend, expr in empty)


def test_every_metric_a_query_names_exists(traffic):
    """Error rates fall back to 0 ("or vector(0)") while nothing failed: the
    metric each one reads must exist all the same, or a misspelt name would
    draw a quiet 0 forever."""
    names = {name for _, _, expr in dashboard_queries() for name in re.findall(r"\b(?:api|nginx)_[a-z0-9_]+", expr)}
    assert len(names) > 10
    missing = sorted(name for name in names if not query(f"count({{__name__={name!r}}})".replace("'", '"')))
    assert not missing


@pytest.mark.parametrize("config", ["the stack's", "compose's"])
def test_both_prometheus_configurations_pass_promtool(config):
    path = {"the stack's": Path(stack_setting("STACK_DIR")) / "monitoring" / "prometheus.yml",
            "compose's": ROOT / "monitoring" / "prometheus.yml"}[config]
    checked = subprocess.run(["promtool", "check", "config", str(path)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
