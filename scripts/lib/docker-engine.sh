# Sourced by the scripts that run containers (compose-test, swarm-test): a
# Docker engine for the length of the script. start_engine uses the one that
# answers, else starts dockerd and notes what dockerd will change (iptables'
# filter, nat and mangle tables, ip_forward, the bridges docker0 and, for a
# swarm, docker_gwbridge); stop_engine stops only a dockerd that start_engine
# started and puts those back. Both take the script's scratch directory,
# where the notes and dockerd's log are kept.
DOCKERD_PID=

log() { printf '== %s\n' "$*"; }

start_engine() {
    local state=$1
    if docker info >/dev/null 2>&1; then
        log "docker: using the engine that answers"
        return
    fi
    # The tables dockerd changes (mangle: a swarm's overlay networks), named:
    # a table never used yet is saved too.
    { iptables-save -t filter && iptables-save -t nat && iptables-save -t mangle; } >"$state/iptables"
    cat /proc/sys/net/ipv4/ip_forward >"$state/ip_forward"
    : >"$state/new-bridges"
    for bridge in docker0 docker_gwbridge; do
        ip link show "$bridge" >/dev/null 2>&1 || echo "$bridge" >>"$state/new-bridges"
    done
    log "docker: starting dockerd"
    dockerd --data-root "${DOCKER_DATA_ROOT:-/var/lib/docker}" >"$state/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
    for _ in $(seq 120); do
        docker info >/dev/null 2>&1 && return
        kill -0 "$DOCKERD_PID" 2>/dev/null || break
        sleep 0.5
    done
    tail -20 "$state/dockerd.log"
    echo "dockerd did not start" >&2
    exit 1
}

stop_engine() {
    local state=$1
    [ -n "$DOCKERD_PID" ] || return 0
    kill "$DOCKERD_PID" 2>/dev/null || true
    for _ in $(seq 60); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.5; done
    iptables-restore <"$state/iptables"
    cat "$state/ip_forward" >/proc/sys/net/ipv4/ip_forward
    # dockerd leaves its bridges when it stops.
    while read -r bridge; do ip link delete "$bridge" 2>/dev/null || true; done <"$state/new-bridges"
    DOCKERD_PID=
    log "docker: dockerd stopped, iptables and ip_forward as they were"
}
