"""Faults under a running load of mixed reads and writes through nginx.

Each scenario records its figures (the ``figures`` fixture, printed at the
end of the run) and fails on a broken promise: an acknowledged write missing
from PostgreSQL, a 5xx where none may be, a cache level left disagreeing."""

import threading
import time
import uuid

import pytest

from infra import settings
from blueprints.users import USERS
from tests.faults.load import Call, Load, lost_writes, stale_l2_entries
from tests.support.accounts import place, signed_up
from tests.support.bounds import L1_BOUND, STALE_IF_ERROR_BOUND, UNPROMISED_WAIT
from tests.support.http import FRESH, Client
from tests.support.stack import wait_applied
from tests.support.waiting import Pace, eventually

OUTAGE_SECONDS = 10


@pytest.fixture
def users(stack):
    """40 users of this scenario's own: the first 20 are read, the rest written."""
    tag = uuid.uuid4().hex[:8]
    with stack.db() as conn, conn.cursor() as cur:
        cur.execute(
            """
            INSERT INTO users (name, email)
            SELECT 'Drill ' || n, 'drill-' || %s || '-' || n || '@example.com'
            FROM generate_series(1, 40) AS n
            RETURNING id
            """,
            (tag,),
        )
        ids = sorted(row[0] for row in cur.fetchall())
    return ids[:20], ids[20:]


def warm_l1(stack, ids):
    with Client(stack.base_url) as client:
        for user_id in ids:
            assert client.request("GET", f"/users/{user_id}").status == 200


def lost_acknowledged_writes(stack, load, figures):
    """Every write the load saw acknowledged, looked up in PostgreSQL: the missing ones."""
    with stack.db() as conn, conn.cursor() as cur:
        lost = lost_writes(load, cur)
    acknowledged = load.figures()["writes_acknowledged"]
    figures.update(acknowledged_writes_found=acknowledged - len(lost), acknowledged_writes_lost=len(lost))
    return lost


def stale_l2(stack, ids):
    with stack.db() as conn, conn.cursor() as cur:
        return stale_l2_entries(stack.redis(), cur, ids)


def test_redis_stopped_for_ten_seconds(stack, users, figures):
    read_ids, write_ids = users
    with Load(stack.base_url, read_ids + write_ids, write_ids, fresh_reads=True) as load:
        time.sleep(2)
        stack.service("stop", "redis")
        down = time.monotonic()
        time.sleep(OUTAGE_SECONDS)
        stack.service("start", "redis")
        up = time.monotonic()

        # Caching resumes by itself: reads reach Redis again (MISS, then HIT).
        with Client(stack.base_url) as probe:
            resumed = eventually(lambda: probe.request("GET", f"/users/{read_ids[0]}", headers=FRESH),
                                 lambda reply: reply.l2 == "HIT", seconds=UNPROMISED_WAIT, since=up)
        time.sleep(2)
    wait_applied()  # every change the load made

    during = load.between(down, up)
    figures.update(load.figures())
    figures.update(
        outage_s=round(up - down, 1),
        reads_during_outage=sum(c.kind == "read" for c in during),
        served_from_postgresql_during_outage=sum(c.l2 == "DOWN" for c in during),
        caching_resumed_after_s=round(resumed.met_after, 2),
    )
    lost = lost_acknowledged_writes(stack, load, figures)
    stale = stale_l2(stack, read_ids + write_ids)
    figures["stale_l2_entries_after"] = len(stale)

    assert figures["5xx"] == 0 and figures["non_2xx"] == 0, figures
    assert figures["served_from_postgresql_during_outage"] > 0
    assert lost == []
    assert stale == []


def test_postgresql_stopped_for_ten_seconds(stack, users, figures):
    read_ids, write_ids = users
    warm_l1(stack, read_ids)
    # Only L1 holds these users now: a read that reaches the app needs PostgreSQL.
    stack.redis().delete(*[USERS.item_keys(user_id)[0] for user_id in read_ids])
    log_offset = stack.log_size("app/app.log")

    with Load(stack.base_url, read_ids, write_ids, create_every=0) as load:
        time.sleep(2)
        stack.service("stop", "postgres")
        down = time.monotonic()
        time.sleep(OUTAGE_SECONDS)
        # What a probe of Kubernetes or Swarm sees meanwhile: the processes answer.
        with Client(stack.base_url) as probe:
            probes = {path: probe.request("GET", path).status for path in ("/health", "/health/live", "/_l1/live")}
        restarting = time.monotonic()
        stack.service("start", "postgres")
        up = time.monotonic()
        # By itself, nothing restarted: the pool replaces the connections PostgreSQL closed.
        recovered = eventually(lambda: [c for c in load.between(up, time.monotonic(), "update") if c.ok], bool,
                               seconds=UNPROMISED_WAIT, since=up)
        time.sleep(1)

    reads = load.between(down, restarting, "read")
    writes = load.between(down, restarting, "update")
    figures.update(load.figures())
    figures.update(
        outage_s=round(restarting - down, 1),
        reads_during_outage=len(reads),
        reads_during_outage_not_200=sum(c.status != 200 for c in reads),
        reads_served_stale_by_l1=sum(c.l1 == "STALE" for c in reads),
        writes_during_outage=len(writes),
        writes_during_outage_not_503=sum(c.status != 503 for c in writes),
        slowest_write_during_outage_s=round(max(c.seconds for c in writes), 3),
        writes_succeed_again_after_s=round(min(c.started for c in recovered.value) - up, 2),
    )
    lost = lost_acknowledged_writes(stack, load, figures)
    log = stack.log_since("app/app.log", log_offset)

    assert probes == {"/health": 503, "/health/live": 200, "/_l1/live": 200}, probes
    assert figures["reads_during_outage_not_200"] == 0, figures
    assert figures["reads_served_stale_by_l1"] > 0
    assert writes and figures["writes_during_outage_not_503"] == 0, figures
    assert all(c.json()["code"] == 503 for c in writes)
    # Refused at once: no write waited out the connection timeout.
    assert figures["slowest_write_during_outage_s"] < settings.app_settings()["DB_CONNECT_TIMEOUT"], figures
    assert "WORKER TIMEOUT" not in log
    assert lost == []


def test_gunicorn_worker_killed_then_app_reloaded(stack, users, figures):
    read_ids, write_ids = users
    warm_l1(stack, read_ids)
    before = set(stack.gunicorn_workers())
    # Six writers, so that the killed worker is likely in the middle of some.
    with Load(stack.base_url, read_ids, write_ids, writers=6) as load:
        time.sleep(2)
        killed = stack.kill_a_gunicorn_worker()
        time.sleep(3)
        stack.reload_app()
        time.sleep(5)
    time.sleep(1)

    reads = [c for c in load.calls if c.kind == "read"]
    writes = [c for c in load.calls if c.kind != "read"]
    figures.update(load.figures())
    lost = lost_acknowledged_writes(stack, load, figures)
    figures.update(
        reads_not_200=sum(c.status != 200 for c in reads),
        reads_served_stale_by_l1=sum(c.l1 == "STALE" for c in reads),
        writes_not_acknowledged=sum(not c.ok for c in writes),
    )
    # The killed worker was replaced, then the reload replaced them all (the
    # old ones finish their requests first).
    eventually(lambda: not set(stack.gunicorn_workers()) & before, seconds=UNPROMISED_WAIT)
    figures["gunicorn_workers_after"] = len(stack.gunicorn_workers())
    assert figures["reads_not_200"] == 0, figures
    assert lost == []
    assert killed in before and figures["gunicorn_workers_after"] == len(before)


def test_celery_worker_killed_with_orders_queued(stack, figures):
    client = Client(stack.base_url)
    account = signed_up(client, "drill")

    def place_orders(count):
        replies = [place(client, account) for _ in range(count)]
        assert all(r.status == 201 for r in replies), [r.status for r in replies]
        return [r.json()["id"] for r in replies]

    ids = place_orders(20)
    stack.kill_celery()  # some processed, some taken by the worker, some still queued
    ids += place_orders(20)  # queued while no worker runs
    client.close()
    stack.service("start", "worker")
    started = time.monotonic()

    def processed():
        with stack.db() as conn, conn.cursor() as cur:
            cur.execute("SELECT id, processed_at FROM orders WHERE id = ANY(%s::uuid[])", (ids,))
            return dict(cur.fetchall())

    drained = eventually(processed, lambda orders: all(orders.values()), seconds=UNPROMISED_WAIT, step=0.5,
                         since=started)
    first = drained.value
    # Deliver every order again, as a redelivered or swept task would, and
    # wait for the worker to have run each: nothing changes.
    log_offset = stack.log_size("worker/worker.log")
    tasks = [stack.send_task("orders.process", order_id) for order_id in ids]
    eventually(lambda: stack.log_since("worker/worker.log", log_offset),
               lambda log: all(f"[{task}] succeeded" in log for task in tasks), seconds=UNPROMISED_WAIT, step=0.5)
    again = processed()
    figures.update(
        orders_acknowledged=len(ids),
        orders_processed=sum(v is not None for v in first.values()),
        drained_after_worker_ready_s=round(drained.met_after, 2),
        processed_at_changed_by_redelivery=sum(first[k] != again[k] for k in ids),
    )
    assert figures["orders_processed"] == len(ids)
    assert figures["processed_at_changed_by_redelivery"] == 0


def test_fifty_writers_and_fifty_readers_on_one_user(stack, users, figures):
    """A hundred clients, each from an address of its own and sending at most
    a hundred requests a second, each after the answer to the last: fifty
    write ten names each, fifty read twenty times (every other one past L1)."""
    user_id = users[1][0]
    warm_l1(stack, [user_id])
    tag = uuid.uuid4().hex[:6]
    calls, lock = [], threading.Lock()

    def sending(step, count):
        def run(n):
            pace = Pace(100)
            with Client(stack.base_url) as client:
                for seq in range(count):
                    pace.wait()
                    call = step(client, n, seq)
                    with lock:
                        calls.append(call)
        return run

    def write(client, n, seq):
        name = f"race {tag} {n} {seq}"
        return Call("update", client.request("PUT", f"/users/{user_id}", {"name": name}), user_id=user_id, name=name)

    def read(client, n, seq):
        return Call("read", client.request("GET", f"/users/{user_id}", headers=FRESH if n % 2 else None))

    threads = [threading.Thread(target=sending(write, 10), args=(n,)) for n in range(50)]
    threads += [threading.Thread(target=sending(read, 20), args=(n,)) for n in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wait_applied()

    with stack.db() as conn, conn.cursor() as cur:
        cur.execute("SELECT name FROM users WHERE id = %s", (user_id,))
        final = cur.fetchone()[0]
        stale = stale_l2_entries(stack.redis(), cur, [user_id])
    writes = [c for c in calls if c.kind == "update"]
    acked = [c for c in writes if c.ok]
    by_name = {c.name: c for c in acked}
    # The final row is an acknowledged write that no other acknowledged write
    # started after: one that began after it was answered committed after it.
    last_possible = final in by_name and not any(c.started > by_name[final].ended for c in acked)
    last_ack = max(c.ended for c in acked)
    with Client(stack.base_url) as probe:
        app_view = probe.request("GET", f"/users/{user_id}", headers=FRESH).json()["name"]
        l1 = eventually(lambda: probe.request("GET", f"/users/{user_id}"), lambda r: r.json()["name"] == final,
                        seconds=UNPROMISED_WAIT, since=last_ack)
    figures.update(
        requests=len(calls),
        non_2xx=sum(not c.ok for c in calls),
        writes_acknowledged=len(acked),
        final_is_the_last_acknowledged_write=last_possible,
        l2_agrees_once_applied=not stale,
        app_answer_agrees_after_l2s_bound=app_view == final,
        l1_old_until_s=round(l1.unmet_for, 2),
    )
    assert figures["non_2xx"] == 0, figures
    assert last_possible, figures
    assert stale == [] and app_view == final
    # L1 may keep the old item up to its lifetime, and nginx refreshes it behind a stale answer.
    assert l1.unmet_for <= L1_BOUND, figures


def test_stale_copies_while_postgresql_is_down_stop_at_their_bound(stack, users, figures):
    """stale-if-error keeps an expired copy answering for l1.IF_ERROR_SECONDS (cache/l1.py)
    past its expiry, and not one second (nginx's clock) longer. An age is
    counted from the end of the answer that filled the entry: a slow fill
    makes it shorter, never longer."""
    user_id = users[0][0]
    client, pace = Client(stack.base_url), Pace(2)
    filled = client.request("GET", f"/users/{user_id}", headers=FRESH)
    assert filled.status == 200
    stack.service("stop", "postgres")
    try:
        seen = []
        while time.monotonic() - filled.ended < STALE_IF_ERROR_BOUND + 4:
            pace.wait()
            reply = client.request("GET", f"/users/{user_id}")
            seen.append((round(reply.started - filled.ended, 1), reply.status, reply.l1))
    finally:
        stack.service("start", "postgres")
    client.close()
    stale = [t for t, status, l1 in seen if status == 200 and l1 == "STALE"]
    after = [(t, status) for t, status, l1 in seen if stale and t > stale[-1]]
    figures.update(stale_served_from_s=stale[0] if stale else None, stale_served_until_s=stale[-1] if stale else None,
                   answers_after=sorted({status for _, status in after}))
    assert stale and stale[-1] <= STALE_IF_ERROR_BOUND, figures
    assert after and all(status in (502, 503) for _, status in after), figures
