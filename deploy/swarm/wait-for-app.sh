#!/bin/sh
# Run by the nginx image's entrypoint before nginx starts, in each L1 of the
# swarm stack (deploy/swarm/stack.yml). nginx refuses to start while its
# upstream's name resolves to nothing, and a stack starts its services in no
# order: an L1 waits here until Docker's DNS names at least one app task (a
# task is named once it runs), at most a minute; then Swarm starts it again.
# An L1 that starts meets an empty cache anyway: without an app it has
# nothing to serve.
set -eu
app=${APP_ADDRESS:-app:8000}
app=${app%:*}
for _ in $(seq 60); do
    getent ahostsv4 "$app" >/dev/null 2>&1 && exit 0
    sleep 1
done
echo "wait-for-app: no address for $app after 60 s" >&2
exit 1
