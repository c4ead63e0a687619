#!/usr/bin/env bash
# The local stack without Docker: PostgreSQL, Redis, gunicorn, the Celery
# worker, the cache relay and nginx, each
# started in the background from one directory of its own (STACK_DIR).
#
#   scripts/stack.sh up       start what is not running; returns once the API answers
#   scripts/stack.sh down     stop everything, keep the data
#   scripts/stack.sh reset    stop everything and delete the data
#   scripts/stack.sh status   what is running
#   scripts/stack.sh stop|start SERVICE
#                             one of postgres, redis, redis-state, app, relay, worker, nginx (fault drills;
#                             `start app` reloads running workers, like `up`); `start migrate` runs migrate.py
#
# Only nginx listens on TCP (LISTEN_HOST:PORT); the others use unix sockets
# inside STACK_DIR, so several stacks never collide on a port. With TCP_HOST
# (a host of the several-host deployment, deploy/cluster/), PostgreSQL
# (5432) and the two Redis (6379, 6380) also listen on that address, and
# PostgreSQL trusts the network TCP_TRUST (a CIDR) there.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
STACK_DIR=${STACK_DIR:-$ROOT/.stack}
PORT=${PORT:-80}
LISTEN_HOST=${LISTEN_HOST:-127.0.0.1}
TCP_HOST=${TCP_HOST:-}
TCP_TRUST=${TCP_TRUST:-}
VENV=$ROOT/.venv

PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
REDIS_SOCK=$STACK_DIR/redis/redis.sock
STATE_REDIS_SOCK=$STACK_DIR/redis-state/redis.sock
APP_SOCK=$STACK_DIR/app/app.sock

log() { printf '%s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# PostgreSQL refuses to run as root: as root, its files belong to "postgres".
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# Where PostgreSQL keeps its data: inside STACK_DIR when the postgres user can
# reach it, else (a checkout under /root, say) in a directory named after it.
pg_dir() {
    if [ -f "$STACK_DIR/pg-dir" ]; then cat "$STACK_DIR/pg-dir"; return; fi
    local dir=$STACK_DIR/pg
    if [ "$(id -u)" -eq 0 ] && ! runuser -u postgres -- test -x "$STACK_DIR"; then
        dir=/var/tmp/api-stack-$(printf '%s' "$STACK_DIR" | md5sum | cut -c1-12)
    fi
    printf '%s' "$dir" >"$STACK_DIR/pg-dir"
    printf '%s' "$dir"
}

more_lines_than() {  # more_lines_than N PATTERN FILE
    [ "$(grep -c "$2" "$3" 2>/dev/null || true)" -gt "$1" ]
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local seconds=$1 what=$2
    shift 2
    for _ in $(seq $((seconds * 10))); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    die "$what did not start in ${seconds}s"
}

# Rate-limit counters and Celery's queue: on the state Redis, never evicted.
# Added to a stack.env written before there was one.
state_redis_env() {
    echo "RATE_LIMIT_STORAGE_URL='unix://$STATE_REDIS_SOCK?db=0'"
    echo "QUEUE_REDIS_URL='unix://$STATE_REDIS_SOCK?db=1'"
}

# The app's role (api) may only read and write rows; the schema's owner (app)
# runs migrate.py, which gives api its rights. A stack.env written before api
# existed connected as app: it gets both lines anew.
database_env() {
    local pg_sock_dir
    pg_sock_dir=$(pg_dir)/run
    echo "DATABASE_URL='postgresql:///app?host=$pg_sock_dir&user=api'"
    echo "MIGRATE_DATABASE_URL='postgresql:///app?host=$pg_sock_dir&user=app'"
}

# Where the app, relay and worker serve their Prometheus metrics
# (infra/metrics_server.py), mtail L1's, and Prometheus itself (MONITORING=1): as
# the environment of `make up` says, or else loopback ports free when the
# stack was made, so that stacks side by side (make up's, make test's) never
# collide. Added to an older stack.env.
MONITORING_BINDS="APP_METRICS_BIND RELAY_METRICS_BIND WORKER_METRICS_BIND L1_METRICS_BIND PROMETHEUS_BIND"
metrics_env() {  # metrics_env ENV-FILE: the lines it lacks
    local name
    for name in $MONITORING_BINDS; do
        grep -q "^$name=" "$1" 2>/dev/null ||
            echo "$name='${!name:-127.0.0.1:$("$ROOT/scripts/free-port")}'"
    done
}

write_env() {
    local env=$STACK_DIR/stack.env
    if [ -f "$env" ]; then
        # Before QUEUE_REDIS_URL, the queue was CELERY_BROKER_URL, in kombu's spelling.
        if ! grep -q '^QUEUE_REDIS_URL=' "$env"; then
            sed -i '/^RATE_LIMIT_STORAGE_URL=/d; /^CELERY_BROKER_URL=/d' "$env"
            state_redis_env >>"$env"
        fi
        local name
        for name in $MONITORING_BINDS; do  # set for this up: written again
            [ -z "${!name:-}" ] || sed -i "/^$name=/d" "$env"
        done
        metrics_env "$env" >>"$env"
        if ! grep -q '^MIGRATE_DATABASE_URL=' "$env"; then
            sed -i '/^DATABASE_URL=/d' "$env"
            database_env >>"$env"
        fi
        return
    fi
    # Sourced by the shell: values are single-quoted. Only the owner may read the secret.
    (umask 077 && cat >"$env") <<ENV
APP_ENV='development'
SECRET_KEY='$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')'
$(database_env)
$(metrics_env /dev/null)
REDIS_URL='unix://$REDIS_SOCK?db=0'
WEB_BIND='unix:$APP_SOCK'
$(state_redis_env)
ENV
}

start_postgres() {
    [ -n "$PG_BIN" ] || die "PostgreSQL is not installed (run scripts/install-deps.sh)"
    local dir
    dir=$(pg_dir)
    mkdir -p "$dir"
    [ "$(id -u)" -ne 0 ] || chown postgres: "$dir"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        log "postgres: creating a cluster in $dir/data"
        as_pg mkdir -p "$dir/run"
        as_pg "$PG_BIN/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log"
        [ -z "$TCP_TRUST" ] || echo "host all all $TCP_TRUST trust" | as_pg tee -a "$dir/data/pg_hba.conf" >/dev/null
    fi
    if as_pg "$PG_BIN/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
        log "postgres: already running"
    else
        # No TCP; the socket (mode 0700) admits only the stack's owner.
        as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 30 \
            -o "-c listen_addresses='$TCP_HOST' -c unix_socket_directories='$dir/run' -c unix_socket_permissions=0700" \
            start >/dev/null
        log "postgres: started"
    fi
    local psql=("$PG_BIN/psql" -h "$dir/run" -U postgres -v ON_ERROR_STOP=1 -qAt)
    # The schema's owner: creates the app's role (migrate.py) and the tests' databases.
    if [ -z "$(as_pg "${psql[@]}" -c "SELECT 1 FROM pg_roles WHERE rolname = 'app'")" ]; then
        as_pg "${psql[@]}" -c "CREATE ROLE app LOGIN CREATEDB CREATEROLE"
    else
        as_pg "${psql[@]}" -c "ALTER ROLE app CREATEDB CREATEROLE"
    fi
    if [ -z "$(as_pg "${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname = 'app'")" ]; then
        as_pg "${psql[@]}" -c "CREATE DATABASE app OWNER app"
    fi
}

start_redis_server() {  # NAME SOCKET TCP-PORT REDIS-ARGS...: one redis-server in STACK_DIR/NAME
    local name=$1 sock=$2 tcp=(--port 0)
    [ -z "$TCP_HOST" ] || tcp=(--bind "$TCP_HOST" --port "$3" --protected-mode no)
    shift 3
    mkdir -p "$STACK_DIR/$name"
    if alive "$STACK_DIR/$name/redis.pid"; then log "$name: already running"; return; fi
    redis-server "${tcp[@]}" --unixsocket "$sock" --unixsocketperm 700 --dir "$STACK_DIR/$name" --save "" "$@" \
        --daemonize yes --pidfile "$STACK_DIR/$name/redis.pid" --logfile "$STACK_DIR/$name/redis.log"
    wait_for 10 "$name" redis-cli -s "$sock" ping
    log "$name: started"
}

start_redis() {
    # A cache only: no persistence, bounded memory, least-recently-used eviction.
    start_redis_server redis "$REDIS_SOCK" 6379 --appendonly no --maxmemory 256mb --maxmemory-policy allkeys-lru
}

start_state_redis() {
    # Rate-limit counters and queued tasks: never evicted (a full server
    # refuses writes instead, and the limiter counts in memory meanwhile),
    # and kept on disk across restarts. A flood of cache entries on the
    # cache Redis cannot reach them.
    start_redis_server redis-state "$STATE_REDIS_SOCK" 6380 --appendonly yes --maxmemory 64mb --maxmemory-policy noeviction
}

fresh_dir() { rm -rf "$1" && mkdir -p "$1"; }

with_env() {
    (set -a && . "$STACK_DIR/stack.env" && set +a && cd "$ROOT" && exec "$@")
}

migrate() {
    mkdir -p "$STACK_DIR/app"
    # The schema before the app: init.sql for an empty database, migrations/ for an earlier release's.
    with_env "$VENV/bin/python" migrate.py >>"$STACK_DIR/app/migrate.log" 2>&1 ||
        die "migrate.py failed: see $STACK_DIR/app/migrate.log"
}

start_app() {
    migrate
    if alive "$STACK_DIR/app/gunicorn.pid"; then
        # HUP: new workers with the current code, the old ones finish their requests.
        kill -HUP "$(cat "$STACK_DIR/app/gunicorn.pid")"
        log "gunicorn: already running (workers reloaded)"
        return
    fi
    rm -f "$APP_SOCK"
    # Each worker's samples, summed by the master (infra/metrics_server.py): none of a previous run's.
    fresh_dir "$STACK_DIR/app/metrics"
    PROMETHEUS_MULTIPROC_DIR=$STACK_DIR/app/metrics with_env setsid "$VENV/bin/gunicorn" -c gunicorn.conf.py --pid "$STACK_DIR/app/gunicorn.pid" "app:create_app()" \
        >>"$STACK_DIR/app/app.log" 2>&1 </dev/null &
    wait_for 30 gunicorn curl -fsS --unix-socket "$APP_SOCK" http://stack/health
    log "gunicorn: started"
}

start_relay() {
    local dir=$STACK_DIR/relay
    mkdir -p "$dir"
    # Like the worker: restarted with the current code (a change it had not
    # deleted yet is applied again, which changes nothing).
    stop_pidfile relay "$dir/relay.pid"
    local ready_before
    ready_before=$(grep -c 'relay: applying changes' "$dir/relay.log" 2>/dev/null || true)
    # Every nginx of the stack: this one's server for the relay (nginx/local.conf.template).
    L1_REFRESH_URLS=${L1_REFRESH_URLS:-unix:$STACK_DIR/nginx/refresh.sock} with_env setsid "$VENV/bin/python" relay.py \
        --pidfile "$dir/relay.pid" >>"$dir/relay.log" 2>&1 </dev/null &
    wait_for 30 "the cache relay" more_lines_than "${ready_before:-0}" 'relay: applying changes' "$dir/relay.log"
    log "cache relay: started"
}

start_worker() {
    local dir=$STACK_DIR/worker
    mkdir -p "$dir"
    if alive "$dir/celery.pid"; then
        # Like gunicorn's HUP: the current code, without losing a queued order.
        stop_pidfile celery "$dir/celery.pid"
    fi
    local ready_before
    ready_before=$(grep -c 'ready\.' "$dir/worker.log" 2>/dev/null || true)
    # -B: the worker also runs the periodic sweep for orders nobody processed.
    fresh_dir "$dir/metrics"
    PROMETHEUS_MULTIPROC_DIR=$dir/metrics with_env setsid "$VENV/bin/celery" -A worker worker -Q orders -B --concurrency 2 \
        --schedule "$dir/beat-schedule" --pidfile "$dir/celery.pid" --loglevel INFO \
        >>"$dir/worker.log" 2>&1 </dev/null &
    wait_for 30 "the celery worker" more_lines_than "${ready_before:-0}" 'ready\.' "$dir/worker.log"
    log "celery worker: started"
}

# MONITORING=1: mtail turns nginx's short log (nginx/l1.log) into L1's
# metrics (monitoring/l1.mtail), and Prometheus scrapes them with the app's, the
# relay's and the worker's, every 5 s, keeping 2 days in STACK_DIR/monitoring.
# Started (or restarted) by `MONITORING=1 make up`, left as they are by a
# plain `make up`, stopped by `make down`.
start_monitoring() {
    [ "${MONITORING:-0}" = 1 ] || return 0
    local dir=$STACK_DIR/monitoring
    mkdir -p "$dir"
    stop_monitoring
    local app relay worker l1 prometheus
    read -r app relay worker l1 prometheus < <(with_env sh -c "echo $(printf '$%s ' $MONITORING_BINDS)")
    # One thread: mtail reads one line at a time, and a second only adds
    # hand-offs between CPUs (docs/observability.md).
    GOMAXPROCS=1 setsid mtail --progs "$ROOT/monitoring" --logs "$STACK_DIR/nginx/l1.log" \
        --address "${l1%:*}" --port "${l1##*:}" --logtostderr >>"$dir/mtail.log" 2>&1 </dev/null &
    echo $! >"$dir/mtail.pid"
    sed -e "s|dns_sd_configs:|static_configs:|" -e "/names: \[app\]/c\          - targets: [\"$app\"]" \
        -e "/names: \[worker\]/c\          - targets: [\"$worker\"]" -e "/type: A\|port: 910\|refresh_interval/d" \
        -e "s|relay:9102|$relay|" -e "s|mtail:3903|$l1|" "$ROOT/monitoring/prometheus.yml" >"$dir/prometheus.yml"
    setsid prometheus --config.file "$dir/prometheus.yml" --storage.tsdb.path "$dir/data" \
        --storage.tsdb.retention.time 2d --web.listen-address "$prometheus" >>"$dir/prometheus.log" 2>&1 </dev/null &
    echo $! >"$dir/prometheus.pid"
    wait_for 30 prometheus curl -fsS "http://$prometheus/-/ready"
    log "monitoring: mtail on $l1, Prometheus on http://$prometheus"
}

stop_monitoring() {
    stop_pidfile prometheus "$STACK_DIR/monitoring/prometheus.pid"
    stop_pidfile mtail "$STACK_DIR/monitoring/mtail.pid"
}

listeners_on() {  # PORT: how many TCP sockets listen on it, at any address (proc(5): state 0A)
    awk -v port="$(printf ':%04X' "$1")" 'substr($2, length($2) - 4) == port && $4 == "0A"' \
        /proc/net/tcp /proc/net/tcp6 | wc -l
}

start_nginx() {
    local dir=$STACK_DIR/nginx
    mkdir -p "$dir/tmp" "$dir/cache" "$dir/extra"
    # L1's short log, which mtail reads (monitoring/l1.mtail): written while
    # monitoring runs, from MONITORING=1 make up to make down.
    [ "${MONITORING:-0}" != 1 ] ||
        echo "access_log $dir/l1.log api_l1 buffer=64k flush=1s;" >"$dir/extra/http-l1-log.conf"
    sed -e "s|@STATE@|$dir|g" -e "s|@ROOT@|$ROOT|g" -e "s|@APP_SOCKET@|$APP_SOCK|g" \
        -e "s|@LISTEN@|$LISTEN_HOST:$PORT|g" -e "s|@USER@|$(id -un)|g" \
        -e "s|@RATE_PAST_L1@|${RATE_LIMIT_PAST_L1:-10r/s}|g" \
        "$ROOT/nginx/local.conf.template" >"$dir/nginx.conf"
    if alive "$dir/nginx.pid"; then
        local master old_workers
        master=$(cat "$dir/nginx.pid")
        old_workers=$(pgrep -P "$master" -f 'worker process$' || true)
        nginx -q -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf" -s reload
        # A reload is only asked for: new connections get the new settings once the new workers run.
        wait_for 10 "nginx's new workers" only_new_workers "$master" "$old_workers"
        log "nginx: already running (configuration reloaded)"
        return
    fi
    # A socket left by an nginx that was killed would refuse the bind.
    rm -f "$dir/refresh.sock"
    # nginx listens with reuseport, which would let it share a port another
    # nginx holds (the kernel giving each a share of the clients) instead of
    # failing: asked before, and counted after in case one came in between.
    ! timeout 2 bash -c "exec 3<>/dev/tcp/$LISTEN_HOST/$PORT" 2>/dev/null ||
        die "port $PORT is taken on $LISTEN_HOST (PORT=8080 make up for another)"
    nginx -q -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf" -t
    nginx -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf" ||
        die "nginx could not start: is port $PORT taken? (PORT=8080 make up for another)"
    wait_for 10 nginx curl -fsS "http://$LISTEN_HOST:$PORT/health"
    # A worker answered, so the master has forked them all: each has one socket.
    local workers
    workers=$(pgrep -P "$(cat "$dir/nginx.pid")" -f 'worker process$' | wc -l)
    if [ "$(listeners_on "$PORT")" -gt "$workers" ]; then
        nginx -q -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf" -s stop
        die "port $PORT is shared with another process: nginx stopped (PORT=8080 make up for another)"
    fi
    log "nginx: started on $LISTEN_HOST:$PORT"
}

only_new_workers() {  # only_new_workers MASTER OLD-PIDS: the master runs workers, none of OLD-PIDS
    local workers pid
    workers=$(pgrep -P "$1" -f 'worker process$' || true)
    [ -n "$workers" ] || return 1
    for pid in $workers; do
        if grep -qx "$pid" <<<"$2"; then return 1; fi
    done
}

stop_pidfile() {  # stop_pidfile NAME PIDFILE: SIGTERM, then wait for the process to go
    local name=$1 pidfile=$2
    if alive "$pidfile"; then
        local pid
        pid=$(cat "$pidfile")
        kill "$pid" 2>/dev/null || true  # it may have ended since
        # Longer than gunicorn's graceful_timeout; then, as docker stop does
        # after its grace period, SIGKILL: never leave a process running with
        # no pidfile (a relay would keep its lock from the next one).
        for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            kill -9 "$pid" 2>/dev/null || true
            log "$name: did not stop within 30 s of SIGTERM, killed"
        else
            log "$name: stopped"
        fi
    fi
    rm -f "$pidfile"
}

up() {
    mkdir -p "$STACK_DIR"
    # The postgres user must be able to reach its sockets and files.
    chmod 755 "$STACK_DIR"
    write_env
    start_postgres
    start_redis
    start_state_redis
    start_app
    start_relay
    start_worker
    start_nginx
    start_monitoring
    local pg stop="make down     (reset the data: make reset)"
    pg=$(pg_dir)
    [ "$STACK_DIR" = "$ROOT/.stack" ] || stop="STACK_DIR=$STACK_DIR scripts/stack.sh down   (or reset)"
    cat >&2 <<INFO

The API answers on http://$LISTEN_HOST:$PORT  (docs: http://$LISTEN_HOST:$PORT/docs)
  state and logs   $STACK_DIR  (app/app.log, relay/relay.log, worker/worker.log, nginx/access.log, redis/redis.log)
  database         psql -h $pg/run -U app app    (data in $pg/data)
  metrics          $(with_env sh -c 'echo "app http://$APP_METRICS_BIND, relay http://$RELAY_METRICS_BIND, worker http://$WORKER_METRICS_BIND"')
  stop             $stop
INFO
}

stop_postgres() {
    local dir
    dir=$(pg_dir)
    if [ -f "$dir/data/PG_VERSION" ] && as_pg "$PG_BIN/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
        as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
        log "postgres: stopped"
    fi
}

down() {
    [ -d "$STACK_DIR" ] || return 0
    stop_monitoring
    rm -f "$STACK_DIR/nginx/extra/http-l1-log.conf"
    stop_pidfile nginx "$STACK_DIR/nginx/nginx.pid"
    stop_pidfile gunicorn "$STACK_DIR/app/gunicorn.pid"
    stop_pidfile relay "$STACK_DIR/relay/relay.pid"
    stop_pidfile celery "$STACK_DIR/worker/celery.pid"
    stop_pidfile redis "$STACK_DIR/redis/redis.pid"
    stop_pidfile redis-state "$STACK_DIR/redis-state/redis.pid"
    stop_postgres
}

service() {  # service start|stop NAME
    [ -f "$STACK_DIR/stack.env" ] || die "no stack in $STACK_DIR: run 'up' first"
    case "$1:${2:-}" in
        start:postgres) start_postgres ;;
        start:redis) start_redis ;;
        start:redis-state) start_state_redis ;;
        start:migrate) migrate ;;
        start:app) start_app ;;
        start:relay) start_relay ;;
        start:worker) start_worker ;;
        start:nginx) start_nginx ;;
        stop:postgres) stop_postgres ;;
        stop:redis) stop_pidfile redis "$STACK_DIR/redis/redis.pid" ;;
        stop:redis-state) stop_pidfile redis-state "$STACK_DIR/redis-state/redis.pid" ;;
        stop:app) stop_pidfile gunicorn "$STACK_DIR/app/gunicorn.pid" ;;
        stop:relay) stop_pidfile relay "$STACK_DIR/relay/relay.pid" ;;
        stop:worker) stop_pidfile celery "$STACK_DIR/worker/celery.pid" ;;
        stop:nginx) stop_pidfile nginx "$STACK_DIR/nginx/nginx.pid" ;;
        *) die "usage: $0 $1 postgres|redis|redis-state|app|relay|worker|nginx" ;;
    esac
}

reset() {
    down
    [ -d "$STACK_DIR" ] || return 0
    rm -rf "$(pg_dir)" "$STACK_DIR"
    log "data deleted: the next 'make up' starts from the seed rows"
}

status() {
    local dir
    for pair in "nginx:nginx/nginx.pid" "gunicorn:app/gunicorn.pid" "relay:relay/relay.pid" "celery:worker/celery.pid" \
        "redis:redis/redis.pid" "redis-state:redis-state/redis.pid" \
        "mtail:monitoring/mtail.pid" "prometheus:monitoring/prometheus.pid"; do
        if alive "$STACK_DIR/${pair#*:}"; then echo "${pair%%:*}: running"; else echo "${pair%%:*}: stopped"; fi
    done
    dir=$( [ -d "$STACK_DIR" ] && pg_dir )
    if [ -n "$dir" ] && as_pg "$PG_BIN/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
        echo "postgres: running"
    else
        echo "postgres: stopped"
    fi
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    reset) reset ;;
    status) status ;;
    start | stop) service "$1" "${2:-}" ;;
    *) echo "usage: $0 up|down|reset|status|start SERVICE|stop SERVICE" >&2; exit 2 ;;
esac
