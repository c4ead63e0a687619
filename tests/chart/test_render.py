"""helm lint --strict, and every ci/ values file rendered and validated against
the Kubernetes API's own schemas of the pinned version (kubernetes-validate,
strict: an unknown field is an error, as the API server's strict decoding)."""

import subprocess

from tests.chart.conftest import CHART, CI_VALUES, KUBE_VERSION, KUBERNETES_VALIDATE, helm, template, tool


def test_the_ci_values_cover_the_cases_that_matter():
    assert {path.name for path in CI_VALUES} >= {
        "defaults-values.yaml", "ha-external-values.yaml", "ingress-values.yaml", "in-cluster-values.yaml",
        "no-networkpolicy-values.yaml"}


def test_helm_lint_strict(every_values_file):
    run = helm("lint", "--strict", str(CHART), "-f", str(every_values_file), "--kube-version", KUBE_VERSION)
    assert run.returncode == 0, run.stdout + run.stderr


def test_manifests_are_valid_for_the_pinned_kubernetes(every_values_file, tmp_path):
    run = template("-f", str(every_values_file))
    assert run.returncode == 0, run.stderr
    rendered = tmp_path / "manifests.yaml"
    rendered.write_text(run.stdout)
    check = subprocess.run([tool(KUBERNETES_VALIDATE), "-k", KUBE_VERSION, "--strict", "--quiet", str(rendered)],
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_validator_refuses_what_the_api_server_would(tmp_path):
    """The check above can fail: a field the API does not know, and a port that is not a number."""
    run = template("-f", str(CHART / "ci/defaults-values.yaml"))
    broken = run.stdout.replace("  replicas: 1\n", "  replicas: 1\n  replica: 1\n", 1)
    broken = broken.replace("containerPort: 8080", 'containerPort: "http"', 1)
    assert broken.count("replica: 1") == 1 and 'containerPort: "http"' in broken
    rendered = tmp_path / "broken.yaml"
    rendered.write_text(broken)
    check = subprocess.run([tool(KUBERNETES_VALIDATE), "-k", KUBE_VERSION, "--strict", "--quiet", str(rendered)],
                           capture_output=True, text=True, timeout=120)
    assert check.returncode != 0
    assert "'replica' was unexpected" in check.stdout and "is not of type 'integer'" in check.stdout
