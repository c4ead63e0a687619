"""The stack's Prometheus metrics, read as Prometheus reads them: from the
app's, relay's and worker's own ports (APP_METRICS_BIND, ...), never from
nginx's public port."""

import json
import os
import random
import string
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.support.accounts import ORDER, signed_up
from tests.support.bounds import REQUEST_SECONDS, UNPROMISED_WAIT
from tests.support.http import FRESH
from tests.support.stack import setting
from tests.support.waiting import eventually


def scrape(part):
    """{(name, sorted labels): value} of one part's /metrics."""
    with urllib.request.urlopen(f"http://{setting(f'{part}_METRICS_BIND')}/metrics", timeout=REQUEST_SECONDS) as response:
        text = response.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_are_served_on_their_own_loopback_ports_and_not_through_nginx(send):
    for part in ("APP", "RELAY", "WORKER"):
        assert os.environ[f"{part}_METRICS_BIND"].startswith("127.0.0.1:")
        assert scrape(part)
    for path in ("/metrics", "/metrics/", "/api/metrics"):
        reply = send("GET", path)
        assert reply.status == 404 and reply.headers["Content-Type"] == "application/json", (path, reply)
        assert reply.l1 != "HIT"


def test_every_request_counts_once_whichever_worker_answered(send, new_user):
    route = dict(method="GET", route="/users/<int:user_id>", status="200")
    before = value(scrape("APP"), "api_request_duration_seconds_count", **route)
    # Past L1, eight at a time: nginx opens several upstream connections,
    # which gunicorn's workers share out.
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: send("GET", f"/users/{new_user}", headers=FRESH).status, range(40)))
    assert statuses == [200] * 40
    after = scrape("APP")
    # Summed over the workers: one worker's samples alone would be about half.
    # A few more reads may be the relay refreshing L1 after a change.
    assert 40 <= value(after, "api_request_duration_seconds_count", **route) - before <= 45
    assert value(after, "api_l2_reads_total", resource="users", result="hit") > 0
    assert value(after, "api_request_duration_seconds_bucket", le="+Inf", **route) == \
        value(after, "api_request_duration_seconds_count", **route)


def test_a_change_shows_in_the_relays_metrics(send, new_user):
    before = value(scrape("RELAY"), "api_relay_changes_applied_total")
    assert send("PUT", f"/users/{new_user}", {"name": "Metered"}).status == 200
    eventually(lambda: scrape("RELAY"),
               lambda samples: value(samples, "api_relay_changes_applied_total") > before, seconds=UNPROMISED_WAIT)
    relay = scrape("RELAY")
    assert value(relay, "api_relay_lag_seconds_count") >= 1
    assert ("api_relay_backlog_changes", ()) in relay


def test_an_orders_request_id_reaches_the_workers_log_and_its_task_its_metrics(nginx, send):
    headers = signed_up(nginx, "traced")["headers"]
    processed = dict(task="orders.process", outcome="succeeded")
    before = value(scrape("WORKER"), "api_worker_tasks_total", **processed)

    request_id = f"trace-{uuid.uuid4().hex}"
    placed = send("POST", "/api/orders/", ORDER, {**headers, "X-Request-ID": request_id})
    assert placed.status == 201 and placed.headers["X-Request-ID"] == request_id

    eventually(lambda: scrape("WORKER"),
               lambda samples: value(samples, "api_worker_tasks_total", **processed) > before, seconds=UNPROMISED_WAIT)
    assert value(scrape("WORKER"), "api_worker_queue_wait_seconds_count", task="orders.process") >= 1
    stack = Path(setting("STACK_DIR"))

    def lines_with_the_id(log):
        return [json.loads(line) for line in (stack / log).read_text().splitlines()
                if request_id in line and line.startswith("{")]

    # nginx writes its log once a second.
    logged = eventually(lambda: lines_with_the_id("nginx/access.log"), seconds=UNPROMISED_WAIT).value
    assert [line["request_id"] for line in logged] == [request_id]
    assert [line["request_id"] for line in lines_with_the_id("app/app.log")] == [request_id]
    task_lines = lines_with_the_id("worker/worker.log")
    assert task_lines and all(line["request_id"] == request_id for line in task_lines)
    assert any("orders.process" in line["message"] and "succeeded" in line["message"] for line in task_lines)


def test_a_client_cannot_grow_the_metrics_with_invented_methods_or_paths(send):
    invented = ["X" + "".join(random.choices(string.ascii_uppercase, k=8)) for _ in range(3)]  # nginx takes letters
    for method in invented:
        assert send(method, f"/no-such-{uuid.uuid4().hex}").status in (404, 405)
    samples = scrape("APP")
    labels = {dict(key[1]).get("method") for key in samples} | {dict(key[1]).get("route") for key in samples}
    assert not labels & set(invented)
    assert not any(label and label.startswith("/no-such-") for label in labels)
    assert value(samples, "api_request_duration_seconds_count", method="OTHER", route="unmatched", status="404") + \
        value(samples, "api_request_duration_seconds_count", method="OTHER", route="unmatched", status="405") >= 3
