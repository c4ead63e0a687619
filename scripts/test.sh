#!/usr/bin/env bash
# `make test`: lint the container files, then two throwaway stacks on free
# ports: the suite (pytest, test_app.sh, schemathesis, bench --quick) on the
# first, the fault and security drills (tests/faults) on the second.
# `make faults` (scripts/test.sh faults) runs the drills alone. A stack started
# by `make up` is never touched, except by `make test-app` (scripts/test.sh
# app), the inner loop: tests/app against it, in a database and a Redis db of
# their own. Exits non-zero on any failure; extra arguments go to the suite's
# pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

WHAT=all
case "${1:-}" in faults | app) WHAT=$1; shift ;; esac

if [ "$WHAT" = app ]; then
    [ -x .venv/bin/pytest ] || WITH_TEST_TOOLS=1 scripts/install-deps.sh
    env=${STACK_DIR:-.stack}/stack.env
    [ -f "$env" ] && scripts/stack.sh status | grep -q '^postgres: running' ||
        { echo "test-app runs beside a running stack: make up first" >&2; exit 2; }
    set -a
    # shellcheck disable=SC1090
    . "$env"
    set +a
    exec .venv/bin/pytest tests/app -p no:cacheprovider "$@"
fi

WITH_TEST_TOOLS=1 scripts/install-deps.sh

STACK_DIR=
finish() {
    local status=$?
    if [ "$status" -ne 0 ] && [ -d "${STACK_DIR:-}" ]; then
        echo "== the test stack's last log lines ($STACK_DIR)"
        tail -n 20 "$STACK_DIR/app/app.log" "$STACK_DIR/worker/worker.log" "$STACK_DIR/nginx/error.log" 2>/dev/null || true
        # Last, where a log's tail shows it: what failed, and why.
        sed -n '/short test summary info/,$p' "$STACK_DIR/pytest.txt" 2>/dev/null || true
    fi
    [ -z "$STACK_DIR" ] || scripts/stack.sh reset >/dev/null 2>&1 || true
    exit "$status"
}
trap finish EXIT

start_stack() {  # a new stack on a free port, its settings exported
    STACK_DIR=$(mktemp -d /tmp/api-test.XXXXXX)
    PORT=$(scripts/free-port)
    export STACK_DIR PORT
    echo "== starting a throwaway stack in $STACK_DIR, nginx on port $PORT"
    # Ports of its own, not those of a stack whose settings this shell exported.
    env -u APP_METRICS_BIND -u RELAY_METRICS_BIND -u WORKER_METRICS_BIND -u L1_METRICS_BIND -u PROMETHEUS_BIND \
        scripts/stack.sh up 2>&1 | grep -v '^$'
    set -a
    # shellcheck disable=SC1091
    . "$STACK_DIR/stack.env"
    set +a
    export BASE_URL="http://127.0.0.1:$PORT"
}

stop_stack() {
    scripts/stack.sh reset >/dev/null
    STACK_DIR=
}

api_token() {  # a new account's bearer token
    local email="schemathesis-$(date +%s%N)@example.com" password="schemathesis password"
    curl -fsS -o /dev/null -H 'Content-Type: application/json' \
        -d "{\"name\": \"Schemathesis\", \"email\": \"$email\", \"password\": \"$password\"}" "$BASE_URL/api/user/register"
    curl -fsS --data-urlencode "username=$email" --data-urlencode "password=$password" "$BASE_URL/api/user/token/" |
        .venv/bin/python -c 'import json, sys; print(json.load(sys.stdin)["access_token"])'
}

if [ "$WHAT" = all ]; then
    echo "== docker-compose config"
    docker-compose --env-file .env.example config -q && echo "docker-compose.yml is valid"
    echo "== hadolint Dockerfile"
    .venv/bin/hadolint Dockerfile monitoring/mtail/Dockerfile && echo "the Dockerfiles are clean"

    # Every request of the run comes from 127.0.0.1: the production limits
    # would throttle the suite itself. The limits are tested with their own
    # settings in tests/app/test_orders.py and in the drills (test_security.py).
    export RATE_LIMIT_AUTH="600 per minute" RATE_LIMIT_ORDERS="600 per minute"
    export RATE_LIMIT_PAST_L1=1000r/s
    # Prometheus and mtail too: tests/stack/test_dashboard.py runs the dashboard's queries.
    MONITORING=1 start_stack

    echo "== pytest"
    .venv/bin/pytest tests/app tests/stack -r fE "$@" | tee "$STACK_DIR/pytest.txt"
    echo "== test_app.sh"
    ./test_app.sh
    echo "== schemathesis: every operation of /openapi.json, through nginx"
    # One worker: hypothesis is not thread-safe everywhere (a run with two
    # once died inside it, not in the API).
    report=$STACK_DIR/schemathesis.txt
    if API_TOKEN=$(api_token) .venv/bin/schemathesis --no-color --config-file tests/schemathesis.toml \
        run "$BASE_URL/openapi.json" --workers 1 >"$report" 2>&1; then
        sed -n '/^API Operations/,$p' "$report"
    else
        cat "$report"
        exit 1
    fi
    echo "== scripts/bench.py --quick (keeps the benchmark working; its figures mean nothing)"
    .venv/bin/python scripts/bench.py --quick | grep -E '^\| (L1 hit|L2 hit|miss|mixed) '
    stop_stack
fi

# The sign-in limit low enough to reach in a few seconds, high enough for the
# drills' own sign-ins; orders and nginx's limits unthrottled for the drills'
# load (test_security.py lowers nginx's for its own).
export RATE_LIMIT_AUTH="20 per minute" RATE_LIMIT_ORDERS="600 per minute"
export RATE_LIMIT_PAST_L1=1000r/s
start_stack
echo "== fault and security drills (tests/faults)"
.venv/bin/pytest tests/faults -p no:cacheprovider -r fE | tee "$STACK_DIR/pytest.txt"
echo "== all checks passed"
