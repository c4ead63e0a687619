#!/bin/sh
# As the official image's: /etc/nginx/templates/X.template becomes
# /etc/nginx/conf.d/X with the environment's variables filled in (only those
# defined, so nginx's own $variables stay).
set -eu
for template in /etc/nginx/templates/*.template; do
    [ -f "$template" ] || continue
    defined=$(printf '${%s} ' $(env | cut -d= -f1))
    output=/etc/nginx/conf.d/$(basename "$template" .template)
    envsubst "$defined" <"$template" >"$output"
    echo "$0: $template -> $output"
done
