"""Two ways to the PostgreSQL primary, measured against each other on a
running cluster: libpq's multi-host URL (``target_session_attrs=read-write``,
what the cluster uses) and HAProxy sending connections to the node whose
Patroni answers 200 on ``/primary``. One writer each, side by side, through
the same failovers: the leader SIGKILLed, then started again and rejoined.
The figure is the time from the kill to each writer's first acknowledged
write (docs/topology.md keeps them).

    python deploy/cluster/measure_routes.py [--runs 3]     (CLUSTER_DIR as for cluster.py)

HAProxy runs for the measurement only, on 127.0.0.1, from CLUSTER_DIR/haproxy.
"""

import argparse
import os
import subprocess
import sys
import threading
import time

import psycopg2

from cluster import ROOT, Cluster
from datatier import PATRONI_PORT, PG_PORT, stop_pidfile, wait_for

WRITES_PER_SECOND = 10

HAPROXY = """global
    maxconn 100
defaults
    mode tcp
    timeout connect 1s
    timeout client 1m
    timeout server 1m
    timeout check 1s
listen primary
    bind 127.0.0.1:{port}
    # The node whose Patroni says it is the primary; connections to a node
    # that stops being it are closed at once.
    option httpchk GET /primary
    http-check expect status 200
    default-server inter 1s fall 2 rise 1 on-marked-down shutdown-sessions
{servers}
"""


class Writer(threading.Thread):
    """Inserts a row at a stated rate over one connection, opened again after any error."""

    def __init__(self, dsn):
        super().__init__()
        self.dsn, self.acked, self.stopping = dsn, [], threading.Event()

    def run(self):
        conn = None
        while not self.stopping.wait(1 / WRITES_PER_SECOND):
            try:
                if conn is None:
                    conn = psycopg2.connect(self.dsn, connect_timeout=1)
                    conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute("INSERT INTO route_probe VALUES (now())")
                self.acked.append(time.monotonic())
            except psycopg2.Error:
                if conn is not None:
                    conn.close()
                conn = None

    def first_after(self, moment):
        return next((t - moment for t in self.acked if t > moment), None)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default=os.environ.get("CLUSTER_DIR", ROOT / ".cluster"))
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    cluster = Cluster(args.dir)
    if cluster.state is None:
        sys.exit(f"no cluster in {cluster.dir}: up first")
    data = cluster.data_tier
    port = subprocess.run([str(ROOT / "scripts" / "free-port")], text=True, capture_output=True,
                          check=True).stdout.strip()
    directory = cluster.dir / "haproxy"
    directory.mkdir(exist_ok=True)
    servers = "".join(f"    server {name} {data.address(name)}:{PG_PORT} check port {PATRONI_PORT}\n"
                      for name in data.PG_HOSTS)
    (directory / "haproxy.cfg").write_text(HAPROXY.format(port=port, servers=servers))
    subprocess.run(["haproxy", "-D", "-f", str(directory / "haproxy.cfg"), "-p", str(directory / "pid")], check=True)
    libpq_url = data.database_url("app")
    haproxy_url = f"postgresql://app@127.0.0.1:{port}/app"
    try:
        with psycopg2.connect(libpq_url) as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS route_probe (at timestamptz)")
        conn.close()
        results = []
        for run in range(args.runs):
            wait_for(data.pg_whole, 120, "the PostgreSQL cluster to be whole")
            writers = {"libpq multi-host": Writer(libpq_url), "HAProxy /primary": Writer(haproxy_url)}
            for writer in writers.values():
                writer.start()
            time.sleep(3)
            leader = data.pg_leader()
            killed = time.monotonic()
            cluster.kill(leader)
            wait_for(lambda: all(w.first_after(killed) is not None for w in writers.values()), 120,
                     "both writers to write again")
            time.sleep(1)
            for writer in writers.values():
                writer.stopping.set()
                writer.join()
            figures = {name: round(writer.first_after(killed), 2) for name, writer in writers.items()}
            results.append(figures)
            print(f"run {run + 1}: {leader} SIGKILLed; first acknowledged write after {figures}", flush=True)
            cluster.start(leader)
        wait_for(data.pg_whole, 120, "the PostgreSQL cluster to be whole")
        with psycopg2.connect(libpq_url) as conn, conn.cursor() as cur:
            cur.execute("DROP TABLE route_probe")
        conn.close()
        for name in results[0]:
            values = [run[name] for run in results]
            print(f"{name}: {min(values)}-{max(values)} s over {len(values)} runs ({values})")
    finally:
        stop_pidfile(directory / "pid")


if __name__ == "__main__":
    main()
