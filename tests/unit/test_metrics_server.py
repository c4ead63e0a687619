"""What a part serves in multiprocess mode (infra/metrics_server.py): the sum over
its processes, and of the live gauges only those of processes still running."""

import os
import signal
import subprocess
import sys

from infra import metrics_server
from tests.support import ROOT

# A process of the part holding one pooled connection until it is killed.
HOLDS_A_CONNECTION = """
import sys
from infra import metrics
metrics.recording().POOL_IN_USE.inc()
print("holding", flush=True)
sys.stdin.read()
"""


def connections_in_use(registry):
    return sum(sample.value for family in registry.collect() for sample in family.samples
               if sample.name == "api_db_pool_connections_in_use")


def test_a_process_killed_holding_a_connection_no_longer_counts_it(tmp_path, monkeypatch):
    # A Celery child killed with SIGKILL runs no shutdown signal: nothing
    # tells the part it ended, and its gauge would say "1 in use" for ever.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setenv("METRICS_ENABLED", "true")
    child = subprocess.Popen([sys.executable, "-c", HOLDS_A_CONNECTION], cwd=ROOT, env=os.environ,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "holding\n"
        assert connections_in_use(metrics_server.registry()) == 1
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    assert connections_in_use(metrics_server.registry()) == 0
