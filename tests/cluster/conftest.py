"""The several-host deployment (deploy/cluster/), driven with its operator
verbs as an operator rehearsing a failure would: one cluster for the whole
run, made by the tests themselves (make cluster-test), and left as it was
found by each test (healed, started)."""

import json
import os
import subprocess
import sys
import tempfile

import pytest

from tests.support import ROOT
from tests.support.http import Client

CLUSTER = [sys.executable, str(ROOT / "deploy" / "cluster" / "cluster.py")]


class Operator:
    """The operator verbs of deploy/cluster/cluster.py, on one cluster."""

    def __init__(self, directory):
        self.env = {**os.environ, "CLUSTER_DIR": directory}

    def __call__(self, *verb):
        return subprocess.run(CLUSTER + list(verb), env=self.env, check=True, text=True, capture_output=True).stdout

    def status(self):
        return json.loads(self("status"))

    def hosts(self, role):
        return {host["name"]: host for host in self.status()["hosts"] if host["role"] == role}

    @property
    def entry(self):
        return self.status()["entry"]

    def l1(self, name):
        """The URL of host ``name``'s own nginx."""
        return f"http://{self.hosts('app')[name]['address']}"

    def app_socket(self, name):
        return f"unix:{self.env['CLUSTER_DIR']}/hosts/{name}/app/app.sock"

    def database_url(self):
        return self.status()["data_tier"]["database_url"]


@pytest.fixture(scope="session")
def cluster():
    directory = tempfile.mkdtemp(prefix="api-cluster.")
    operator = Operator(directory)
    port = subprocess.run([str(ROOT / "scripts" / "free-port")], text=True, capture_output=True, check=True).stdout
    operator("up", "--apps", "3", "--port", port.strip())
    yield operator
    operator("down")


@pytest.fixture
def entry(cluster):
    with Client(cluster.entry) as client:
        yield client
