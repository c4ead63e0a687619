"""The Helm chart (deploy/helm/api), rendered by the pinned helm and read as
manifests: no cluster. The tools come from `WITH_CHART_TOOLS=1
scripts/install-deps.sh` (make chart-test); a missing one fails the run,
never skips it."""

import functools
import subprocess

import pytest
import yaml

from tests.support import ROOT

CHART = ROOT / "deploy/helm/api"
HELM = ROOT / ".venv/bin/helm"
KUBERNETES_VALIDATE = ROOT / ".venv/bin/kubernetes-validate"
# The Kubernetes version the chart is rendered for and validated against (Chart.yaml's kubeVersion).
KUBE_VERSION = "1.32.0"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
DEFAULTS = CHART / "ci/defaults-values.yaml"


def tool(path):
    if not path.exists():
        pytest.fail(f"{path} is missing: run `WITH_CHART_TOOLS=1 scripts/install-deps.sh` (make chart-test does)")
    return str(path)


def helm(*args):
    """helm's run, whatever its outcome."""
    return subprocess.run([tool(HELM), *args], capture_output=True, text=True, timeout=60)


def template(*args):
    return helm("template", "rel", str(CHART), "--namespace", "ns", "--kube-version", KUBE_VERSION, *args)


@functools.cache
def manifests(values=DEFAULTS, *sets):
    """The rendered objects for a values file (and --set pairs), by (kind, name)."""
    run = template("-f", str(values), *[arg for pair in sets for arg in ("--set", pair)])
    assert run.returncode == 0, run.stderr
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in yaml.safe_load_all(run.stdout) if doc}


def pod_specs(objects):
    """(kind/name, pod spec) of every workload."""
    return [(f"{kind}/{name}", doc["spec"]["template"]["spec"]) for (kind, name), doc in objects.items()
            if kind in ("Deployment", "Job", "StatefulSet", "DaemonSet")]


def containers(objects):
    return [(f"{where}/{c['name']}", c) for where, spec in pod_specs(objects)
            for c in spec.get("initContainers", []) + spec["containers"]]


@pytest.fixture(params=CI_VALUES, ids=lambda path: path.name)
def every_values_file(request):
    return request.param
