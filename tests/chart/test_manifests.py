"""What the rendered manifests promise, read from them: the environment is
the one settings.py reads, probes never depend on the data tier, beat runs
once, every container is locked down, the relay finds every L1."""

import json
import re

import pytest

from tests.chart.conftest import CHART, CI_VALUES, DEFAULTS, containers, manifests, pod_specs
from tests.support import ROOT

APP_TIER = ("app", "relay", "worker", "beat", "migrate")
# What a pod of the chart's image may be told besides settings.py's names: nothing.
# nginx's environment is its template's variables (nginx/docker.conf).
NGINX_TEMPLATE_VARIABLES = set(re.findall(r"\$\{([A-Z0-9_]+)\}", (ROOT / "nginx/docker.conf").read_text()))
SECRET_KEYS = {"SECRET_KEY", "DATABASE_URL", "MIGRATE_DATABASE_URL", "REDIS_URL", "RATE_LIMIT_STORAGE_URL",
               "QUEUE_REDIS_URL"}


def settings_names():
    names = set(re.findall(r'_(?:str|int|float|bool)\("([A-Z0-9_]+)"', (ROOT / "infra/settings.py").read_text()))
    assert len(names) > 20, "the pattern no longer finds settings.py's names"
    return names


def env_names(container):
    """Each variable's name, and for one from a Secret, the Secret's key too."""
    names = set()
    for var in container.get("env", []):
        names.add(var["name"])
        ref = var.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            names.add(ref["key"])
    return names


def test_every_variable_set_is_one_settings_py_reads(every_values_file):
    objects = manifests(every_values_file)
    read = settings_names()
    for where, container in containers(objects):
        allowed = NGINX_TEMPLATE_VARIABLES if container["name"] == "nginx" else read
        assert env_names(container) - allowed == set(), where
        assert not container.get("envFrom"), f"{where}: envFrom hides what is set"


def test_nginx_is_given_every_variable_of_its_template():
    """One left out stays ${NAME} in the file nginx reads, which it refuses."""
    (nginx,) = [c for where, c in containers(manifests()) if c["name"] == "nginx"]
    assert NGINX_TEMPLATE_VARIABLES == {"APP_ADDRESS", "RATE_LIMIT_PAST_L1"}
    assert env_names(nginx) == NGINX_TEMPLATE_VARIABLES
    assert {var["name"]: var["value"] for var in nginx["env"]}["APP_ADDRESS"] == "127.0.0.1:8000"


def test_secrets_come_from_the_existing_secret_alone():
    objects = manifests()
    assert not [key for key in objects if key[0] == "Secret"]
    for where, container in containers(objects):
        for var in container.get("env", []):
            if var["name"] in SECRET_KEYS:
                ref = var["valueFrom"]["secretKeyRef"]
                assert (ref["name"], ref["key"]) == ("api-secrets", var["name"]), where
    owners = [where for where, c in containers(objects) if "MIGRATE_DATABASE_URL" in env_names(c)]
    assert owners == ["Job/rel-api-migrate/migrate"], "only the migration holds the schema owner's URL"


def test_every_setting_of_env_example_is_settable_or_accounted_for():
    example = set(re.findall(r"^([A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.MULTILINE))
    schema = json.loads((CHART / "values.schema.json").read_text())
    settable = set(schema["definitions"]["config"]["properties"])
    elsewhere = {
        # From existingSecret.
        *SECRET_KEYS,
        # The chart's own: the relay's L1s, gunicorn on loopback, the metrics directory, and
        # the image's binds (0.0.0.0:9101-9103); nginx.rateLimitPastL1.
        "L1_REFRESH_URLS", "WEB_BIND", "PROMETHEUS_MULTIPROC_DIR", "APP_METRICS_BIND", "RELAY_METRICS_BIND",
        "WORKER_METRICS_BIND", "RATE_LIMIT_PAST_L1",
        # compose's and make up's alone: passwords compose builds URLs from, its database,
        # where they listen, Prometheus, the local stack, the cluster's hosts.
        "POSTGRES_PASSWORD", "APP_DB_PASSWORD", "REDIS_PASSWORD", "POSTGRES_DB", "POSTGRES_USER", "LISTEN_HOST",
        "PORT", "PROMETHEUS_BIND", "STACK_DIR", "MONITORING", "L1_METRICS_BIND", "TCP_HOST", "TCP_TRUST",
        # The Swarm stack's own (deploy/swarm/stack.yml): the chart's are image.*, *.replicas.
        "API_IMAGE", "CONFIG_VERSION", "STACK_NAME", "APP_REPLICAS", "L1_REPLICAS", "WORKER_REPLICAS",
        "STACK_SUBNET",
    }
    assert example - settable - elsewhere == set(), "a new setting: add it to values.schema.json's config"
    assert settable <= settings_names()


def test_config_reaches_every_process_as_settings_py_parses_it():
    """YAML numbers reach templates as floats: 1048576 must not become 1.048576e+06."""
    objects = manifests(CHART / "ci/ha-external-values.yaml")
    for where, container in containers(objects):
        if container["name"] in ("app", "relay", "worker", "beat"):
            env = {var["name"]: var.get("value") for var in container["env"]}
            assert env["CACHE_MAX_VALUE_BYTES"] == "1048576", where
            assert env["CACHE_TIMEOUT"] == "0.25" and env["WEB_KEEPALIVE"] == "75", where


def probe_targets(container):
    """What each probe of a container asks for: an httpGet's path, an exec's command line."""
    targets = {}
    for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
        probe = container.get(kind)
        if probe:
            targets[kind] = probe["httpGet"]["path"] if "httpGet" in probe else " ".join(probe["exec"]["command"])
    return targets


def test_probes_ask_only_the_pods_own_processes(every_values_file):
    """/health asks PostgreSQL and Redis: a probe on it would restart every pod, and take every
    L1 out of the Service, during an outage of theirs."""
    probed = {}
    for where, container in containers(manifests(every_values_file)):
        for kind, target in probe_targets(container).items():
            assert not re.search(r"/health(?!/live)", target), f"{where} {kind}: {target}"
            assert "--check" not in target and "inspect ping" not in target, f"{where} {kind}: {target}"
            probed[(where.rsplit("/", 1)[1], kind)] = target
    live = "python -c import urllib.request as r; r.urlopen('http://127.0.0.1:8000/health/live', timeout={})"
    # No readiness probe on gunicorn: it would wait behind reads held by an unanswering
    # PostgreSQL, and unlist every pod at once; nginx's, answered by itself, decides.
    assert probed == {
        ("app", "startupProbe"): live.format(2),
        ("app", "livenessProbe"): live.format(10),
        ("nginx", "readinessProbe"): "/_l1/live",
        ("nginx", "livenessProbe"): "/_l1/live",
    }


def test_beat_runs_exactly_once_and_no_worker_runs_it():
    objects = manifests(DEFAULTS, "worker.replicas=3")
    beat = objects[("Deployment", "rel-api-beat")]
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}
    (command,) = [c["command"] for c in beat["spec"]["template"]["spec"]["containers"]]
    assert command[:4] == ["celery", "-A", "worker", "beat"]
    for where, container in containers(objects):
        line = container.get("command", []) + container.get("args", [])
        if "celery" in line:
            assert not {"-B", "--beat"} & set(line), where
    worker = objects[("Deployment", "rel-api-worker")]
    assert worker["spec"]["replicas"] == 3
    assert "worker" in worker["spec"]["template"]["spec"]["containers"][0]["command"]


def test_the_migration_is_a_hook_before_install_and_upgrade():
    job = manifests()[("Job", "rel-api-migrate")]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == ["python", "migrate.py"]


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda path: path.name)
def test_every_container_is_locked_down_and_bounded(values):
    objects = manifests(values)
    for where, spec in pod_specs(objects):
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["automountServiceAccountToken"] is False, where
    found = containers(objects)
    assert len(found) == 6  # app, nginx, relay, worker, beat, migrate
    for where, container in found:
        context = container["securityContext"]
        assert context["runAsNonRoot"] is True and context["runAsUser"] > 0, where
        assert context["readOnlyRootFilesystem"] is True, where
        assert context["allowPrivilegeEscalation"] is False, where
        assert context["capabilities"] == {"drop": ["ALL"]}, where
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, where
        for bound in ("requests", "limits"):
            assert set(container["resources"][bound]) == {"cpu", "memory"}, where
        assert not container["image"].endswith(":latest") and ":" in container["image"], where


def test_the_app_pods_have_a_disruption_budget():
    objects = manifests()
    budget = objects[("PodDisruptionBudget", "rel-api-app")]
    pods = objects[("Deployment", "rel-api-app")]["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"].items() <= pods.items()


def test_the_relay_finds_every_l1_through_the_headless_service():
    objects = manifests()
    headless = objects[("Service", "rel-api-l1")]["spec"]
    assert headless["clusterIP"] == "None" and headless["publishNotReadyAddresses"] is True
    pods = objects[("Deployment", "rel-api-app")]["spec"]["template"]["metadata"]["labels"]
    assert headless["selector"].items() <= pods.items()
    assert [(p["port"], p["targetPort"]) for p in headless["ports"]] == [(8081, "l1-refresh")]
    relay = objects[("Deployment", "rel-api-relay")]["spec"]["template"]["spec"]["containers"][0]
    urls = {var["name"]: var.get("value") for var in relay["env"]}["L1_REFRESH_URLS"]
    assert urls == "http://rel-api-l1.ns.svc.cluster.local.:8081"
    entry = objects[("Service", "rel-api")]["spec"]
    assert entry["selector"] == headless["selector"] and entry["ports"][0]["targetPort"] == "http"


def test_nginx_serves_the_repositorys_own_files():
    """The ConfigMap holds nginx/'s files byte for byte; docker.conf becomes the template the image fills in."""
    objects = manifests()
    data = objects[("ConfigMap", "rel-api-nginx")]["data"]
    for name in ("docker.conf", "http.conf", "cache.conf", "limits.conf", "errors.conf", "bound-l1-log.sh"):
        assert data[name] == (ROOT / "nginx" / name).read_text(), f"copy nginx/{name} to {CHART}/files/nginx/"
    volumes = {v["name"]: v for v in objects[("Deployment", "rel-api-app")]["spec"]["template"]["spec"]["volumes"]}
    assert {"key": "docker.conf", "path": "default.conf.template"} in volumes["nginx-templates"]["configMap"]["items"]


def test_network_policies_keep_nginx_and_the_data_tier_to_their_clients():
    objects = manifests()
    app = objects[("NetworkPolicy", "rel-api-app-ingress")]["spec"]
    by_port = {rule["ports"][0]["port"]: rule["from"] for rule in app["ingress"]}
    assert set(by_port) == {8080, 8081}  # no metrics peers by default; gunicorn's 8000 is on loopback
    assert by_port[8081] == [{"podSelector": {"matchLabels": {
        "app.kubernetes.io/name": "api", "app.kubernetes.io/instance": "rel", "app.kubernetes.io/component": "relay"}}}]
    assert objects[("NetworkPolicy", "rel-api-processes-ingress")]["spec"]["ingress"] == []
    egress = objects[("NetworkPolicy", "rel-api-egress")]["spec"]
    assert egress["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "api", "app.kubernetes.io/instance": "rel"}
    ports = [{p["port"] for p in rule["ports"]} for rule in egress["egress"]]
    assert ports == [{53}, {5432, 6379, 26379}]
    off = manifests(CHART / "ci/no-networkpolicy-values.yaml")
    assert not [key for key in off if key[0] == "NetworkPolicy"]


def test_the_ingress_is_an_example_off_by_default():
    assert not [key for key in manifests() if key[0] == "Ingress"]
    ingress = manifests(CHART / "ci/ingress-values.yaml")[("Ingress", "rel-api")]["spec"]
    backend = ingress["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "rel-api", "port": {"name": "http"}}
