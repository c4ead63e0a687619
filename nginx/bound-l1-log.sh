#!/bin/sh
# Run by the nginx image's entrypoint before nginx starts (docker-compose.yml
# and deploy/helm/api mount it in /docker-entrypoint.d/). nginx writes L1's
# short log for mtail (nginx/docker.conf) into a volume in memory, whether or
# not the monitoring profile runs mtail. This keeps it small: past 16 MiB (seconds of L1 hits
# at full speed) it is emptied in place. nginx appends, so its next write
# starts the file again, and mtail, seeing it shorter, reads it from the top.
# What mtail had not yet read when it was emptied is lost from the metrics:
# at most the last second's lines, since nginx writes once a second and mtail
# reads each write as it lands.
set -eu
log=/var/log/nginx/l1/l1.log
(
    while sleep 10; do
        if [ "$(stat -c %s "$log" 2>/dev/null || echo 0)" -gt 16777216 ]; then
            : >"$log" || echo "bound-l1-log: could not empty $log" >&2
        fi
    done
) &
