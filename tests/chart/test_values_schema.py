"""values.schema.json refuses nonsense before anything is rendered: helm
template fails, naming the key."""

import pytest

from tests.chart.conftest import DEFAULTS, template

REFUSED = {
    "app.replicas=0": "app.replicas: Must be greater than or equal to 1",
    "relay.replicas=0": "relay.replicas: Must be greater than or equal to 1",
    "worker.replicas=0": "worker.replicas: Must be greater than or equal to 1",
    # Beat runs once: not a setting at all.
    "beat.replicas=2": "Additional property replicas is not allowed",
    "image.tag=latest": "image.tag: Must not validate the schema",
    "nginx.image.tag=latest": "nginx.image.tag: Must not validate the schema",
    "image.tag=LATEST": "image.tag: Must not validate the schema",
    "image.tag=": "image.tag: Does not match pattern",
    # The version label: at most 63 characters.
    "image.tag=" + "v" * 64: "image.tag: Does not match pattern",
    # A tag or digest in the repository would render an image reference no runtime pulls.
    "image.repository=registry.example.com/api:latest": "image.repository: Must not validate the schema",
    "image.repository=registry.example.com/api@sha256:00": "image.repository: Must not validate the schema",
    "app.resources.limits.memory=-1": "app.resources.limits.memory: Must be greater than 0",
    # The chart's own labels select its pods: not to be overridden.
    "appTierPodLabels.app\\.kubernetes\\.io/component=x": "appTierPodLabels: Property name",
    "image.repository=": "image.repository: String length must be greater than or equal to 1",
    # Secrets come from existingSecret alone, under any name.
    "secretKey=s3cr3t": "Additional property secretKey is not allowed",
    "app.password=s3cr3t": "Additional property password is not allowed",
    "config.SECRET_KEY=s3cr3t": "Additional property SECRET_KEY is not allowed",
    "config.DATABASE_URL=postgresql://api:pw@db/app": "Additional property DATABASE_URL is not allowed",
    "config.REDIS_URL=redis://:pw@redis:6379/0": "Additional property REDIS_URL is not allowed",
    # Unknown keys: a typo is an error, not a silent default.
    "app.replica=3": "Additional property replica is not allowed",
    "config.CACHE_TLL=60": "Additional property CACHE_TLL is not allowed",
    # Wrong types and values settings.py or nginx would refuse at start.
    "app.replicas=two": "app.replicas: Invalid type. Expected: integer, given: string",
    "config.CACHE_TTL=sixty": "config.CACHE_TTL: Invalid type. Expected: integer, given: string",
    "config.CACHE_ENABLED=maybe": "config.CACHE_ENABLED: Invalid type. Expected: boolean, given: string",
    "config.APP_ENV=prod": "config.APP_ENV: config.APP_ENV must be one of the following",
    "config.WEB_KEEPALIVE=30": "config.WEB_KEEPALIVE: Must be greater than or equal to 61",
    "nginx.rateLimitPastL1=10/s": "nginx.rateLimitPastL1: Does not match pattern",
    "service.type=ExternalName": "service.type: service.type must be one of the following",
}


@pytest.mark.parametrize("pair", REFUSED)
def test_nonsense_is_refused_with_the_keys_name(pair):
    run = template("-f", str(DEFAULTS), "--set", pair)
    assert run.returncode != 0, f"{pair} was accepted"
    assert "values don't meet the specifications of the schema" in run.stderr
    assert REFUSED[pair] in run.stderr, run.stderr


def test_the_secret_and_the_image_have_no_defaults():
    run = template()
    assert run.returncode != 0
    for key in ("existingSecret: ", "image.repository: ", "image.tag: "):
        assert key in run.stderr, run.stderr


def test_the_defaults_themselves_are_accepted():
    """The refusals above are the schema's, not a chart that renders nothing."""
    assert template("-f", str(DEFAULTS)).returncode == 0


@pytest.mark.parametrize("pair", [
    "global.imageRegistry=registry.example.com",  # what an umbrella chart passes every subchart
    "image.repository=registry.example.com:5000/api",  # a registry's port is not a tag
    "image.tag=2acf3c8",
    "imagePullSecrets[0].name=regcred",
    "service.externalTrafficPolicy=Cluster",
])
def test_what_the_readme_lets_users_set_is_accepted(pair):
    run = template("-f", str(DEFAULTS), "--set", pair)
    assert run.returncode == 0, run.stderr
