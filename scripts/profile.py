#!/usr/bin/env python3
"""`make profile`: where the CPU of one request goes, by process and by layer of the app.

Starts the benchmark's stack (scripts/bench.py) and, for each path below,
drives it with wrk through nginx (L1 bypassed) in two windows:

1. CPU per request of each process group (nginx workers, gunicorn workers,
   Redis, PostgreSQL), from /proc: user and system time over requests, and
   the Redis commands per request (INFO commandstats);
2. the same load while py-spy samples the gunicorn workers holding the GIL,
   so each sample is Python running; a sample belongs to the innermost
   layer of the app its stack is in (LAYERS). The workers' user time is
   split by those shares; their system time is the kernel's (sockets, epoll).

    scripts/profile.py            writes docs/profile.md
    scripts/profile.py --quick    seconds, nothing written (make test keeps it working)
"""

import argparse
import collections
import datetime
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402 (this directory's bench.py)
from bench import children, cpu_times  # noqa: E402

ROOT = bench.ROOT
# (layer, a piece of a frame's file path). A sample is the innermost frame of
# its stack that matches, in this order of precedence for one frame; frames
# of the standard library (json, socket, threading) match nothing, so they
# count for the layer that called them.
LAYERS = [
    ("metrics", "prometheus_client/"),
    ("request log", "infra/request_log.py"),
    ("proxy fix", "werkzeug/middleware/proxy_fix.py"),
    ("body reader", "infra/http.py"),
    ("route match", "werkzeug/routing/"),
    ("fast path", "cache/reads.py"),
    ("Redis client", "redis/"),
    ("Redis client", "cache/l2.py"),
    ("PostgreSQL client", "psycopg2/"),
    ("PostgreSQL client", "infra/db.py"),
    ("load and JSON", "cache/resources.py"),
    ("load and JSON", "blueprints/"),
    ("load and JSON", "infra/responses.py"),
    ("Flask", "flask/"),
    ("Flask", "flask_smorest/"),
    ("Flask", "werkzeug/"),
    ("Flask", "marshmallow/"),
    ("Flask", "bare_app.py"),
    ("gunicorn", "gunicorn/"),
    ("gunicorn", "concurrent/futures/"),
]
FRAME = re.compile(r"\((.*?):\d+\)$")


def layer_of(stack):
    """The layer of one sampled stack (frames outermost first, "function (file:line)")."""
    for frame in reversed(stack.split(";")):
        match = FRAME.search(frame)
        if match:
            for layer, piece in LAYERS:
                if piece in match.group(1):
                    return layer
    return "other"


class Scenario:
    """A path to profile: ``read(seconds)`` drives it with wrk; ``workers()``, the gunicorn workers answering it."""

    def __init__(self, name, read, workers):
        self.name, self.read, self.workers = name, read, workers


def measure(scenario, seconds, groups, cache):
    """Window 1: CPU per request of each group, Redis commands per request."""
    before = {name: cpu_times(pids()) for name, pids in groups.items()}
    commands = cache.info("commandstats")
    result = scenario.read(seconds)
    after = {name: cpu_times(pids()) for name, pids in groups.items()}
    requests = result["requests"]
    per_request = {name: tuple((a - b) * 1e6 / requests for a, b in zip(after[name], before[name])) for name in groups}
    calls = collections.Counter()
    for command, stats in cache.info("commandstats").items():
        calls[command.removeprefix("cmdstat_")] = (stats["calls"] - commands.get(command, {}).get("calls", 0)) / requests
    return result, per_request, {c: n for c, n in calls.items() if n >= 0.01}


def sample(scenario, seconds, workers, keep=None):
    """Window 2: py-spy on each worker (holding the GIL only) under the same load.
    ``keep``: a directory to copy py-spy's stacks to (one file per path and worker)."""
    with tempfile.TemporaryDirectory() as out:
        spies = [subprocess.Popen([ROOT / ".venv" / "bin" / "py-spy", "record", "--pid", pid, "--gil", "--nonblocking",
                                   "--rate", "500", "--duration", str(seconds), "--format", "raw",
                                   "--output", f"{out}/{pid}.txt"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for pid in workers]
        scenario.read(seconds)
        for spy in spies:
            spy.wait(30)
        shares = collections.Counter()
        for report in Path(out).glob("*.txt"):
            if keep:
                (Path(keep) / f"{scenario.name.replace(' ', '-').replace(',', '')}.{report.name}").write_text(
                    report.read_text())
            for line in report.read_text().splitlines():
                stack, _, count = line.rpartition(" ")
                if count.isdigit():  # not a stack py-spy read while the worker changed it (--nonblocking)
                    shares[layer_of(stack)] += int(count)
    total = sum(shares.values()) or 1
    return {layer: count / total for layer, count in shares.items()}


def markdown(results, meta):
    lines = [
        "# Where a request's CPU goes",
        "",
        f"`make profile` ({meta['mode']}), {meta['date']}, {meta['cpus']} CPUs ({meta['cpu']}), "
        f"gunicorn {meta['web']['WEB_WORKERS']} workers × {meta['web']['WEB_THREADS']} threads. "
        "How it is measured, and what the figures changed: [performance.md](performance.md#where-the-time-goes).",
        "",
        "## CPU per request, by process (µs, user + system)",
        "",
        "| path | req/s | nginx | gunicorn workers | of which kernel | Redis | PostgreSQL | Redis commands per request |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for scenario, result, cpu, calls, _ in results:
        def us(group):
            return f"{sum(cpu[group]):.0f}"
        commands = ", ".join(f"{name} {count:.2f}" for name, count in sorted(calls.items())) or "none"
        lines.append(f"| {scenario.name} | {result['rps']:,.0f} | {us('nginx')} | {us('workers')} | "
                     f"{cpu['workers'][1]:.0f} | {us('redis')} | {us('postgres')} | {commands} |")
    layers = sorted({layer for *_, shares in results for layer in shares},
                    key=lambda layer: [name for name, _ in LAYERS + [("other", "")]].index(layer))
    lines += [
        "",
        "## The gunicorn workers' user CPU per request, by layer (µs)",
        "",
        "Each layer's share of the workers' samples holding the GIL, times their user CPU per request.",
        "",
        "| layer | " + " | ".join(scenario.name for scenario, *_ in results) + " |",
        "|---|" + "---:|" * len(results),
    ]
    for layer in layers:
        cells = [f"{shares.get(layer, 0) * cpu['workers'][0]:.0f}" for _, _, cpu, _, shares in results]
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    lines.append("| **user CPU, all layers** | " + " | ".join(f"**{cpu['workers'][0]:.0f}**"
                                                         for _, _, cpu, _, _ in results) + " |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="seconds per window, nothing written to docs/")
    parser.add_argument("--keep", metavar="DIR", help="also keep py-spy's sampled stacks there (collapsed format)")
    args = parser.parse_args()
    seconds = 1 if args.quick else 8
    sys.path.insert(0, str(ROOT))
    from infra import settings  # noqa: PLC0415 (from the checkout, once its path is on sys.path)

    defaults = settings.web_settings()
    web = {"WEB_WORKERS": str(defaults["workers"]), "WEB_THREADS": str(defaults["threads"])}
    stack = bench.BenchStack(web)
    try:
        stack.up()
        users = 5000 if args.quick else 200_000
        bench.load_rows(stack, users, 1000)
        stack.bare_list_baseline()
        runner = bench.Runner(stack, seconds)
        app_workers = lambda: children((stack.dir / "app" / "gunicorn.pid").read_text().strip())  # noqa: E731
        groups = {
            "nginx": lambda: children((stack.dir / "nginx" / "nginx.pid").read_text().strip()),
            "redis": lambda: [(stack.dir / "redis" / "redis.pid").read_text().strip()],
            "postgres": lambda: children((stack.dir / "pg" / "data" / "postmaster.pid").read_text().split()[0]),
        }

        def get(path):
            return lambda seconds: runner.wrk(path, seconds=seconds)

        # Each miss window reads ids (or cursors) no window read before.
        scenarios = [
            Scenario("bare Flask, item", get("/bench/bare/users/1"), lambda: children(stack.gunicorns["bare"])),
            Scenario("L2 hit, item", get("/bench/l1off/users/1"), app_workers),
            Scenario("L2 miss, item", bench.Walk(runner, "/bench/l1off/users/", 0), app_workers),
            Scenario("bare Flask, list", get("/bench/barelist/users"), lambda: children(stack.gunicorns["barelist"])),
            Scenario("L2 hit, list", get("/bench/l1off/users"), app_workers),
            Scenario("L2 miss, list", bench.Walk(runner, "/bench/l1off/users?cursor=", users // 2), app_workers),
        ]
        cache = redis.Redis.from_url(stack.settings["REDIS_URL"])
        for path in ("/bench/l1off/users/1", "/bench/l1off/users"):
            runner.wrk(path, seconds=1)  # L2 warm
        results = []
        for scenario in scenarios:
            result, cpu, calls = measure(scenario, seconds, {**groups, "workers": scenario.workers}, cache)
            shares = sample(scenario, seconds, scenario.workers(), args.keep)
            results.append((scenario, result, cpu, calls, shares))
    finally:
        stack.down()
    meta = {"date": datetime.date.today().isoformat(), "cpus": os.cpu_count(), "cpu": bench.cpu_model(),
            "mode": "quick run" if args.quick else "full run", "web": web}
    report = markdown(results, meta)
    print(report)
    if not args.quick:
        (ROOT / "docs" / "profile.md").write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
