#!/bin/sh
# Patroni runs this once, on the node that bootstraps the cluster, with a
# superuser's connection string: what scripts/stack.sh's postgres start
# makes for the app. The schema's owner (app) creates the app's role (api)
# and the schema itself when migrate.py runs.
set -eu
psql "$1" -v ON_ERROR_STOP=1 -qAt -c "CREATE ROLE app LOGIN CREATEDB CREATEROLE"
psql "$1" -v ON_ERROR_STOP=1 -qAt -c "CREATE DATABASE app OWNER app"
