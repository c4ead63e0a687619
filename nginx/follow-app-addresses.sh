#!/bin/sh
# Run by the nginx image's entrypoint before nginx starts (docker-compose.yml
# mounts it in /docker-entrypoint.d/). nginx resolves `app` once, at start:
# an app scaled to three would still get one container's traffic, and one
# recreated on a new address would get 502s. This watches the addresses
# Docker's DNS gives for `app` and reloads nginx when they change (a reload
# keeps L1's cache and the open connections). Works on every nginx version,
# unlike `server ... resolve` (1.27.3 and later).
set -eu
addresses() { getent ahostsv4 app 2>/dev/null | awk '{print $1}' | sort -u | tr '\n' ' '; }
(
    seen=$(addresses)
    while sleep 2; do
        now=$(addresses)
        if [ -n "$now" ] && [ "$now" != "$seen" ]; then
            echo "follow-app-addresses: app is now at $now; reloading nginx"
            nginx -s reload || true
            seen=$now
        fi
    done
) &
