"""Settings and containers, read from the files: every variable documented,
secrets without usable defaults, nothing running as root."""

import functools
import re
import subprocess

import pytest
import yaml

from app import create_app
from cache.l2 import CAUGHT_UP_SECONDS
from infra import redis_url
from tests.support import ROOT


def documented():
    text = (ROOT / ".env.example").read_text()
    return set(re.findall(r"^([A-Z0-9_]+)=", text, re.MULTILINE))


def test_every_variable_the_code_reads_is_in_env_example():
    read = set(re.findall(r'_(?:str|int|float|bool)\("([A-Z0-9_]+)"', (ROOT / "infra/settings.py").read_text()))
    for stack in ("docker-compose.yml", "deploy/swarm/stack.yml", "deploy/swarm/publish.yml"):
        read |= set(re.findall(r"\$\{([A-Z0-9_]+)", (ROOT / stack).read_text()))
    read |= set(re.findall(r"^([A-Z0-9_]+)=\$\{\1:-", (ROOT / "scripts/stack.sh").read_text(), re.MULTILINE))
    assert read, "found no variables: the patterns above are out of date"
    assert read - documented() == set()


@pytest.mark.parametrize("secret", ["", "change-me-in-production", "too-short"])
def test_production_refuses_a_missing_or_example_secret(secret):
    with pytest.raises(RuntimeError, match="SECRET_KEY"):
        create_app({"APP_ENV": "production", "SECRET_KEY": secret})


@functools.cache
def compose_services():
    """docker-compose.yml as compose resolves it (anchors and .env.example applied), read once."""
    text = subprocess.run(
        ["docker-compose", "--env-file", ".env.example", "config"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return yaml.safe_load(text)["services"]


def test_no_container_runs_as_root_and_redis_wants_a_password():
    services = compose_services()
    dockerfile_users = re.findall(r"^USER\s+(\S+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert dockerfile_users and dockerfile_users[-1].split(":")[0] not in ("root", "0")
    for name in ("app", "worker", "relay", "migrate"):  # the Dockerfile's user
        assert "build" in services[name] and "user" not in services[name]
    for name in redis_servers(services) + sentinels(services):
        assert services[name]["user"] == "redis", name
    assert services["nginx"]["image"].startswith("nginxinc/nginx-unprivileged:")
    # The postgres image starts as root only to drop to its postgres user.
    assert services["postgres"]["image"].startswith("postgres:")
    # Published: nginx, and the monitoring profile's Prometheus and Grafana,
    # which have no sign-in, on loopback only (as .env.example has it).
    published = {name: service["ports"] for name, service in services.items() if "ports" in service}
    assert set(published) == {"nginx", "prometheus", "grafana"}
    assert all(port.startswith("127.0.0.1:") for ports in published.values() for port in ports)
    mtail_users = re.findall(r"^USER\s+(\S+)", (ROOT / "monitoring/mtail/Dockerfile").read_text(), re.MULTILINE)
    assert mtail_users and mtail_users[-1].split(":")[0] not in ("root", "0")


def test_compose_passes_every_setting_the_app_reads():
    """Before, ten settings of .env did nothing in compose: it passed twelve."""
    read = set(re.findall(r'_(?:str|int|float|bool)\("([A-Z0-9_]+)"', (ROOT / "infra/settings.py").read_text()))
    # The Dockerfile binds gunicorn and the metrics servers to 0.0.0.0 inside their containers.
    image_sets = {"WEB_BIND", "APP_METRICS_BIND", "RELAY_METRICS_BIND", "WORKER_METRICS_BIND"}
    migrate_only = {"MIGRATE_DATABASE_URL"}
    multiprocess = {"PROMETHEUS_MULTIPROC_DIR"}  # the app's and worker's, each on a tmpfs of its own
    services = compose_services()
    assert read - image_sets - multiprocess - set(services["migrate"]["environment"]) == set()
    for name in ("app", "relay", "worker"):
        unset = read - image_sets - migrate_only - set(services[name]["environment"])
        assert unset == (set() if name in ("app", "worker") else multiprocess), name
    for name in ("app", "worker"):
        assert services[name]["tmpfs"] == [services[name]["environment"]["PROMETHEUS_MULTIPROC_DIR"]]


def test_the_swarm_stack_passes_what_compose_passes():
    """Every documented setting works in every stack: the Swarm stack's
    processes get the same variables as compose's (its L1s refreshed through
    tasks.l1, not one nginx; beat a service of its own, which reads them too)."""
    stack = yaml.safe_load((ROOT / "deploy/swarm/stack.yml").read_text())["services"]
    services = compose_services()
    for name in ("migrate", "app", "relay", "worker"):
        assert set(stack[name]["environment"]) - {"PROMETHEUS_MULTIPROC_DIR"} == \
            set(services[name]["environment"]) - {"PROMETHEUS_MULTIPROC_DIR"}, name
    assert stack["beat"]["environment"] == stack["worker"]["environment"]
    assert "MIGRATE_DATABASE_URL" not in stack["app"]["environment"]


def test_only_the_migration_holds_the_schema_owners_password():
    """The app, relay and worker connect as a role with rows only; a process
    of theirs taken over cannot read the owner's password from its environment."""
    services = compose_services()
    owners = re.search(r"^POSTGRES_PASSWORD=(.+)$", (ROOT / ".env.example").read_text(), re.MULTILINE).group(1)
    assert owners in services["migrate"]["environment"]["MIGRATE_DATABASE_URL"]
    for name in ("app", "relay", "worker", "nginx"):
        environment = services[name].get("environment", {})
        assert "MIGRATE_DATABASE_URL" not in environment, name
        assert not any(owners in str(value) for value in environment.values()), name


def test_app_relay_and_worker_start_after_the_migration():
    services = compose_services()
    assert services["migrate"]["command"] == ["python", "migrate.py"]
    for name in ("app", "relay", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_no_secret_is_committed():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    assert ".env" not in tracked
    example = (ROOT / ".env.example").read_text()
    for name in ("SECRET_KEY", "POSTGRES_PASSWORD", "APP_DB_PASSWORD", "REDIS_PASSWORD"):
        value = re.search(rf"^{name}=(.*)$", example, re.MULTILINE).group(1)
        assert value == "" or "change" in value.lower() or "example" in value.lower(), name


def redis_servers(services):
    return [name for name, service in services.items() if "redis-server.sh" in " ".join(service.get("command", []))]


def sentinels(services):
    return [name for name, service in services.items() if "sentinel.sh" in " ".join(service.get("command", []))]


def test_every_redis_and_sentinel_wants_the_password():
    """Servers ask for it and give it to their primary; Sentinels ask for it
    and give it to the servers (the app's URL has one password for both)."""
    server = (ROOT / "deploy/compose/redis-server.sh").read_text()
    sentinel = (ROOT / "deploy/compose/sentinel.sh").read_text()
    assert '--requirepass "$REDIS_PASSWORD" --masterauth "$REDIS_PASSWORD"' in server
    assert 'echo "requirepass $REDIS_PASSWORD"' in sentinel
    assert 'echo "sentinel auth-pass $service $REDIS_PASSWORD"' in sentinel


def test_sentinels_wait_longer_than_l2s_caught_up_mark():
    """A "caught up" replicated from the old primary has expired before its replica is promoted."""
    sentinel = (ROOT / "deploy/compose/sentinel.sh").read_text()
    down_after = int(re.search(r"down-after-milliseconds \$service (\d+)", sentinel).group(1))
    assert down_after >= CAUGHT_UP_SECONDS * 1000


def test_every_redis_client_finds_its_primary_through_every_sentinel():
    """Each role has a primary and a replica, the Sentinels watch both roles,
    and the app's three URLs name every Sentinel and a role they watch."""
    services = compose_services()
    watched = {}
    for name in sentinels(services):
        roles = dict(pair.split("=") for pair in services[name]["environment"]["WATCH"].split())
        assert watched in ({}, roles), name
        watched = roles
    assert len(sentinels(services)) == 3 and set(watched) == {"cache", "state"}
    for role, first in watched.items():
        members = [name for name in redis_servers(services) if services[name]["environment"]["SERVICE"] == role]
        assert len(members) == 2 and first in members, role
        assert {services[name]["environment"]["PRIMARY"] for name in members} == {first}, role
    for name in ("app", "relay", "worker"):
        environment = services[name]["environment"]
        for setting, role in (("REDIS_URL", "cache"), ("RATE_LIMIT_STORAGE_URL", "state"), ("QUEUE_REDIS_URL", "state")):
            parts = redis_url.sentinel_of(environment[setting])
            assert parts is not None and parts.service == role, (name, setting)
            assert {host for host, _ in parts.sentinels} == set(sentinels(services)), (name, setting)
        for sentinel in sentinels(services):
            assert services[name]["depends_on"][sentinel] == {"condition": "service_healthy"}, name
