#!/bin/sh
# A Sentinel of docker-compose.yml: watches each role in WATCH ("service=host
# ..." , the host its first primary) and fails it over with two of the three
# Sentinels agreeing. Written afresh at each start: a Sentinel that restarts
# learns any failover since from the others' hello messages, which carry a
# newer configuration epoch than its own.
set -eu
conf=/tmp/sentinel.conf
{
    echo "port 26379"
    # Names, not addresses: a container that starts again may get another
    # address; the app's containers reach every server and Sentinel by name.
    echo "sentinel resolve-hostnames yes"
    echo "sentinel announce-hostnames yes"
    echo "sentinel announce-ip $(hostname)"
    # The app's URL password is both the Sentinels' and the servers'.
    echo "requirepass $REDIS_PASSWORD"
    for watched in $WATCH; do
        service=${watched%%=*}
        echo "sentinel monitor $service ${watched#*=} 6379 2"
        echo "sentinel auth-pass $service $REDIS_PASSWORD"
        # Never shorter than L2's caught-up second (cache/l2.py): a "caught up"
        # written on the old primary must expire before a replica that may
        # hold a copy of it is promoted and read.
        echo "sentinel down-after-milliseconds $service 1000"
        echo "sentinel failover-timeout $service 10000"
        echo "sentinel parallel-syncs $service 1"
    done
} >"$conf"
chmod 600 "$conf"
exec redis-sentinel "$conf"
