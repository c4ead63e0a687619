#!/usr/bin/env bash
# `make compose-test`: docker-compose.yml and the Dockerfile, run for real.
# Starts dockerd if none answers (and stops only the one it started, putting
# back iptables and ip_forward), builds the stand-ins where no image exists
# (README.md here), brings the stack up on a free loopback port, waits for
# health, runs test_app.sh through nginx, checks that a change made with psql
# reaches L1 through the relay, that the app's processes connect with a role
# that may not change the schema, that `down` keeps the data and `down -v`
# resets it, that a volume of the release before migrations is upgraded in
# place, that an app scaled to three gets traffic on each and one recreated
# alone is answered again, that the monitoring profile's Prometheus scrapes
# every part, and leaves nothing running.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
# start_engine, stop_engine, log
. scripts/lib/docker-engine.sh

WORK=$(mktemp -d /tmp/compose-test.XXXXXX)
PROJECT=apicomposetest

compose() { docker-compose --project-name "$PROJECT" --env-file "$WORK/env" "$@"; }

finish() {
    local status=$?
    if [ "$status" -ne 0 ] && [ -f "$WORK/env" ]; then
        log "the stack's last log lines"
        compose ps || true
        compose logs --tail 30 || true
    fi
    [ -f "$WORK/env" ] && compose --profile monitoring down -v --remove-orphans >/dev/null 2>&1 || true
    stop_engine "$WORK"
    rm -rf "$WORK"
    exit "$status"
}
trap finish EXIT

wait_healthy() {  # every service with a healthcheck healthy, the one-shot migrate exited 0
    local deadline=$((SECONDS + 180)) unhealthy
    while [ $SECONDS -lt $deadline ]; do
        unhealthy=0
        for id in $(compose ps -q); do
            state=$(docker inspect -f '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}} {{.State.ExitCode}}' "$id")
            case "$state" in
                "running healthy "* | "running  "* | "exited  0") ;;  # healthy, no healthcheck, or done
                *) unhealthy=1 ;;
            esac
        done
        [ "$unhealthy" = 0 ] && return
        sleep 2
    done
    echo "the stack did not become healthy in 180 s" >&2
    return 1
}

api() { curl -fsS "http://127.0.0.1:$PORT$1" "${@:2}"; }

WITH_DOCKER=1 scripts/install-deps.sh
start_engine "$WORK"
scripts/compose-test/build-standins.sh

PORT=$(scripts/free-port)
PROMETHEUS_PORT=$(scripts/free-port)
secret() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
cat >"$WORK/env" <<ENV
SECRET_KEY=$(secret)$(secret)
POSTGRES_PASSWORD=$(secret)
APP_DB_PASSWORD=$(secret)
REDIS_PASSWORD=$(secret)
PORT=$PORT
PROMETHEUS_BIND=127.0.0.1:$PROMETHEUS_PORT
# The failover drill's orders and their reads come within a minute of test_app.sh's.
RATE_LIMIT_ORDERS=100 per minute
ENV

log "docker compose up --build (nginx on 127.0.0.1:$PORT)"
compose up -d --build >"$WORK/up.log" 2>&1 || { tail -40 "$WORK/up.log"; exit 1; }
wait_healthy
log "published on loopback only"
[ "$(docker port "$(compose ps -q nginx)" 8080)" = "127.0.0.1:$PORT" ]
log "test_app.sh through nginx"
BASE_URL="http://127.0.0.1:$PORT" ./test_app.sh

log "the app, relay and worker connect as api, which may not change the schema"
sql() { compose exec -T postgres sh -c 'psql -qAt -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d "$POSTGRES_DB" "$@"' sh "$@"; }
[ "$(sql -c "SELECT string_agg(DISTINCT usename, ',') FROM pg_stat_activity WHERE application_name IN ('api', 'cache-relay')")" = api ]
! compose exec -T app python -c 'import os, psycopg2; psycopg2.connect(os.environ["DATABASE_URL"]).cursor().execute("CREATE TABLE loot (x int)")' 2>"$WORK/refused.txt"
grep -q InsufficientPrivilege "$WORK/refused.txt"

log "a change made with psql reaches L1 within 2 s (the relay's refresh through nginx's port 8081)"
id=$(api /users -X POST -H 'Content-Type: application/json' -d '{"name":"Before","email":"l1@example.com"}' |
    .venv/bin/python -c 'import json, sys; print(json.load(sys.stdin)["id"])')
api "/users/$id" >/dev/null
api "/users/$id" -D - -o /dev/null | grep -qi '^X-Cache-Status: HIT'
sql -c "UPDATE users SET name = 'After' WHERE id = $id"
sleep 2  # L1 alone would keep "Before" for up to 5 s
api "/users/$id" | grep -q '"name":"After"'

log "Redis fails over: each primary killed while in use, the Sentinels promote its replica, it rejoins (failover.py)"
BASE_URL="http://127.0.0.1:$PORT" PROJECT=$PROJECT ENV_FILE=$WORK/env .venv/bin/python scripts/compose-test/failover.py

log "profile monitoring: Prometheus scrapes the app, relay, worker and mtail (Grafana: README.md here)"
compose --profile monitoring up -d --build mtail prometheus >>"$WORK/up.log" 2>&1 || { tail -40 "$WORK/up.log"; exit 1; }
[ "$(docker port "$(compose ps -q prometheus)" 9090)" = "127.0.0.1:$PROMETHEUS_PORT" ]
prometheus() { curl -fsS "http://127.0.0.1:$PROMETHEUS_PORT/api/v1/$1" "${@:2}"; }
deadline=$((SECONDS + 60))
until prometheus targets 2>/dev/null | .venv/bin/python -c '
import json, sys
up = {t["labels"]["job"] for t in json.load(sys.stdin)["data"]["activeTargets"] if t["health"] == "up"}
sys.exit(up != {"app", "relay", "worker", "l1"})'; do
    [ $SECONDS -lt $deadline ] || { prometheus targets; echo "Prometheus did not see every target up in 60 s" >&2; exit 1; }
    sleep 2
done
api /users/1 >/dev/null && api /users/1 >/dev/null  # an L1 hit, read by mtail from nginx's short log
until prometheus query --data-urlencode 'query=sum(nginx_l1_requests_total{cache="HIT"}) > 0' | grep -q '"value"'; do
    [ $SECONDS -lt $deadline ] || { echo "no L1 hit reached Prometheus in 60 s" >&2; exit 1; }
    sleep 2
done
compose --profile monitoring rm -fsv mtail prometheus >/dev/null 2>&1

log "down keeps the data"
api /users -X POST -H 'Content-Type: application/json' -d '{"name":"Kept","email":"kept@example.com"}' >/dev/null
# The images' anonymous volumes (the Redis images' /data), which down alone
# would leave behind: removed with their containers.
anonymous=$(docker inspect -f '{{range .Mounts}}{{if eq .Type "volume"}}{{println .Name}}{{end}}{{end}}' \
    $(compose ps -aq) | grep -E '^[0-9a-f]{64}$' || true)
compose down >/dev/null 2>&1
[ -z "$anonymous" ] || docker volume rm $anonymous >/dev/null
compose up -d >/dev/null 2>&1
wait_healthy
api "/users?page_size=1000" -H 'Cache-Control: no-cache' | grep -q kept@example.com

log "down -v resets to the seed rows"
compose down -v >/dev/null 2>&1
compose up -d >/dev/null 2>&1
wait_healthy
users=$(api "/users?page_size=1000" -H 'Cache-Control: no-cache')
# (Not `! grep`: set -e ignores a negated status, so that line could never fail.)
if grep -q kept@example.com <<<"$users"; then echo "down -v kept a row" >&2; exit 1; fi
for seed in Alice Bob Charlie; do grep -q "\"$seed\"" <<<"$users"; done

log "a volume of the release before migrations is upgraded by compose up, every row kept"
compose down -v >/dev/null 2>&1
compose up -d postgres >/dev/null 2>&1
wait_healthy
sql <tests/fixtures/init-before-migrations.sql >/dev/null
# That release kept an account as a user with a password hash.
hash=$(.venv/bin/python -c 'from werkzeug.security import generate_password_hash; print(generate_password_hash("an old password"))')
sql -v hash="$hash" <<<"INSERT INTO users (name, email, password_hash) VALUES ('Old', 'old@example.com', :'hash')"
compose up -d >/dev/null 2>&1
wait_healthy
# Every migration of migrations/ applied, in order.
[ "$(sql -c "SELECT string_agg(migration_id, ',' ORDER BY migration_id) FROM _yoyo_migration")" = \
    "$(cd migrations && ls -- *.sql | sed 's/\.sql$//' | paste -sd,)" ]
api /api/user/token/ --data-urlencode username=old@example.com --data-urlencode 'password=an old password' | grep -q access_token
users=$(api "/users?page_size=1000" -H 'Cache-Control: no-cache')
if grep -q old@example.com <<<"$users"; then echo "the migration left the old account among the users" >&2; exit 1; fi
for seed in Alice Bob Charlie; do grep -q "\"$seed\"" <<<"$users"; done

log "app scaled to three: nginx sends to each (nginx/follow-app-addresses.sh)"
compose up -d --no-recreate --scale app=3 >/dev/null 2>&1
wait_healthy
sleep 3  # nginx follows the addresses every 2 s
for n in $(seq 60); do  # each a new URI, past L1; the request id marks it in the app's log
    api "/users?page_size=1&page=$n" -H "X-Request-ID: spread-$n" >/dev/null
done
for id in $(compose ps -q app); do
    served=$(docker logs "$id" 2>&1 | grep -c '"request_id": "spread-' || true)
    echo "   container ${id:0:12} served $served of 60"
    [ "$served" -gt 0 ]
done

log "app recreated alone and back to one: every read answered again within 10 s"
compose up -d --no-deps --force-recreate --scale app=1 app >/dev/null 2>&1
wait_healthy
answered=0
deadline=$((SECONDS + 10))
while [ "$answered" -lt 20 ]; do
    if api "/users?page_size=1&page=$RANDOM$RANDOM" >/dev/null 2>&1; then answered=$((answered + 1)); else answered=0; fi
    [ $SECONDS -lt $deadline ] || { echo "reads still failed 10 s after the app was recreated" >&2; exit 1; }
done

log "compose-test passed"
