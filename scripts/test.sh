#!/usr/bin/env bash
# `make test`: lint the container files, start a throwaway stack on a free port,
# run pytest and the smoke test against it, then tear it down. A stack started
# by `make up` is never touched. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

WITH_TEST_TOOLS=1 scripts/install-deps.sh

echo "== docker-compose config"
docker-compose --env-file .env.example config -q && echo "docker-compose.yml is valid"
echo "== hadolint Dockerfile"
.venv/bin/hadolint Dockerfile && echo "Dockerfile is clean"

# Every request of the run comes from 127.0.0.1: the production limits (5 and
# 10 a minute) would throttle the suite itself. The limits are tested with
# their own settings in tests/test_orders.py.
export RATE_LIMIT_AUTH="600 per minute" RATE_LIMIT_ORDERS="600 per minute"

STACK_DIR=$(mktemp -d /tmp/api-test.XXXXXX)
PORT=$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export STACK_DIR PORT

finish() {
    local status=$?
    if [ "$status" -ne 0 ] && [ -d "$STACK_DIR" ]; then
        echo "== the test stack's last log lines ($STACK_DIR)"
        tail -n 20 "$STACK_DIR/app/app.log" "$STACK_DIR/worker/worker.log" "$STACK_DIR/nginx/error.log" 2>/dev/null || true
    fi
    scripts/stack.sh reset >/dev/null 2>&1 || true
    exit "$status"
}
trap finish EXIT

echo "== starting a throwaway stack in $STACK_DIR, nginx on port $PORT"
scripts/stack.sh up 2>&1 | grep -v '^$'

set -a
# shellcheck disable=SC1091
. "$STACK_DIR/stack.env"
set +a
export BASE_URL="http://127.0.0.1:$PORT"

echo "== pytest"
.venv/bin/pytest "$@"
echo "== test_app.sh"
./test_app.sh
echo "== scripts/bench.py --quick (keeps the benchmark working; its figures mean nothing)"
.venv/bin/python scripts/bench.py --quick | grep -E '^\| (L1 hit|L2 hit|miss|mixed) '
echo "== all checks passed"
