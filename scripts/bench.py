#!/usr/bin/env python3
"""`make bench`: what each cache level buys, each figure beside a baseline measured in the same run.

Starts its own stack on a free port (like `make test`), adds the baselines
(a plain nginx of its own serving the same bytes from a file, a bare Flask
view, an L2-less copy of the app, and a copy whose database notes no changes
for the cache relay, under the same gunicorn settings), drives load with wrk
over loopback and prints one table, also written to docs/benchmarks.md.

    scripts/bench.py                 the full run (a few minutes; 1 million rows)
    scripts/bench.py --quick         seconds: keeps the script working (make test)
    scripts/bench.py --tune          also compares gunicorn workers x threads
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psycopg2
import psycopg2.extensions

ROOT = Path(__file__).resolve().parent.parent
LUA = ROOT / "scripts" / "bench"
# The run's own wrk: one thread, so the load generator takes one core at most.
CONNECTIONS = 16


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listeners_on(port):
    """How many TCP sockets listen on ``port``, at any address (proc(5): state 0A)."""
    suffix = f":{port:04X}"
    return sum(1 for table in ("/proc/net/tcp", "/proc/net/tcp6")
               for fields in (line.split() for line in Path(table).read_text().splitlines()[1:])
               if fields[1].endswith(suffix) and fields[3] == "0A")


def children(pid):
    """The pids of a process's children."""
    return subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()


def cpu_times(pids):
    """(user, system) CPU seconds the processes have used so far (proc(5): utime, stime); gone ones count 0."""
    user = system = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        user, system = user + int(fields[11]), system + int(fields[12])
    tick = os.sysconf("SC_CLK_TCK")
    return user / tick, system / tick


def cpu_seconds(pid):
    """The CPU time a process has used so far."""
    return sum(cpu_times([pid]))


def busy_cpu_seconds():
    """The whole machine's busy CPU time so far: /proc/stat's cpu line, all but idle and iowait (proc(5))."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = (
        int(field) for field in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class BenchStack:
    """A throwaway stack plus the baselines, all behind the same nginx."""

    def __init__(self, web):
        self.dir = Path(tempfile.mkdtemp(prefix="api-bench."))
        self.dir.chmod(0o755)
        self.port = free_port()
        self.web = web  # WEB_WORKERS / WEB_THREADS for every gunicorn of the run
        self.gunicorns = {}  # baseline name -> its gunicorn master's pid
        self.env = {
            # Ports of its own, not those of a stack whose settings the caller exported (make test).
            **{name: value for name, value in os.environ.items()
               if not name.endswith("_METRICS_BIND") and name != "PROMETHEUS_BIND"},
            **web,
            "STACK_DIR": str(self.dir),
            "PORT": str(self.port),
            # Every request comes from 127.0.0.1: production limits would throttle the benchmark.
            "RATE_LIMIT_AUTH": "1000000 per minute",
            "RATE_LIMIT_ORDERS": "1000000 per minute",
            # And nginx's on what L1 cannot answer: the write rows are nothing else.
            "RATE_LIMIT_PAST_L1": "100000r/s",
            # Every list a miss row reads is stored, as the first lists of a generation are.
            "CACHE_MAX_LISTS": "1000000",
        }

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.port}"

    def up(self, growth_sizes=()):
        # The baselines' nginx locations go in first, so one `stack.sh up` starts
        # nginx with them (upstream sockets and files may appear later).
        (self.dir / "bench").mkdir()
        self._nginx_baselines(growth_sizes)
        subprocess.run([ROOT / "scripts" / "stack.sh", "up"], env=self.env, check=True, stderr=subprocess.DEVNULL)
        self.settings = dict(re.findall(r"^(\w+)='(.*)'$", (self.dir / "stack.env").read_text(), re.MULTILINE))
        body = self.get("/users/1")
        (self.dir / "bench" / "users-1.json").write_bytes(body)
        self._gunicorn("bare", "bare_app:app", {"BENCH_BODY_FILE": str(self.dir / "bench" / "users-1.json")},
                       ["--pythonpath", str(LUA)])
        self._gunicorn("nocache", "app:create_app()", {"CACHE_ENABLED": "false"})
        # The L2 hit without instrumentation: what the metrics cost.
        self._gunicorn("nometrics", "app:create_app()", {"METRICS_ENABLED": "false"})
        # The write path without change capture: no trigger, so no notice,
        # no invalidation and nothing for the relay.
        dsn = self.database("nocapture", users=1000, incidents=0)
        self._gunicorn("nocapture", "app:create_app()", {"DATABASE_URL": dsn})
        self.static_nginx()
        for size in growth_sizes:
            # One database and one L2-less app per size, so the sizes can be
            # measured in turns, as a ratio and its baseline should be.
            dsn = self.database(f"growth{size}", users=size, incidents=size)
            self._gunicorn(f"growth{size}", "app:create_app()", {"CACHE_ENABLED": "false", "DATABASE_URL": dsn})

    def bare_list_baseline(self):
        """A bare Flask view returning the bytes of the first page of users, once the table is grown."""
        (self.dir / "bench" / "users.json").write_bytes(self.get("/bench/nocache/users"))
        self._gunicorn("barelist", "bare_app:app", {"BENCH_BODY_FILE": str(self.dir / "bench" / "users.json")},
                       ["--pythonpath", str(LUA)])

    def get(self, path):
        with urllib.request.urlopen(self.base_url + path, timeout=10) as response:
            return response.read()

    def _gunicorn(self, name, app, extra_env, extra_args=()):
        sock = self.dir / "bench" / f"{name}.sock"
        # Metrics on any free port: the stack's app holds its own (infra/metrics_server.py).
        env = {**self.env, **self.settings, "APP_METRICS_BIND": "127.0.0.1:0", **extra_env, "WEB_BIND": f"unix:{sock}"}
        log = open(self.dir / "bench" / f"{name}.log", "w")
        process = subprocess.Popen(
            [ROOT / ".venv" / "bin" / "gunicorn", "-c", "gunicorn.conf.py", *extra_args, app],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.gunicorns[name] = process.pid
        deadline = time.monotonic() + 30
        while not sock.exists():
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"gunicorn {name} did not start: see {log.name}")
            time.sleep(0.1)

    def database(self, name, users, incidents):
        """A database of its own, with rows and without change capture: no
        relay serves it, and the write baseline must not pay for it."""
        self.sql(f'CREATE DATABASE "{name}" OWNER app', autocommit=True)
        dsn = psycopg2.extensions.make_dsn(self.settings["MIGRATE_DATABASE_URL"], dbname=name)
        self.sql((ROOT / "init.sql").read_text(), dsn=dsn)
        self.drop_change_capture(dsn)
        load_rows(self, users, incidents, dsn)
        return dsn

    def drop_change_capture(self, dsn):
        """A database no relay serves notes no changes (init.sql, note_cache_changes)."""
        triggers = self.sql("SELECT tgname, tgrelid::regclass::text FROM pg_trigger WHERE tgname LIKE '%%_noted_%%'", dsn=dsn)
        for name, table in triggers:
            self.sql(f'DROP TRIGGER "{name}" ON "{table}"', dsn=dsn)

    def static_nginx(self):
        """The L1 baseline: a plain nginx, nothing but a file and an access log."""
        directory = self.dir / "bench" / "static-nginx"
        directory.mkdir()
        self.static_port = free_port()
        (directory / "nginx.conf").write_text(f"""
            worker_processes auto;
            pid {directory}/nginx.pid;
            error_log {directory}/error.log;
            events {{ worker_connections 1024; }}
            http {{
                access_log {directory}/access.log;
                client_body_temp_path {directory}/tmp; proxy_temp_path {directory}/tmp;
                fastcgi_temp_path {directory}/tmp; uwsgi_temp_path {directory}/tmp; scgi_temp_path {directory}/tmp;
                server {{
                    listen 127.0.0.1:{self.static_port} reuseport;  # as the stack's own nginx listens
                    location = /users/1 {{ alias {self.dir}/bench/users-1.json; default_type application/json; }}
                }}
            }}
        """)
        subprocess.run(["nginx", "-e", str(directory / "error.log"), "-p", str(directory), "-c", str(directory / "nginx.conf")],
                       check=True)
        self.static_pidfile = directory / "nginx.pid"
        # A socket per worker (worker_processes auto): any more is another
        # process sharing the port through reuseport, and some of its load.
        if listeners_on(self.static_port) > os.cpu_count():
            raise RuntimeError(f"port {self.static_port} is shared with another process")

    def _nginx_baselines(self, growth_sizes):
        bench = self.dir / "bench"
        proxy = """
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Request-ID $api_request_id;
            add_header X-Cache-Status $api_cache_status always;
        """
        apps = ["bare", "barelist", "nocache", "nometrics", "nocapture"] + [f"growth{size}" for size in growth_sizes]
        extra = self.dir / "nginx" / "extra"
        extra.mkdir(parents=True)
        # Kept connections as the stack's own upstream keeps them (nginx/local.conf.template).
        keep = "keepalive 32; keepalive_timeout 60s; keepalive_requests 100;"
        (extra / "http-bench.conf").write_text("".join(
            f"upstream bench_{name} {{ server unix:{bench}/{name}.sock; {keep} }}\n" for name in apps
        ))
        (extra / "server-bench.conf").write_text(f"""
            location /bench/l1off/ {{ proxy_pass http://api/; {proxy} }}
        """ + "".join(f"location /bench/{name}/ {{ proxy_pass http://bench_{name}/; {proxy} }}\n" for name in apps))

    def sql(self, statement, params=(), dsn=None, autocommit=False):
        # As the schema's owner: the app's role may not create databases.
        conn = psycopg2.connect(dsn or self.settings["MIGRATE_DATABASE_URL"])
        conn.autocommit = autocommit  # CREATE DATABASE refuses to run in a transaction
        try:
            with conn.cursor() as cur:
                cur.execute(statement, params or None)  # no params: a "%" in the text is not a placeholder
                rows = cur.fetchall() if cur.description else None
            conn.commit()
            return rows
        finally:
            conn.close()

    def wait_idle(self, limit=60):
        """Wait until PostgreSQL runs no query: requests still in flight from
        the previous row (wrk stops sending, the app does not stop working)
        must not weigh on the next one."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            # As the superuser: the state of another role's sessions is hidden from the owner.
            busy = self.sql("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND pid <> pg_backend_pid()",
                            dsn=psycopg2.extensions.make_dsn(self.settings["MIGRATE_DATABASE_URL"], user="postgres"))
            if busy[0][0] == 0:
                return
            time.sleep(0.2)

    def settle(self, dsn=None):
        """After a bulk load: the relay done with its changes (the stack's own
        database), fresh statistics, and the dirty pages written out now
        (CHECKPOINT, as the cluster's superuser) rather than during a measurement."""
        deadline = time.monotonic() + 300
        while dsn is None and self.sql("SELECT count(*) FROM cache_changes")[0][0]:
            if time.monotonic() > deadline:
                raise RuntimeError("the relay did not apply the bulk load's changes within 300 s")
            time.sleep(0.5)
        conn = psycopg2.connect(dsn or self.settings["MIGRATE_DATABASE_URL"], user="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("VACUUM ANALYZE")
            cur.execute("CHECKPOINT")
        conn.close()

    def restart_relay(self, **env):
        """The stack's relay again, with ``env`` on top of the stack's settings."""
        self._stack_sh("stop", "relay")
        self._stack_sh("start", "relay", **env)
        # L2 is read again once the new relay has caught up: until then a
        # measurement would count reads from PostgreSQL.
        deadline = time.monotonic() + 30
        while self.l2_status("/bench/l1off/users/1") != "HIT":
            if time.monotonic() > deadline:
                raise RuntimeError("L2 was not read again within 30 s of the relay's restart")
            time.sleep(0.1)

    def _stack_sh(self, action, service, **env):
        """``scripts/stack.sh ACTION SERVICE``; a failure says why, with the service's last log lines."""
        result = subprocess.run([ROOT / "scripts" / "stack.sh", action, service], env={**self.env, **env},
                                capture_output=True, text=True)
        if result.returncode:
            log = self.dir / service / f"{service}.log"
            tail = log.read_text(errors="replace").splitlines()[-20:] if log.exists() else []
            raise RuntimeError("\n".join([f"stack.sh {action} {service}: {result.stderr.strip()}", *tail]))

    def l2_status(self, path):
        with urllib.request.urlopen(self.base_url + path, timeout=10) as response:
            return response.headers["X-Cache-L2"]

    def reload_nginx(self):
        """nginx with the stack's current extra files, once its new workers answer."""
        nginx = self.dir / "nginx"
        master = (nginx / "nginx.pid").read_text().strip()

        def workers():
            return set(subprocess.run(["pgrep", "-P", master, "-f", "worker process$"],
                                      capture_output=True, text=True).stdout.split())

        old = workers()
        subprocess.run(["nginx", "-q", "-e", nginx / "error.log", "-p", nginx, "-c", nginx / "nginx.conf",
                        "-s", "reload"], check=True)
        deadline = time.monotonic() + 10
        while not (workers() and workers().isdisjoint(old)):
            if time.monotonic() > deadline:
                raise RuntimeError("nginx's new workers did not start within 10 s")
            time.sleep(0.1)

    def peak_rss_mb(self, pidfile):
        """Peak resident memory (VmHWM) of each child of the process in pidfile."""
        peaks = []
        for pid in children((self.dir / pidfile).read_text().strip()):
            status = Path(f"/proc/{pid}/status").read_text()
            peaks.append(int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024)
        return peaks

    def down(self):
        if getattr(self, "static_pidfile", None) and self.static_pidfile.exists():
            os.kill(int(self.static_pidfile.read_text()), signal.SIGTERM)
        for pid in self.gunicorns.values():
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        subprocess.run([ROOT / "scripts" / "stack.sh", "reset"], env=self.env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(self.dir, ignore_errors=True)


class Runner:
    def __init__(self, stack, seconds):
        self.stack, self.seconds = stack, seconds

    def wrk(self, path, script="get.lua", seconds=None, connections=CONNECTIONS, base=None, **env):
        seconds = seconds or self.seconds
        self.stack.wait_idle()
        command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(LUA / script),
                   (base or self.stack.base_url) + path]
        result = subprocess.run(command, env={**os.environ, "BENCH_DIR": str(LUA), **env},
                                capture_output=True, text=True, timeout=seconds + 60)
        lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
        if result.returncode != 0 or not lines:
            raise RuntimeError(f"wrk failed on {path}: {result.stdout}{result.stderr}")
        return json.loads(lines[-1])

    def with_mtail(self, measure):
        """``measure()`` while nginx writes its short log and mtail turns it into
        L1's metrics, as MONITORING=1 runs them (scripts/stack.sh)."""
        log = self.stack.dir / "nginx" / "l1.log"
        conf = self.stack.dir / "nginx" / "extra" / "http-l1-log.conf"
        conf.write_text(f"access_log {log} api_l1 buffer=64k flush=1s;\n")
        self.stack.reload_nginx()
        mtail = subprocess.Popen(["mtail", "--progs", str(ROOT / "monitoring"), "--logs", str(log),
                                  "--address", "127.0.0.1", "--port", str(free_port())],
                                 env={**os.environ, "GOMAXPROCS": "1"},
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(1)  # started and reading
            before = cpu_seconds(mtail.pid)
            result = measure()
            time.sleep(1.5)  # nginx writes the log once a second, and mtail reads it all
            result["mtail_us_per_request"] = (cpu_seconds(mtail.pid) - before) * 1e6 / result["requests"]
            return result
        finally:
            mtail.terminate()
            mtail.wait(10)
            conf.unlink()
            self.stack.reload_nginx()

    def paired(self, subject, baseline, rounds=2, turns=1):
        """Alternate baseline and subject so both see the same machine: the mean
        of each, and each round's req/s ratio (the row's ratio is their median,
        so one round the machine spent elsewhere does not decide it). A round
        is ``turns`` measurements of each, alternating, and its ratio that of
        their sums: a change of the machine's pace within the round weighs on
        both alike. Every other turn measures the subject first, so neither
        always follows the other's load."""
        subjects, baselines, ratios = [], [], []
        for number in range(rounds):
            mine, theirs = [], []
            for turn in range(turns):
                pair = [(subject, mine), (baseline, theirs)]
                if (number + turn) % 2 == 0:
                    pair.reverse()
                for measure, results in pair:
                    results.append(measure())
            subjects += mine
            baselines += theirs
            ratios.append(sum(r["rps"] for r in mine) / sum(r["rps"] for r in theirs))
        return mean_of(subjects), mean_of(baselines), ratios


def mean_of(results):
    keys = ("rps", "p50_ms", "p99_ms")
    merged = {k: sum(r[k] for r in results) / len(results) for k in keys}
    merged["non_2xx"] = sum(r["non_2xx"] + r["socket_errors"] for r in results)
    return merged


def row(name, what, result, baseline=None, target=None, target_text="", key="rps", ratios=None, spread=None,
        p50_within=None):
    """One line of the table. ``spread``: the rounds must also lie within
    that share of their median; ``p50_within``: the subject's p50 within
    that multiple of its baseline's."""
    entry = {"row": name, "what": what, **result}
    if baseline is not None:
        entry["baseline"] = baseline
        if ratios:
            entry["ratio"], entry["ratio_range"] = statistics.median(ratios), (min(ratios), max(ratios))
            entry["spread"] = max(entry["ratio"] - min(ratios), max(ratios) - entry["ratio"]) / entry["ratio"]
        else:
            entry["ratio"] = result[key] / baseline[key] if key == "rps" else baseline[key] / result[key]
        entry["target"] = target_text
        entry["ok"] = entry["ratio"] >= target if target is not None else None
        if spread is not None:
            entry["ok"] = entry["ok"] is not False and entry["spread"] <= spread
        if p50_within is not None:
            entry["p50_ratio"] = result["p50_ms"] / baseline["p50_ms"]
            entry["ok"] = entry["ok"] is not False and entry["p50_ratio"] <= p50_within
    return entry


def load_rows(stack, users, incidents, dsn=None):
    """Grow users and incidents to the given sizes (bulk SQL; the count triggers see one statement)."""
    have = stack.sql("SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM incidents)", dsn=dsn)[0]
    if users > have[0]:
        stack.sql(
            """
            INSERT INTO users (name, email)
            SELECT 'Bench user ' || g, 'bench-user-' || g || '@example.com'
            FROM generate_series(%s, %s) AS g
            """,
            (have[0] + 1, users),
            dsn=dsn,
        )
    if incidents > have[1]:
        stack.sql(
            """
            INSERT INTO incidents (message, status, source)
            SELECT 'Bench incident ' || g,
                   (ARRAY['new', 'completed', 'failed'])[1 + g %% 3],
                   (ARRAY['operator', 'monitoring', 'partner'])[1 + (g / 3) %% 3]
            FROM generate_series(%s, %s) AS g
            """,
            (have[1] + 1, incidents),
            dsn=dsn,
        )
    stack.settle(dsn)


# How far a Python-tier row's rounds may lie from their median (docs/performance.md).
SPREAD = 0.15
# The first id the L2 miss row reads: past those the other rows read (the mixed load's 10,000).
FIRST_UNREAD_ID = 10_000


class Walk:
    """Reads of ``prefix``<id> for ids no earlier call read (scripts/bench/walk.lua): each a first read."""

    def __init__(self, runner, prefix, first):
        self.runner, self.prefix, self.next = runner, prefix, first

    def __call__(self, seconds=None):
        result = self.runner.wrk("", script="walk.lua", seconds=seconds, PREFIX=self.prefix, FIRST=str(self.next))
        self.next += result["requests"] + 1000  # and past any wrk sent but did not count
        return result


def cache_rows(runner, quick):
    rounds = 1 if quick else 7
    # The Python tier's rounds run twice as long as the rest, in turns of a
    # quarter of that: each averages more of a small machine's noise, and
    # those rows judge their spread.
    turns, seconds = (1, None) if quick else (4, runner.seconds // 2)
    static = lambda: runner.wrk("/users/1", base=f"http://127.0.0.1:{runner.stack.static_port}")  # noqa: E731

    def get(path):
        return lambda: runner.wrk(path, seconds=seconds)

    walk = Walk(runner, "/bench/l1off/users/", FIRST_UNREAD_ID)
    for path in ("/users/1", "/users", "/bench/bare/users/1", "/bench/barelist/users", "/bench/nocache/users/1",
                 "/bench/l1off/users/1", "/bench/l1off/users", "/bench/nocache/users"):
        runner.wrk(path, seconds=1)  # warm L1, L2 and every process before the first round
    rows = []
    l1, base, ratios = runner.paired(lambda: runner.wrk("/users/1"), static, rounds)
    rows.append(row("L1 hit", "GET /users/1 through nginx, cache warm", l1, base, 0.85,
                    "≥ 0.85 × a plain nginx serving the bytes from a file", ratios=ratios))
    spread = f"rounds within ±{SPREAD:.0%} of the median"
    l2, base, ratios = runner.paired(get("/bench/l1off/users/1"), get("/bench/bare/users/1"), rounds, turns)
    rows.append(row("L2 hit", "the same, L1 off, Redis warm", l2, base, 0.8,
                    f"≥ 0.8 × bare Flask, {spread}, p50 ≤ 2 × bare Flask's", ratios=ratios, spread=SPREAD,
                    p50_within=2))
    miss, base, ratios = runner.paired(get("/bench/nocache/users/1"), get("/bench/bare/users/1"), rounds, turns)
    rows.append(row("miss", "the same, L1 and L2 off: a PostgreSQL read by primary key", miss, base, 0.55,
                    f"≥ 0.55 × bare Flask, {spread}", ratios=ratios, spread=SPREAD))
    cold, base, ratios = runner.paired(lambda: walk(seconds), get("/bench/bare/users/1"), rounds, turns)
    rows.append(row("L2 miss", "GET /users/<id>, L1 off, each id read once: L2's lookup, PostgreSQL, L2's store",
                    cold, base, target_text="none: reported", ratios=ratios))
    for level, path in (("L2", "/bench/l1off/users"), ("miss", "/bench/nocache/users")):
        result, base, ratios = runner.paired(lambda path=path: runner.wrk(path), lambda: runner.wrk("/bench/barelist/users"),
                                             1 if quick else 5)
        rows.append(row(f"list {level}", f"GET {path} (first page, 100 rows)", result, base,
                        target_text="none: reported, against a bare Flask view of the same page", ratios=ratios))
    rows.append(row("list L1", "GET /users (first page, 100 rows)", mean_of([runner.wrk("/users")])))
    return rows


def metrics_cost_rows(runner, quick):
    """What the instrumentation costs the cache levels (docs/observability.md):
    the L2 hit with metrics against the same app with METRICS_ENABLED=false,
    and the L1 hit while nginx writes its short log and mtail reads it, against
    neither."""
    rounds = 1 if quick else 5
    l2, base, ratios = runner.paired(lambda: runner.wrk("/bench/l1off/users/1"),
                                     lambda: runner.wrk("/bench/nometrics/users/1"), rounds)
    rows = [row("metrics, L2 hit", "L2 hit with metrics on", l2, base, 0.95,
                "≥ 0.95 × the same with METRICS_ENABLED=false", ratios=ratios)]
    mtail_cpu = []

    def l1_with_mtail():
        result = runner.with_mtail(lambda: runner.wrk("/users/1"))
        mtail_cpu.append(result["mtail_us_per_request"])
        return result

    l1, base, ratios = runner.paired(l1_with_mtail, lambda: runner.wrk("/users/1"), rounds)
    cpu = statistics.mean(mtail_cpu)
    rows.append(row("metrics, L1 hit", f"L1 hit while nginx writes its short log and mtail reads it (mtail: {cpu:.1f} µs "
                    "of CPU per request)", l1, base, 0.95, "≥ 0.95 × the same without either", ratios=ratios))
    return rows


def monitor_cost_rows(runner, quick):
    """What the relay's consistency monitor (cache/monitor.py) costs the cache
    levels: the L1 and L2 hits while writes flow (so the monitor has changes
    to check: WRITES_PER_S updates of other users, as psql would make them),
    with the monitor at its default rate against the same with it off (0).
    Its reads are a peek at nginx and a GET in Redis per sampled change.
    Each round is two turns of each side: its target is within the noise of
    a round measured once."""
    rounds, turns = (1, 1) if quick else (5, 2)
    stop = threading.Event()

    def write():
        i = 0
        while not stop.is_set():
            i += 1
            runner.stack.sql("UPDATE users SET name = %s WHERE id = %s", (f"bench {i}", 2 + i % 999))
            stop.wait(1 / WRITES_PER_S)

    def relay(rate):
        def measure_with(path):
            runner.stack.restart_relay(CONSISTENCY_CHECKS_PER_S=rate)
            return runner.wrk(path)
        return measure_with

    def cpu_share(pairs, seconds):
        """The monitor's own CPU, which rounds of wrk spread too widely to see:
        the machine's busy CPU while the changes flow and no client reads,
        with the monitor on less with it off (alternating, medians), as a
        share of the machine's CPUs. Under wrk every CPU is busy, so this is
        the share of capacity the rows below can lose to it."""
        busy = {"": [], "0": []}
        for _ in range(pairs):
            for rate in busy:
                runner.stack.restart_relay(CONSISTENCY_CHECKS_PER_S=rate)
                time.sleep(3)  # past its first checks (CHECK_AFTER, cache/monitor.py, after the first changes it sees)
                started = busy_cpu_seconds()
                time.sleep(seconds)
                busy[rate].append((busy_cpu_seconds() - started) / seconds)
        return (statistics.median(busy[""]) - statistics.median(busy["0"])) / os.cpu_count()

    on, off = relay(""), relay("0")  # "": the default, as a deployment that sets nothing has it
    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        share = cpu_share(1 if quick else 3, 1 if quick else 10)
        rows = []
        for level, path in (("L1", "/users/1"), ("L2", "/bench/l1off/users/1")):
            result, base, ratios = runner.paired(lambda path=path: on(path), lambda path=path: off(path), rounds,
                                                 turns)
            rows.append(row(f"monitor, {level} hit", f"{level} hit while {WRITES_PER_S} changes/s flow, the consistency "
                            f"monitor at its default rate (its CPU, on less off with no client: {share:.2%} of the "
                            "machine's)", result, base, 0.98,
                            "≥ 0.98 × the same with CONSISTENCY_CHECKS_PER_S=0", ratios=ratios))
    finally:
        stop.set()
        writer.join()
        runner.stack.restart_relay()
    return rows


WRITES_PER_S = 20


def write_rows(runner, quick):
    run_id = str(int(time.time()))
    post = runner.wrk("/users", script="write.lua", MODE="post", RUN_ID=run_id)
    put, base, ratios = runner.paired(
        lambda: runner.wrk("/users", script="write.lua", MODE="put", IDS="1000", RUN_ID=run_id),
        lambda: runner.wrk("/bench/nocapture/users", script="write.lua", MODE="put", IDS="1000", RUN_ID=run_id),
        1 if quick else 5,
    )
    return [row("write POST", "POST /users, unique emails", mean_of([post])),
            row("write PUT", "PUT /users/<id>, ids 1..1000: change capture, invalidation, relay", put, base, 0.85,
                "≥ 0.85 × the same PUT with no change capture", ratios=ratios)]


def hot_key_row(runner, seconds):
    """What an expiring hot key costs the app: the requests for it that nginx
    sent on (MISS, EXPIRED), against those it answered itself (HIT, and
    UPDATING: the old copy while one request refreshes the entry)."""
    log = runner.stack.dir / "nginx" / "access.log"
    before = log.stat().st_size
    result = runner.wrk("/users/2", seconds=seconds)
    time.sleep(1.5)  # the access log is flushed each second
    with open(log, "rb") as lines:
        lines.seek(before)
        statuses = [json.loads(line)["cache"] for line in lines if b'"uri":"/users/2"' in line]
    reached = sum(status in ("MISS", "EXPIRED") for status in statuses)
    updating = statuses.count("UPDATING")
    entry = row("hot key", f"GET /users/2 for {seconds} s: {reached} of {len(statuses):,} requests reached the app, "
                f"{updating} got the old copy while it refreshed (an entry lives 4 s fresh + 1 s refreshing)",
                mean_of([result]))
    entry["reached_app"] = reached
    return entry


def growth_rows(runner, sizes, rounds):
    """p50 of list queries on each size's database, the sizes measured in turns."""
    seconds = max(1, runner.seconds // 2)
    queries = {
        "users, first page": lambda n: "users?page_size=100",
        "users, deep page (cursor)": lambda n: f"users?page_size=100&cursor={n - 150}",
        "incidents, status+source filter": lambda n: "incident/get?status=failed&source=partner",
        "incidents, filter, deep (cursor)": lambda n: "incident/get?status=failed&cursor=1000",
        # Few connections: at a million rows each of these requests scans the table.
        "users, deep page (page number)": lambda n: f"users?page_size=100&page={n // 100 - 1}",
    }
    rows = []
    first = sizes[0]
    for name, query in queries.items():
        connections = 2 if "page number" in name else CONNECTIONS
        runs = {size: [] for size in sizes}
        for size in sizes:  # warm-up: each database's pages into memory
            runner.wrk(f"/bench/growth{size}/{query(size)}", seconds=1, connections=connections)
        for _ in range(rounds):
            for size in sizes:
                runs[size].append(runner.wrk(f"/bench/growth{size}/{query(size)}", seconds=seconds,
                                             connections=connections))
        baseline = mean_of(runs[first])
        for size in sizes[1:]:
            figure = mean_of(runs[size])
            # The page-number row is there to show why cursors exist: no target.
            target = None if "page number" in name else 1.5
            ratio = figure["p50_ms"] / baseline["p50_ms"]
            rows.append({
                "row": "growth", "what": f"{name}: {size:,} vs {first:,} rows", **figure, "ratio": ratio,
                "series": name, "rows_in_table": size, "first_rows_in_table": first,
                "target": "p50 ≤ 1.5 × the 1,000-row figure" if target else "(shown for contrast)",
                "ok": ratio <= target if target else None, "baseline": baseline,
            })
    return rows


def zipf_row(runner, ids):
    mix = {"script": "zipf.lua", "IDS": str(ids), "READ_SHARE": "0.95"}
    # Warm up past L1's 5 s first: the measured part then shows the steady state
    # in which L1 entries expire and L2 (60 s) answers for them.
    runner.wrk("/users/1", seconds=runner.seconds * 2, **mix)
    result = runner.wrk("/users/1", seconds=runner.seconds * 3, **mix)
    entry = row("mixed", f"95 % GET / 5 % PUT /users/<id>, Zipf over {ids:,} users", mean_of([result]))
    entry["l1_hit_ratio"] = result["l1_hits"] / max(result["answered"], 1)
    entry["l2_hit_ratio"] = result["l2_hits"] / max(result["l2_seen"], 1)
    return entry


def tune(web_settings_list, seconds):
    """L2-hit and miss throughput under each gunicorn layout (each on a fresh stack)."""
    results = []
    for web in web_settings_list:
        stack = BenchStack(web)
        try:
            stack.up()
            runner = Runner(stack, seconds)
            runner.wrk("/users/1", seconds=1)
            l2 = runner.wrk("/bench/l1off/users/1")
            miss = runner.wrk("/bench/nocache/users/1")
            bare = runner.wrk("/bench/bare/users/1")
            results.append({**web, "l2_rps": l2["rps"], "miss_rps": miss["rps"], "bare_rps": bare["rps"],
                            "l2_p99_ms": l2["p99_ms"]})
        finally:
            stack.down()
    return results


def versions():
    def first_line(*command):
        try:
            result = subprocess.run(command, capture_output=True, text=True)
            return (result.stdout or result.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            return "?"

    pg = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    return {
        "python": platform.python_version(),
        "nginx": first_line("nginx", "-v"),
        "postgresql": first_line(str(pg[-1]), "--version") if pg else "?",
        "redis": first_line("redis-server", "--version"),
        "gunicorn": first_line(str(ROOT / ".venv" / "bin" / "gunicorn"), "--version"),
        "wrk": first_line("wrk", "--version"),
    }


def cpu_model():
    match = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
    return match.group(1) if match else platform.processor()


def fmt(value, digits=1):
    return f"{value:,.{digits}f}"


def markdown(rows, memory, tuning, meta):
    lines = [
        "# Benchmarks",
        "",
        f"Run of {meta['date']} on {meta['cpus']} CPUs ({meta['cpu']}), {meta['mode']}; "
        f"gunicorn {meta['web']['WEB_WORKERS']} workers × {meta['web']['WEB_THREADS']} threads (gthread). "
        f"wrk: 1 thread, {CONNECTIONS} connections, over loopback, on the same machine.",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + ".",
        "",
        "| row | what | req/s | p50 ms | p99 ms | non-2xx | baseline req/s (p50 / p99 ms) | ratio | target | |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        base = r.get("baseline")
        base_text = f"{fmt(base['rps'])} ({fmt(base['p50_ms'], 2)} / {fmt(base['p99_ms'], 2)})" if base else ""
        ratio = fmt(r["ratio"], 2) if "ratio" in r else ""
        if "ratio_range" in r:
            ratio += " ({}–{}, ±{:.0%})".format(*(fmt(v, 2) for v in r["ratio_range"]), r["spread"])
        if "p50_ratio" in r:
            ratio += f"; p50 × {r['p50_ratio']:.2f}"
        mark = {True: "met", False: "MISSED", None: ""}[r.get("ok")]
        extra = ""
        if "l1_hit_ratio" in r:
            extra = f" — L1 hit ratio {r['l1_hit_ratio']:.0%}, L2 hit ratio {r['l2_hit_ratio']:.0%}"
        lines.append(
            f"| {r['row']} | {r['what']}{extra} | {fmt(r['rps'])} | {fmt(r['p50_ms'], 2)} | {fmt(r['p99_ms'], 2)} "
            f"| {r['non_2xx']} | {base_text} | {ratio} | {r.get('target', '')} | {mark} |"
        )
    lines += ["", "A ratio with a range is the median of seven rounds (five for the list, metrics, monitor and write PUT",
              "rows), each the subject's req/s over its baseline's measured just before or after it (alternately);",
              "the range of the rounds and their farthest distance from the median follow in brackets. The rounds of",
              "the Python tier's item rows (L2 hit, miss, L2 miss) last twice as long as the others', in four turns",
              "of each, alternating, the round's ratio that of their sums; the monitor rows' rounds are two",
              "alternating turns of each, as long as another row's round. Growth ratios compare",
              "p50 latency (lower is better): the figure at that size over the 1,000-row one.",
              "", "Peak resident memory after the run (VmHWM, MiB): "
              + "; ".join(f"{name}: {', '.join(fmt(v) for v in values)}" for name, values in memory.items()) + ".",
              "", "![Each cache level against its baseline](benchmarks-levels.png)",
              "", "![List latency against table size](benchmarks-growth.png)"]
    if tuning:
        lines += ["", "## gunicorn layouts", "",
                  "| workers | threads | L2 hit req/s | miss req/s | bare Flask req/s | L2 hit p99 ms |",
                  "|---:|---:|---:|---:|---:|---:|"]
        for t in tuning:
            lines.append(f"| {t['WEB_WORKERS']} | {t['WEB_THREADS']} | {fmt(t['l2_rps'])} | {fmt(t['miss_rps'])} "
                         f"| {fmt(t['bare_rps'])} | {fmt(t['l2_p99_ms'], 2)} |")
    lines += ["", "Reproduce: `make bench` (add `ARGS=--tune` for the layouts). Benchmarks never fail a build;",
              "`make test` runs `scripts/bench.py --quick` only to keep the script working.", ""]
    return "\n".join(lines)


def plots(rows, directory):
    """PNG pictures of the run beside docs/benchmarks.md (docs/performance.md shows them):
    each cache level against its baseline, and list latency against table size."""
    import matplotlib  # noqa: PLC0415 (only when pictures are written)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    levels = [r for r in rows if r["row"] in ("L1 hit", "L2 hit", "miss")]
    baselines = {"L1 hit": "plain nginx", "L2 hit": "bare Flask", "miss": "bare Flask"}
    figure, axes = plt.subplots(1, 3, figsize=(13, 4))
    names = [r["row"] for r in levels]
    x = range(len(levels))
    for ax, key, title in zip(axes, ("rps", "p50_ms", "p99_ms"), ("req/s (higher is better)", "p50 ms", "p99 ms")):
        ax.bar([i - 0.2 for i in x], [r[key] for r in levels], 0.4, label="this API")
        ax.bar([i + 0.2 for i in x], [r["baseline"][key] for r in levels], 0.4, label="its baseline")
        ax.set_xticks(list(x), [f"{n}\nvs {baselines[n]}" for n in names])
        ax.set_title(title)
    # L1 answers some 20 times what reaches Python: on a linear scale the others would vanish.
    axes[0].set_yscale("log")
    for i, r in zip(x, levels):
        axes[0].annotate(f"× {r['ratio']:.2f}", (i, max(r["rps"], r["baseline"]["rps"])),
                         xytext=(0, 4), textcoords="offset points", ha="center")
    axes[0].margins(y=0.15)
    axes[0].legend(loc="upper right")
    figure.suptitle("Each cache level against its baseline, same run")
    figure.tight_layout()
    figure.savefig(directory / "benchmarks-levels.png", dpi=100)
    plt.close(figure)

    growth = {}
    for r in (r for r in rows if r["row"] == "growth"):
        points = growth.setdefault(r["series"], {r["first_rows_in_table"]: r["baseline"]["p50_ms"]})
        points[r["rows_in_table"]] = r["p50_ms"]
    if growth:
        figure, ax = plt.subplots(figsize=(8, 4.5))
        for name, points in growth.items():
            sizes = sorted(points)
            ax.plot(sizes, [points[size] for size in sizes], marker="o", label=name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("rows in the table")
        ax.set_ylabel("p50 ms (L1 and L2 off)")
        ax.set_title("List latency against table size")
        ax.legend(fontsize=8)
        figure.tight_layout()
        figure.savefig(directory / "benchmarks-growth.png", dpi=100)
        plt.close(figure)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny durations and sizes, nothing written to docs/")
    parser.add_argument("--tune", action="store_true", help="also compare gunicorn workers x threads")
    parser.add_argument("--output", default=None, help="where to write the markdown (default docs/benchmarks.md)")
    args = parser.parse_args()

    seconds = 1 if args.quick else 4
    sizes = [1000, 5000] if args.quick else [1000, 100_000, 1_000_000]
    sys.path.insert(0, str(ROOT))
    from infra import settings  # noqa: PLC0415 (from the checkout, once its path is on sys.path)

    defaults = settings.web_settings()
    web = {"WEB_WORKERS": str(defaults["workers"]), "WEB_THREADS": str(defaults["threads"])}
    output = Path(args.output) if args.output else (None if args.quick else ROOT / "docs" / "benchmarks.md")

    stack = BenchStack(web)
    try:
        stack.up(growth_sizes=sizes)
        runner = Runner(stack, seconds)
        mixed_users = 1000 if args.quick else 10_000
        # The L2 miss row reads ids past the mixed load's, each once.
        load_rows(stack, FIRST_UNREAD_ID + (5_000 if args.quick else 300_000), 1000)
        stack.bare_list_baseline()
        rows = cache_rows(runner, args.quick)
        rows += metrics_cost_rows(runner, args.quick)
        rows += monitor_cost_rows(runner, args.quick)
        rows += write_rows(runner, args.quick)
        rows.append(hot_key_row(runner, 3 if args.quick else 20))
        rows += growth_rows(runner, sizes, rounds=1 if args.quick else 2)
        rows.append(zipf_row(runner, mixed_users))
        memory = {"gunicorn workers": stack.peak_rss_mb("app/gunicorn.pid"),
                  "celery worker pool": stack.peak_rss_mb("worker/celery.pid")}
    finally:
        stack.down()
    tuning = []
    if args.tune:
        layouts = [(1, 4), (2, 2), (2, 4), (2, 8), (3, 2), (4, 2)]
        tuning = tune([{"WEB_WORKERS": str(w), "WEB_THREADS": str(t)} for w, t in layouts], seconds)

    meta = {"date": datetime.date.today().isoformat(), "cpus": os.cpu_count(), "cpu": cpu_model(),
            "mode": "quick run" if args.quick else "full run", "web": web, "versions": versions()}
    report = markdown(rows, memory, tuning, meta)
    print(report)
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(report)
        plots(rows, output.parent)
        print(f"written to {output.relative_to(ROOT) if output.is_relative_to(ROOT) else output}", file=sys.stderr)
    broken = [r["what"] for r in rows if r["non_2xx"]]
    if broken:  # reported, never a failure: a benchmark does not judge
        print("warning: non-2xx answers in: " + ", ".join(broken), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
