#!/usr/bin/env bash
# Start a throwaway PostgreSQL server on loopback for the storage tests and print its SQLAlchemy
# URL; print nothing (and say why on stderr) where one cannot be started. Usage:
#   url=$(bash .ci/postgres.sh start DIR)   ...   bash .ci/postgres.sh stop DIR
#   bash .ci/postgres.sh resume DIR   # start the stopped server again with its data (start wipes DIR):
#                                     # the storage-outage test stops and resumes it mid-search
set -uo pipefail
cmd=${1:-start}
dir=${2:-/tmp/zeustune-ci-pg}
port=${ZEUSTUNE_PG_PORT:-54329}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
serve() {
  as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=200" start >/dev/null 2>&1
}
if [ "$cmd" = stop ]; then
  [ -n "$bin" ] && [ -d "$dir/data" ] && as_pg "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1
  exit 0
fi
if [ "$cmd" = resume ]; then
  if [ -z "$bin" ] || [ ! -d "$dir/data" ]; then echo "postgres: no server in $dir to resume" >&2; exit 1; fi
  serve || { echo "postgres: the server did not start again (see $dir/server.log)" >&2; exit 1; }
  echo "postgresql+psycopg2://zeustune@127.0.0.1:$port/zeustune"
  exit 0
fi
if [ -z "$bin" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get install -y -q postgresql >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q postgresql >/dev/null 2>&1)) \
    || echo "postgres: apt-get install postgresql failed" >&2
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
fi
if [ -z "$bin" ]; then echo "postgres: no PostgreSQL server binaries; storage tests will be skipped" >&2; exit 0; fi
if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then echo "postgres: no postgres user; skipped" >&2; exit 0; fi
rm -rf "$dir" && mkdir -p "$dir" && { [ "$(id -u)" != 0 ] || chown postgres "$dir"; }
if ! as_pg "$bin/initdb" -D "$dir/data" -U zeustune --auth=trust >"$dir/initdb.log" 2>&1; then
  echo "postgres: initdb failed (see $dir/initdb.log); storage tests will be skipped" >&2; exit 0
fi
if ! serve; then
  echo "postgres: the server did not start (see $dir/server.log); storage tests will be skipped" >&2; exit 0
fi
as_pg "$bin/createdb" -h 127.0.0.1 -p "$port" -U zeustune zeustune >/dev/null 2>&1
echo "postgresql+psycopg2://zeustune@127.0.0.1:$port/zeustune"
