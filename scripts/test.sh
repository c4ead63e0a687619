#!/usr/bin/env bash
# `make test`: lint (ruff, the container files), the unit tier (tests/unit,
# no service), then two throwaway stacks on free ports: the suite (pytest,
# test_app.sh, schemathesis, bench --quick) on the first, the fault and
# security drills (tests/faults) on the second.
# `make test-unit` (scripts/test.sh unit) runs the unit tier alone, `make
# faults` (scripts/test.sh faults) the drills alone. A stack started by `make
# up` is never touched, except by `make test-app` (scripts/test.sh app), the
# inner loop: tests/app against it, in a database and a Redis db of their own.
# Exits non-zero on any failure; extra arguments go to the suite's pytest (to
# the unit tier's with `unit`).
set -euo pipefail
cd "$(dirname "$0")/.."

WHAT=all
case "${1:-}" in faults | app | unit) WHAT=$1; shift ;; esac

unit_tier() {  # in an environment of nothing but PATH and HOME: it needs no stack's settings
    env -i PATH="$PATH" HOME="$HOME" .venv/bin/pytest tests/unit -p no:cacheprovider -q "$@"
}

if [ "$WHAT" = unit ]; then
    [ -x .venv/bin/pytest ] || WITH_TEST_TOOLS=1 scripts/install-deps.sh
    unit_tier "$@"
    exit
fi

if [ "$WHAT" = app ]; then
    [ -x .venv/bin/pytest ] && command -v redis-sentinel >/dev/null || WITH_TEST_TOOLS=1 scripts/install-deps.sh
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

# The test stacks' limits are set past what any test but those of the limits
# sends, so that no verdict depends on how fast the machine sends: the app's
# per address (tests/app/test_orders.py gives them their own settings), and
# nginx's on what L1 cannot answer, which refuses a client only for sending
# limits.conf's burst faster than the rate drains it: at 100 a millisecond,
# no client through gunicorn does. tests/faults/test_security.py tests both.
UNREACHED_LIMIT="1000000 per minute"
export RATE_LIMIT_PAST_L1=100000r/s

if [ "$WHAT" = all ]; then
    echo "== ruff"
    .venv/bin/ruff check --quiet . && echo "the Python code is clean"
    echo "== docker-compose config"
    docker-compose --env-file .env.example config -q && echo "docker-compose.yml is valid"
    echo "== hadolint Dockerfile"
    .venv/bin/hadolint Dockerfile monitoring/mtail/Dockerfile && echo "the Dockerfiles are clean"
    echo "== the unit tier (tests/unit)"
    unit_tier

    export RATE_LIMIT_AUTH=$UNREACHED_LIMIT RATE_LIMIT_ORDERS=$UNREACHED_LIMIT
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
    echo "== scripts/profile.py --quick (keeps the profile working; its figures mean nothing)"
    .venv/bin/python scripts/profile.py --quick | grep -E '^\| (L2 hit, item|fast path|\*\*user) '
    stop_stack
fi

# The sign-in limit, which test_security.py meets from addresses of its own:
# reached in a few requests, and per hour, so that it holds for the whole
# drill however slow the machine. nginx's is lowered by the drill of it alone.
export RATE_LIMIT_AUTH="20 per hour" RATE_LIMIT_ORDERS=$UNREACHED_LIMIT
start_stack
echo "== fault and security drills (tests/faults)"
.venv/bin/pytest tests/faults -p no:cacheprovider -r fE | tee "$STACK_DIR/pytest.txt"
echo "== all checks passed"
