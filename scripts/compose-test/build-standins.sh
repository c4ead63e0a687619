#!/usr/bin/env bash
# Builds the stand-ins of README.md beside this file, each only where no image
# of its tag exists: a Debian bookworm base from debootstrap, imported as
# api-standin-base:bookworm, then one image per official name.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

declare -A STANDINS=(
    [python]=python:3.11-slim-bookworm
    [postgres]=postgres:15-bookworm
    [redis]=redis:7-bookworm
    [nginx]=nginxinc/nginx-unprivileged:1.27-bookworm
    [debian]=debian:bookworm-slim
    [prometheus]=prom/prometheus:v2.53.2
)

exists() { docker image inspect "$1" >/dev/null 2>&1; }

# A stand-in is labelled with the hash of its directory: one built from
# other files is built again. An image without the label is a real one: kept.
recipe() { (cd "$here/$1" && find . -type f ! -path './extra-ca/*' -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16); }
label() { docker image inspect -f '{{index .Config.Labels "api.standin"}}' "$1" 2>/dev/null; }

missing=()
for name in "${!STANDINS[@]}"; do
    tag=${STANDINS[$name]}
    if ! exists "$tag" || { [ -n "$(label "$tag")" ] && [ "$(label "$tag")" != "$(recipe "$name")" ]; }; then
        missing+=("$name")
    fi
done
[ ${#missing[@]} -gt 0 ] || { echo "stand-ins: every image is there"; exit 0; }

if ! exists api-standin-base:bookworm; then
    rootfs=$(mktemp -d /tmp/standin-rootfs.XXXXXX)
    trap 'rm -rf "$rootfs"' EXIT
    echo "stand-ins: debootstrap bookworm (a few minutes)"
    debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" >"$rootfs.log" 2>&1 ||
        { tail -20 "$rootfs.log"; exit 1; }
    rm -f "$rootfs.log"
    # The image's own apt sources: the same mirror.
    echo "deb $MIRROR bookworm main" >"$rootfs/etc/apt/sources.list"
    tar -C "$rootfs" -c . | docker import - api-standin-base:bookworm >/dev/null
fi

for name in "${missing[@]}"; do
    context=$here/$name
    if [ "$name" = python ]; then
        # pip inside the image reaches the package index through what this
        # machine trusts: its extra CA certificates.
        rm -rf "$context/extra-ca" && mkdir "$context/extra-ca"
        cp /usr/local/share/ca-certificates/*.crt "$context/extra-ca/" 2>/dev/null || true
    fi
    echo "stand-ins: building ${STANDINS[$name]}"
    if ! docker build -q --label "api.standin=$(recipe "$name")" -t "${STANDINS[$name]}" "$context" \
        >/tmp/standin-build.log 2>&1; then
        cat /tmp/standin-build.log
        exit 1
    fi
    rm -rf "$context/extra-ca"
done
