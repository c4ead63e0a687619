#!/usr/bin/env bash
# `make swarm-test`: deploy/swarm/stack.yml on a single-node Docker Swarm,
# for real. Starts dockerd if none answers (scripts/lib/docker-engine.sh),
# makes this node a swarm if it is none (and leaves it after), builds the
# images as compose-test does, deploys the stack, waits until every task
# runs healthy, then: test_app.sh through the entry; the coherence checker
# through the entry and straight to each L1 and an app; an upgrade's steps
# (migrate updated and run again to the end, then a rolling update of the
# app with a reader counting failed reads through the entry); `docker
# stack rm` and every volume, asserting that nothing of the stack remains
# and the engine is as it was found.
#
# The stack publishes no port: a host-mode port binds every address of the
# node. The test reaches the entry, each L1, an app and PostgreSQL at their
# tasks' addresses on docker_gwbridge, the node's own bridge that every task
# on an overlay network has a leg on (a private address, as compose's bridge).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
# start_engine, stop_engine, log
. scripts/lib/docker-engine.sh

WORK=$(mktemp -d /tmp/swarm-test.XXXXXX)
STACK=apiswarmtest
API_IMAGE=api:swarm-test
# Swarm's state found at the start, and what this script changed.
SWARM_BEFORE=
SWARM_MADE=
GWBRIDGE_MADE=
DEPLOYED=
# VXLAN's port: the kernel's socket of an overlay network listens on every
# address and Docker offers no other; one node sends no VXLAN at all.
VXLAN_RULE=(INPUT -p udp --dport 4789 ! -i lo -m comment --comment "$STACK: overlay on one node" -j DROP)

python() { PYTHONPATH="$ROOT" .venv/bin/python "$@"; }

# Every object of the stack there is: containers, services, networks,
# volumes, configs, secrets (each named after the stack).
leftovers() {
    {
        docker ps -a --filter "name=${STACK}_" --format 'container {{.Names}}'
        docker service ls --filter "name=${STACK}_" --format 'service {{.Name}}'
        docker network ls --filter "name=${STACK}_" --format 'network {{.Name}}'
        docker volume ls --filter "name=${STACK}_" --format 'volume {{.Name}}'
        docker config ls --filter "name=${STACK}_" --format 'config {{.Name}}'
        docker secret ls --filter "name=${STACK}_" --format 'secret {{.Name}}'
    } 2>/dev/null
}

remove_stack() {
    [ -n "$DEPLOYED" ] || return 0
    docker stack rm "$STACK" >/dev/null 2>&1 || true
    # stack rm returns before the tasks have stopped; the network and the
    # volumes can go only after them.
    local deadline=$((SECONDS + 90))
    while [ -n "$(docker ps -aq --filter "name=${STACK}_")" ] && [ $SECONDS -lt $deadline ]; do sleep 1; done
    docker network rm "${STACK}_api" >/dev/null 2>&1 || true
    local volumes
    volumes=$(docker volume ls -q --filter "name=${STACK}_")
    [ -z "$volumes" ] || docker volume rm $volumes >/dev/null
}

# The swarm and the engine as they were found.
restore() {
    if [ -n "$SWARM_MADE" ]; then
        docker swarm leave --force >/dev/null
        SWARM_MADE=
        # The bridge Swarm made for its tasks' way out, which leaving keeps;
        # its last endpoints leave a moment after the node.
        local deadline=$((SECONDS + 30))
        while [ -n "$GWBRIDGE_MADE" ] && ! docker network rm docker_gwbridge >/dev/null 2>&1; do
            [ $SECONDS -lt $deadline ] || { echo "docker_gwbridge could not be removed" >&2; return 1; }
            sleep 1
        done
        GWBRIDGE_MADE=
    fi
    iptables -D "${VXLAN_RULE[@]}" 2>/dev/null || true
}

finish() {
    local status=$?
    if [ "$status" -ne 0 ] && [ -n "$DEPLOYED" ]; then
        log "the stack's tasks and last log lines"
        docker stack ps --no-trunc --format '{{.Name}} {{.CurrentState}} {{.Error}}' "$STACK" 2>/dev/null || true
        for id in $(docker ps -q --filter "name=${STACK}_"); do
            echo "--- $(docker inspect -f '{{.Name}}' "$id")"
            docker logs --tail 15 "$id" 2>&1 || true
        done
    fi
    remove_stack || true
    restore || true
    stop_engine "$WORK"
    rm -rf "$WORK"
    exit "$status"
}
trap finish EXIT

# The address of each running task of SERVICE on docker_gwbridge.
task_addresses() {
    local id
    for id in $(docker ps -q --no-trunc --filter "label=com.docker.swarm.service.name=${STACK}_$1"); do
        docker network inspect docker_gwbridge -f "{{with index .Containers \"$id\"}}{{.IPv4Address}}{{end}}" | cut -d/ -f1
    done
}

# Every service with its replicas running and healthy (Swarm counts a task
# with a healthcheck once it passed), the migrations done, and each Sentinel
# knowing both roles and enough Sentinels to fail either over.
converged() {
    local name replicas
    while read -r name replicas; do
        if [ "$name" = "${STACK}_migrate" ]; then
            # Read whole first: grep -q leaving early would fail the pipe (pipefail).
            grep -q '^Complete' <<<"$(docker service ps --format '{{.CurrentState}}' "$name")" || return 1
        else
            [ "${replicas%%/*}" = "${replicas#*/}" ] || return 1
        fi
    done < <(docker service ls --filter "label=com.docker.stack.namespace=$STACK" --format '{{.Name}} {{.Replicas}}')
    for id in $(docker ps -q --filter "name=${STACK}_sentinel-"); do
        for role in cache state; do
            grep -q ^OK <<<"$(docker exec "$id" sh -c 'REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli -p 26379 sentinel ckquorum "$1"' sh "$role")" ||
                return 1
        done
    done
}

# CPU (per cent of one core) and memory of every container of the stack.
resources() {
    docker stats --no-stream --format '{{.Name}} {{.CPUPerc}} {{.MemUsage}}' | grep "^${STACK}_" | awk '
        { cpu += $2; mem = $3; unit = 1 / 1048576
          if (mem ~ /KiB$/) unit = 1 / 1024; else if (mem ~ /MiB$/) unit = 1; else if (mem ~ /GiB$/) unit = 1024
          sub(/[A-Za-z]+$/, "", mem); total += mem * unit; n++ }
        END { printf "   %d containers: CPU %.0f %% of one core, memory %.0f MiB\n", n, cpu, total }'
}

WITH_DOCKER=1 scripts/install-deps.sh
start_engine "$WORK"

log "images: the stand-ins where none exists, and the Dockerfile's as $API_IMAGE"
started=$SECONDS
scripts/compose-test/build-standins.sh
docker build -q -t "$API_IMAGE" . >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log"; exit 1; }
log "images ready in $((SECONDS - started)) s"

SWARM_BEFORE=$(docker info -f '{{.Swarm.LocalNodeState}}')
if [ "$SWARM_BEFORE" = inactive ]; then
    docker network inspect docker_gwbridge >/dev/null 2>&1 || GWBRIDGE_MADE=1
    # Loopback only: Swarm's manager (2377) and gossip (7946) ports listen
    # there rather than on every address.
    log "docker swarm init on 127.0.0.1"
    docker swarm init --advertise-addr 127.0.0.1 --listen-addr 127.0.0.1:2377 >/dev/null
    SWARM_MADE=1
else
    log "docker: this node is already in a swarm ($SWARM_BEFORE): deploying into it"
fi
iptables -I "${VXLAN_RULE[@]}"

secret() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
# The secrets, as an operator's env file would hold them (docs/operations.md#docker-swarm).
cat >"$WORK/env" <<ENV
SECRET_KEY=$(secret)$(secret)
POSTGRES_PASSWORD=$(secret)
APP_DB_PASSWORD=$(secret)
REDIS_PASSWORD=$(secret)
ENV
. "$WORK/env"
# Swarm's configs cannot change in place: a new set per content.
CONFIG_VERSION=$(cat nginx/*.conf nginx/*.sh deploy/swarm/*.conf deploy/swarm/*.sh deploy/compose/*.sh | sha256sum | cut -c1-12)

log "publish.yml adds the entry's port in host mode"
(set -a && . "$WORK/env" && API_IMAGE=$API_IMAGE PORT=8080 docker stack config -c deploy/swarm/stack.yml -c deploy/swarm/publish.yml) |
    grep -A4 'ports:' | tr -d ' \n' | grep -q -- '-mode:hosttarget:8080published:8080'

log "docker stack deploy $STACK"
started=$SECONDS
DEPLOYED=1
(set -a && . "$WORK/env" && API_IMAGE=$API_IMAGE STACK_NAME=$STACK CONFIG_VERSION=$CONFIG_VERSION \
    docker stack deploy -c deploy/swarm/stack.yml "$STACK") >"$WORK/deploy.log" 2>&1 || { cat "$WORK/deploy.log"; exit 1; }
deadline=$((SECONDS + 240))
until converged 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || { echo "the stack did not converge in 240 s" >&2; docker service ls; exit 1; }
    sleep 2
done
log "every task running and healthy $((SECONDS - started)) s after the deploy"
resources

log "the app, L1s, entry, relay, worker and beat started with the data tier not yet there: none failed"
for service in app l1 entry relay worker beat; do
    failed=$(docker service ps --format '{{.Error}}' "${STACK}_$service" | grep -c . || true)
    echo "   $service: $failed failed tasks"
    [ "$failed" = 0 ]
done
echo "   migrate: $(docker service ps --format '{{.Error}}' "${STACK}_migrate" | grep -c . || true) failed attempts, retried until PostgreSQL answered"

log "nothing listens beyond loopback: Swarm's ports on 127.0.0.1, no port published, VXLAN's dropped"
# (`! command` would never stop the script: set -e ignores a negated status.)
wide=$(ss -Hlntup | grep -E '"(dockerd|docker-proxy)"' | awk '$5 !~ /^127\.0\.0\.1:/' || true)
[ -z "$wide" ] || { echo "listening beyond loopback: $wide" >&2; exit 1; }
[ -z "$(pgrep -x docker-proxy || true)" ]
iptables -C "${VXLAN_RULE[@]}"

ENTRY=http://$(task_addresses entry):8080
ways=()
n=0
for address in $(task_addresses l1); do
    n=$((n + 1))
    ways+=("l1.$n=http://$address:8080")
done
[ "$n" = 3 ]
apps=($(task_addresses app))
ways+=("app=http://${apps[0]}:8000")
DATABASE_URL="postgresql://api:$APP_DB_PASSWORD@$(task_addresses postgres):5432/app"

log "test_app.sh through the entry ($ENTRY)"
BASE_URL=$ENTRY ./test_app.sh

log "the coherence checker, 25 s: writers through the entry and SQL, readers through the entry, each L1 and an app"
RELAY_METRICS=http://$(task_addresses relay):9102/metrics
python scripts/swarm-test/checks.py monitor "$RELAY_METRICS" "$WORK/monitor.json"
python scripts/swarm-test/checks.py coherence 25 "$ENTRY" "$DATABASE_URL" "${ways[@]}" &
checker=$!
sleep 12
resources
wait "$checker"
sleep 4  # the monitor's checks of the last changes (cache/monitor.py, CHECK_AFTER)
log "the relay's consistency monitor meanwhile: every L1 and L2 checked, none inconsistent"
python scripts/swarm-test/checks.py monitor "$RELAY_METRICS" "$WORK/monitor.json" 3

log "an upgrade's first step: migrate again (docker service update), to the end"
docker service update --force --detach=true "${STACK}_migrate" >/dev/null
deadline=$((SECONDS + 120))
until [ "$(grep -c '^Complete' <<<"$(docker service ps --format '{{.CurrentState}}' "${STACK}_migrate")")" -ge 2 ]; do
    [ $SECONDS -lt $deadline ] || { echo "migrate did not run again in 120 s" >&2; exit 1; }
    sleep 1
done
# The update's own verdict too: an operator reads it (docker service inspect).
until [ "$(docker service inspect -f '{{.UpdateStatus.State}}' "${STACK}_migrate")" = completed ]; do
    [ $SECONDS -lt $deadline ] || { echo "migrate's update did not complete in 120 s" >&2; exit 1; }
    sleep 1
done
echo "   migrate ran again to the end; its update completed"

log "a rolling update of the app (start-first, one task at a time), reads through the entry meanwhile"
python scripts/swarm-test/checks.py reads "$ENTRY" "$WORK/updated" 300 &
reader=$!
sleep 2
started=$SECONDS
docker service update --force --detach=true "${STACK}_app" >/dev/null
deadline=$((SECONDS + 240))
until [ "$(docker service inspect -f '{{.UpdateStatus.State}}' "${STACK}_app")" = completed ]; do
    [ $SECONDS -lt $deadline ] || { echo "the update did not complete in 240 s" >&2; exit 1; }
    sleep 1
done
echo "   updated in $((SECONDS - started)) s"
sleep 3  # reads after the last old task left
touch "$WORK/updated"
wait "$reader"

log "docker stack rm, its volumes: nothing of $STACK remains"
started=$SECONDS
remove_stack
DEPLOYED=
echo "   removed in $((SECONDS - started)) s"
left=$(leftovers)
[ -z "$left" ] || { echo "left behind: $left" >&2; exit 1; }

log "the swarm and the engine as found"
restore
[ "$(docker info -f '{{.Swarm.LocalNodeState}}')" = "$SWARM_BEFORE" ]
if iptables -C "${VXLAN_RULE[@]}" 2>/dev/null; then echo "the VXLAN rule is still there" >&2; exit 1; fi

log "swarm-test passed"
