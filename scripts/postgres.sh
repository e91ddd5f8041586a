#!/usr/bin/env bash
# Start the local Debian PostgreSQL cluster and make a test database; print its URL on stdout.
# Prints nothing (and exits 0) when no server can be started here, so tests skip locally.
set -u
command -v pg_ctlcluster >/dev/null || exit 0
[ "$(id -u)" = 0 ] || exit 0
ver=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)
[ -n "$ver" ] || exit 0
pg_ctlcluster "$ver" main status >/dev/null 2>&1 || pg_ctlcluster "$ver" main start >&2 || exit 0
port=$(pg_conftool -s "$ver" main show port 2>/dev/null || echo 5432)
for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p "$port" && break; sleep 0.5; done
psql_() { su postgres -c "psql -p $port -qtAX -c \"$1\"" 2>/dev/null; }
[ "$(psql_ "SELECT 1 FROM pg_roles WHERE rolname='ablate'")" = 1 ] || psql_ "CREATE ROLE ablate LOGIN PASSWORD 'ablate'" >&2
psql_ "ALTER ROLE ablate CREATEDB" >&2  # each pytest-xdist worker makes a database of its own
[ "$(psql_ "SELECT 1 FROM pg_database WHERE datname='ablate_test'")" = 1 ] || psql_ "CREATE DATABASE ablate_test OWNER ablate" >&2
echo "postgresql://ablate:ablate@127.0.0.1:$port/ablate_test"
