"""make compose-test's Redis failover drills (run.sh runs this against its stack).

Each kills a Redis primary of docker-compose.yml with `docker kill`, lets the
Sentinels promote its replica, checks what the API promises meanwhile, then
starts the killed server again and checks that it rejoins as a replica:

- the cache: a reader through nginx never fails, L2 is DOWN for a few seconds
  only, the app and relay follow the new primary without a restart, and a
  change made after the failover is read within L2's bound (L1's for reads
  that L1 may answer);
- the state: an order placed just before the kill and one placed during the
  failover are both processed (the worker follows; the sweep queues again
  what was lost), and the rate limiter keeps answering.

Prints the figures docs/reliability.md keeps; exits non-zero on a broken promise.
Settings from run.sh: BASE_URL, PROJECT, ENV_FILE.
"""

import json
import os
import secrets
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

BASE = os.environ["BASE_URL"]
COMPOSE = ["docker-compose", "--project-name", os.environ["PROJECT"], "--env-file", os.environ["ENV_FILE"]]

READ_EVERY = 0.05  # seconds between a reader's requests: about 20 a second
L2_BOUND = 1.0  # cache/l2.py's caught-up second
L1_BOUND = 6.0  # nginx keeps an entry 5 s, counted in whole seconds
FAILOVER_WAIT = 30  # at most, for the Sentinels to name a new primary or a server to rejoin
SERVERS = {"cache": ("redis-1", "redis-2"), "state": ("redis-state-1", "redis-state-2")}
SENTINELS = ("sentinel-1", "sentinel-2", "sentinel-3")
DOWN_LIMIT = 10.0  # "a few seconds" of X-Cache-L2: DOWN, as a limit a run must stay under
SWEEP_WAIT = 90  # the sweep runs every 30 s for orders older than 30 s (infra/tasks.py)


def log(message):
    print(f"   {message}", flush=True)


def check(condition, message):
    if not condition:
        print(f"FAILED: {message}", file=sys.stderr, flush=True)
        sys.exit(1)


def compose(*args):
    return subprocess.run([*COMPOSE, *args], capture_output=True, text=True, check=True).stdout


_containers = {}


def container(service):
    """The id of ``service``'s one container, which a kill and a start keep."""
    if service not in _containers:
        _containers[service] = compose("ps", "-q", service).strip()
    return _containers[service]


def redis_cli(service, *args, port=6379):
    """redis-cli in ``service``'s container, with the stack's password (docker
    exec: a second faster than compose's, which matters when timing a failover)."""
    script = 'REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli -p "$0" --raw "$@"'
    return subprocess.run(["docker", "exec", container(service), "sh", "-c", script, str(port), *args],
                          capture_output=True, text=True, check=True).stdout.split()


def primary(role):
    """The server the Sentinels name as ``role``'s primary (its service's name)."""
    return redis_cli("sentinel-1", "sentinel", "get-master-addr-by-name", role, port=26379)[0]


def replicating_from(service):
    """The primary ``service`` replicates from, once its link is up; else None."""
    info = dict(line.split(":", 1) for line in redis_cli(service, "info", "replication") if ":" in line)
    if info.get("role") == "slave" and info.get("master_link_status") == "up":
        return info["master_host"]
    return None


def wait_for(what, condition, seconds=FAILOVER_WAIT, step=0.1):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if condition():
                return time.monotonic()
        except (subprocess.CalledProcessError, IndexError):
            pass  # a server or Sentinel that does not answer yet
        time.sleep(step)
    check(False, f"{what}: not within {seconds} s")


def ready(role):
    """Wait until ``role``'s replica replicates from its primary and every
    Sentinel knows both: a failover needs a replica to promote."""
    old = primary(role)
    replica = next(server for server in SERVERS[role] if server != old)
    wait_for(f"{replica} replicates from {old}", lambda: replicating_from(replica) == old, step=0.5)
    for sentinel in SENTINELS:
        wait_for(f"{sentinel} knows {replica}",
                 lambda: replica in redis_cli(sentinel, "sentinel", "replicas", role, port=26379), step=0.5)
    return old


def starts(services):
    """When each container last started, and how often Docker restarted it."""
    return {name: subprocess.run(["docker", "inspect", "-f", "{{.State.StartedAt}} {{.RestartCount}}",
                                  container(name)], capture_output=True, text=True, check=True).stdout
            for name in services}


def sql(query):
    script = 'psql -qAt -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d "$POSTGRES_DB" -c "$0"'
    return compose("exec", "-T", "postgres", "sh", "-c", script, query).strip()


def request(method, path, body=None, headers=None, form=False):
    """(status, headers, parsed JSON or None); status 0 when nothing answered."""
    headers = dict(headers or {})
    data = None
    if body is not None:
        data = urllib.parse.urlencode(body).encode() if form else json.dumps(body).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded" if form else "application/json"
    req = urllib.request.Request(BASE + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as response:
            return response.status, response.headers, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, error.headers, None
    except (OSError, ValueError):
        return 0, {}, None


class Reader(threading.Thread):
    """Reads one user through nginx until stopped, bounded in time: in turn
    past L1 (a query of its own each time, so only L2's bound applies) and
    at its own URI (L1 may answer)."""

    def __init__(self, user_id, seconds):
        super().__init__(daemon=True)
        self.user_id, self.deadline = user_id, time.monotonic() + seconds
        self.reads = []  # (started, kind, status, X-Cache-L2, name)
        self.stopping = threading.Event()

    def run(self):
        n = 0
        while not self.stopping.is_set() and time.monotonic() < self.deadline:
            n += 1
            kind = "past-l1" if n % 2 else "l1"
            path = f"/users/{self.user_id}" + (f"?read={n}" if kind == "past-l1" else "")
            started = time.monotonic()
            status, headers, body = request("GET", path)
            self.reads.append((started, kind, status, headers.get("X-Cache-L2"), (body or {}).get("name")))
            self.stopping.wait(READ_EVERY)

    def stop(self):
        self.stopping.set()
        self.join()


def worst_staleness(reads, kind, written, new_name):
    """The latest start, after the write's acknowledgement, of a read of ``kind`` that still saw the old name."""
    stale = [started - written for started, k, _, _, name in reads if k == kind and started > written and name != new_name]
    return max(stale, default=0.0)


def cache_drill():
    status, _, user = request("POST", "/users", {"name": "Before failover",
                                                 "email": f"failover-{secrets.token_hex(4)}@example.com"})
    check(status == 201, f"POST /users ({status})")
    processes = starts(["app", "relay", "worker"])
    reader = Reader(user["id"], seconds=60)
    reader.start()
    old = ready("cache")
    time.sleep(2)
    killed = time.monotonic()
    subprocess.run(["docker", "kill", container(old)], capture_output=True, check=True)
    promoted = wait_for("the Sentinels name a new cache primary", lambda: primary("cache") != old)
    new = primary("cache")
    log(f"cache primary {old} killed; the Sentinels named {new} {promoted - killed:.1f} s later")

    # L2 answers again (HIT or MISS) once the relay has marked the new primary caught up.
    wait_for("L2 answers again after the failover",
             lambda: any(started > promoted and l2 in ("HIT", "MISS") for started, _, _, l2, _ in reader.reads))
    time.sleep(1)
    status, _, _ = request("PUT", f"/users/{user['id']}", {"name": "After failover"})
    written = time.monotonic()
    check(status == 200, f"PUT /users/{user['id']} after the failover ({status})")
    time.sleep(L1_BOUND + 1)
    reader.stop()

    reads = reader.reads
    failed = [read for read in reads if read[2] != 200]
    # What the app said: L1 repeats the header it stored with an answer.
    down = [started for started, kind, _, l2, _ in reads if kind == "past-l1" and l2 == "DOWN"]
    down_seconds = (max(down) - min(down) + READ_EVERY) if down else 0.0
    stale_l2 = worst_staleness(reads, "past-l1", written, "After failover")
    stale_l1 = worst_staleness(reads, "l1", written, "After failover")
    log(f"{len(reads)} reads through nginx, {len(failed)} failed; {len(down)} of those past L1 answered with L2 DOWN, "
        f"over {down_seconds:.1f} s" + (f" (from {min(down) - killed:.1f} s to {max(down) - killed:.1f} s "
                                          "after the kill)" if down else ""))
    log(f"a change after the failover: the last old answer {stale_l2:.2f} s after it past L1 "
        f"(bound {L2_BOUND:.0f} s), {stale_l1:.2f} s through L1 (bound {L1_BOUND:.0f} s)")
    check(not failed, f"reads failed during the cache failover: {failed[:5]}")
    check(down_seconds <= DOWN_LIMIT, f"L2 DOWN for {down_seconds:.1f} s")
    past_l1 = [read for read in reads if read[1] == "past-l1"]
    check(past_l1[-1][0] > written + L1_BOUND, "the reader stopped before the bounds could be checked")
    check(past_l1[-1][3] in ("HIT", "MISS"), f"L2 still {past_l1[-1][3]} at the end")
    check(stale_l2 <= L2_BOUND, f"a read past L1 was stale {stale_l2:.2f} s after the change")
    check(stale_l1 <= L1_BOUND, f"a read through L1 was stale {stale_l1:.2f} s after the change")
    check(starts(["app", "relay", "worker"]) == processes, "the app, relay or worker was restarted")
    log("the app, relay and worker followed the new primary without a restart")
    rejoin(old, new, "cache")


def rejoin(old, new, role):
    """Start the killed server again: it must replicate from the new primary."""
    started = time.monotonic()
    subprocess.run(["docker", "start", container(old)], capture_output=True, check=True)
    joined = wait_for(f"{old} rejoins as a replica of {new}", lambda: replicating_from(old) == new, step=0.5)
    check(primary(role) == new, f"the {role} primary moved again when {old} came back")
    log(f"{old} started again: a replica of {new}, its link up {joined - started:.1f} s later")


def state_drill():
    email, password = f"failover-{secrets.token_hex(4)}@example.com", "failover drill password"
    status, _, _ = request("POST", "/api/user/register", {"email": email, "password": password})
    check(status == 201, f"register ({status})")
    status, _, token = request("POST", "/api/user/token/", {"username": email, "password": password}, form=True)
    check(status == 200, f"token ({status})")
    auth = {"Authorization": f"Bearer {token['access_token']}"}
    order = {"items": [{"name": "Widget", "quantity": 1, "price": 9.99}], "total_price": 9.99}
    processes = starts(["app", "worker"])

    def place():
        status, headers, body = request("POST", "/api/orders/", order, auth)
        check(status == 201, f"an order ({status})")
        return body["id"], int(headers["X-RateLimit-Remaining"])

    old = ready("state")
    before, remaining_before = place()
    killed = time.monotonic()
    subprocess.run(["docker", "kill", container(old)], capture_output=True, check=True)
    during, remaining_during = place()
    promoted = wait_for("the Sentinels name a new state primary", lambda: primary("state") != old)
    new = primary("state")
    log(f"state primary {old} killed with an order placed; the Sentinels named {new} {promoted - killed:.1f} s later")

    # The limiter: every answer through the failover either counts or refuses, never fails.
    answers = []
    while time.monotonic() < promoted + 3:
        status, headers, _ = request("GET", f"/api/orders/{before}/", headers=auth)
        answers.append((status, headers.get("X-RateLimit-Remaining")))
        time.sleep(0.5)
    log(f"orders' limit: {remaining_before} left before the kill, {remaining_during} for the order during it, "
        f"then {', '.join(str(remaining) for _, remaining in answers)}")
    check(all(status == 200 and remaining is not None for status, remaining in answers),
          f"the rate-limited reads failed across the failover: {answers}")

    for name, order_id in (("placed before the kill", before), ("placed during the failover", during)):
        done = wait_for(f"the order {name} is processed",
                        lambda: sql(f"SELECT processed_at IS NOT NULL FROM orders WHERE id = '{order_id}'") == "t",
                        seconds=SWEEP_WAIT, step=1)
        log(f"the order {name}: processed {done - killed:.0f} s after the kill")
    check(starts(["app", "worker"]) == processes, "the app or worker was restarted")
    rejoin(old, new, "state")


if __name__ == "__main__":
    cache_drill()
    state_drill()
