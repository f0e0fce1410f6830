#!/usr/bin/env bash
# A throwaway PostgreSQL server on loopback, for the shared-queue tests
# (src/adapters/serve/store/tests.rs, tests/it/serve/pg.rs). They find it
# through PROBEGATE_TEST_POSTGRES_URL, which scripts/test.sh sets from the
# last line this prints.
#
#   scripts/postgres-env.sh start DIR   cluster in DIR (created), started on
#                                       a free port; last line of stdout:
#                                       postgres://probegate:…@127.0.0.1:PORT/postgres
#   scripts/postgres-env.sh stop DIR    stop it and delete DIR
#
# Debian's PostgreSQL (/usr/lib/postgresql/*/bin) is installed with apt-get
# when missing and this runs as root; otherwise it fails, naming what to do.
#   PG_BIN   directory with initdb and pg_ctl (default: the newest installed)
set -euo pipefail

die() { echo "postgres-env: error: $*" >&2; exit 2; }

find_bin() {
  if [ -n "${PG_BIN:-}" ]; then
    [ -x "$PG_BIN/initdb" ] || die "PG_BIN=$PG_BIN has no initdb"
    echo "$PG_BIN"
    return
  fi
  # The highest major version installed; nothing (not a failure) when none is.
  { ls -d /usr/lib/postgresql/*/bin 2>/dev/null || true; } | sort -t/ -k4 -n | tail -1
}

install_postgres() {
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null ||
    die "PostgreSQL is not installed and cannot be installed from here (needs root and apt-get): install Debian's 'postgresql' package or set PG_BIN"
  echo "postgres-env: installing Debian's postgresql package (about a minute)" >&2
  log="$(mktemp)"
  if ! { apt-get install -y --no-install-recommends postgresql >"$log" 2>&1 ||
         { apt-get update >>"$log" 2>&1 &&
           apt-get install -y --no-install-recommends postgresql >>"$log" 2>&1; }; }; then
    cat "$log" >&2
    rm -f "$log"
    die "apt-get could not install postgresql (offline?)"
  fi
  rm -f "$log"
}

# Run a server binary as a user PostgreSQL accepts: it refuses root.
as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null ||
    echo $((20000 + RANDOM % 40000))
}

start() {
  local dir="$1"
  local bin
  bin="$(find_bin)"
  if [ -z "$bin" ]; then
    install_postgres
    bin="$(find_bin)"
    [ -n "$bin" ] || die "postgresql installed but no /usr/lib/postgresql/*/bin/initdb found"
  fi
  mkdir -p "$dir"
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || die "no 'postgres' user to run the server as (Debian's package creates it)"
    chown postgres "$dir"
  fi
  local pw
  pw="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
  printf '%s\n' "$pw" >"$dir/pw"
  [ "$(id -u)" = 0 ] && chown postgres "$dir/pw"
  as_owner "$bin/initdb" -D "$dir/data" -U probegate --auth=scram-sha-256 \
    --pwfile="$dir/pw" -E UTF8 --no-instructions >"$dir/initdb.log" 2>&1 ||
    { cat "$dir/initdb.log" >&2; die "initdb failed"; }
  rm -f "$dir/pw"
  local port tries=0
  # Throwaway data: durability settings off, enough connections for the
  # test threads' pools.
  until port="$(free_port)" && as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=400 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
      start >/dev/null; do
    tries=$((tries + 1))
    [ "$tries" -lt 5 ] || { tail -20 "$dir/server.log" >&2; die "PostgreSQL did not start"; }
  done
  echo "postgres-env: PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port, data in $dir" >&2
  echo "postgres://probegate:$pw@127.0.0.1:$port/postgres"
}

stop() {
  local dir="$1"
  local bin
  bin="$(find_bin)"
  if [ -n "$bin" ] && [ -f "$dir/data/postmaster.pid" ]; then
    as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
}

case "${1:-}" in
  start) [ -n "${2:-}" ] || die "usage: $0 start DIR"; start "$2" ;;
  stop) [ -n "${2:-}" ] || die "usage: $0 stop DIR"; stop "$2" ;;
  *) die "usage: $0 start DIR | stop DIR" ;;
esac
