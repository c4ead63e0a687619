#!/bin/sh
# A Redis server of docker-compose.yml, started with its service's options
# ("$@"), as a replica of the primary the Sentinels name, or as the primary.
#
# SERVICE is the Sentinels' name of its role, PRIMARY its first primary, and
# SENTINELS the hosts to ask. The Sentinels answer once they are up: a server
# started again after it died (a failed-over primary) then comes back as a
# replica of the one that took over, never for a moment as a second primary
# with an older (for the cache: empty) data set. Before then, as on the
# stack's first start, the servers take the roles compose first gave them.
set -eu
me=$(hostname)
primary=$PRIMARY
for sentinel in $SENTINELS; do
    named=$(REDISCLI_AUTH="$REDIS_PASSWORD" timeout 2 redis-cli -h "$sentinel" -p 26379 --raw \
        sentinel get-master-addr-by-name "$SERVICE" 2>/dev/null | head -1) || true
    if [ -n "$named" ]; then
        primary=$named
        break
    fi
done
# Other servers and the Sentinels reach this one by its name on the compose
# network, whatever address it gets each time it starts.
set -- "$@" --requirepass "$REDIS_PASSWORD" --masterauth "$REDIS_PASSWORD" --replica-announce-ip "$me"
if [ "$primary" != "$me" ]; then
    set -- "$@" --replicaof "$primary" 6379
fi
exec redis-server "$@"
