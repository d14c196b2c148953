#!/usr/bin/env bash
# A throwaway PostgreSQL server on 127.0.0.1 for the hub's tests (and for trying the hub on PostgreSQL).
#
#   eval "$(bash scripts/postgres.sh start)"   # prints export lines: QUANTGRID_TEST_POSTGRES_URL, QG_PG_DATA
#   bash scripts/postgres.sh stop "$QG_PG_DATA"
#
# Installs Debian's `postgresql` with apt-get when no initdb is found (needs root). The cluster
# lives in a fresh temp directory, trusts local connections from 127.0.0.1 only, and runs as an
# unprivileged user (`postgres` when started as root, since PostgreSQL refuses to run as root).
set -euo pipefail

find_bin() {
  local dir
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(command -v initdb)"; return
  fi
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$dir/initdb" ] && { echo "$dir"; return; }
  done
  return 1
}

as_owner() {  # run a command as the cluster's owner
  if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi
}

start() {
  local bin
  if ! bin="$(find_bin)"; then
    if [ "$(id -u)" != 0 ]; then
      echo "postgres.sh: PostgreSQL is not installed; run as root, or: sudo apt-get install -y postgresql" >&2
      exit 1
    fi
    echo "postgres.sh: installing PostgreSQL (apt-get install postgresql)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
    bin="$(find_bin)"
  fi
  if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/postgresql --shell /bin/sh postgres
  fi
  local data port
  data="$(mktemp -d "${TMPDIR:-/tmp}/qg-pg.XXXXXX")"
  [ "$(id -u)" = 0 ] && chown postgres "$data"
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  as_owner "'$bin/initdb' -D '$data/db' -U qg -A trust -E UTF8 --no-instructions" >"$data/initdb.log" 2>&1 \
    || { cat "$data/initdb.log" >&2; exit 1; }
  as_owner "'$bin/pg_ctl' -D '$data/db' -l '$data/server.log' -w -t 60 \
    -o \"-c listen_addresses=127.0.0.1 -p $port -k '$data' -c max_connections=200 -c fsync=off\" start" >&2 \
    || { cat "$data/server.log" >&2; exit 1; }
  echo "export QG_PG_DATA='$data'"
  echo "export QG_PG_BIN='$bin'"
  echo "export QUANTGRID_TEST_POSTGRES_URL='postgresql+psycopg://qg@127.0.0.1:$port/postgres'"
}

stop() {
  local data="${1:-${QG_PG_DATA:-}}" bin
  [ -n "$data" ] && [ -d "$data/db" ] || return 0
  bin="${QG_PG_BIN:-$(find_bin)}"
  as_owner "'$bin/pg_ctl' -D '$data/db' -m fast -w stop" >/dev/null 2>&1 || true
  rm -rf "$data"
}

case "${1:-}" in
  start) start ;;
  stop) stop "${2:-}" ;;
  *) echo "usage: postgres.sh start | stop DATA_DIR" >&2; exit 2 ;;
esac
