#!/bin/sh
# As the official image's: before nginx, each executable
# /docker-entrypoint.d/*.sh in order (20-envsubst-on-templates.sh among them).
set -eu
if [ "$1" = nginx ]; then
    for script in $(find /docker-entrypoint.d/ -follow -type f -name '*.sh' | sort -V); do
        if [ -x "$script" ]; then
            echo "$0: running $script"
            "$script"
        fi
    done
fi
exec "$@"
