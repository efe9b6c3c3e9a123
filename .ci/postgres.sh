#!/usr/bin/env bash
# A throwaway PostgreSQL server on loopback, for the tests of distributed search.
#
#   env=$(bash .ci/postgres.sh start [--no-install]) && eval "$env"
#       starts one (trust auth, 127.0.0.1, a free port, data in a temporary folder) and prints
#       export ATTNSEARCH_TEST_POSTGRES=postgresql://postgres@127.0.0.1:PORT/attnsearch
#       export ATTNSEARCH_TEST_POSTGRES_DIR=/tmp/attnsearch-pg.XXXXXX
#   bash .ci/postgres.sh stop "$ATTNSEARCH_TEST_POSTGRES_DIR"
#
# Uses the PostgreSQL binaries on PATH or under /usr/lib/postgresql/*/bin; without any, as root
# with apt-get, installs the `postgresql` package (unless --no-install). PostgreSQL refuses to run
# as root, so root runs it as the `postgres` user (created when missing). Progress goes to stderr;
# stdout carries only the two export lines.
set -euo pipefail

say() { echo "postgres.sh: $*" >&2; }

find_bindir() {
  local c d
  if c=$(command -v pg_ctl 2>/dev/null) && command -v initdb >/dev/null 2>&1; then
    d=$(dirname "$(readlink -f "$c")")
    if [ -x "$d/initdb" ] && [ -x "$d/createdb" ]; then echo "$d"; return 0; fi
  fi
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$d/pg_ctl" ] && [ -x "$d/initdb" ] && [ -x "$d/createdb" ]; then echo "$d"; return 0; fi
  done
  return 1
}

# Run a command as the server's owner: `postgres` when we are root, else ourselves.
as_owner() {
  if [ "$(id -u)" = 0 ]; then
    if command -v runuser >/dev/null 2>&1; then runuser -u postgres -- "$@"
    else su -s /bin/sh postgres -c "$(printf '%q ' "$@")"; fi
  else "$@"; fi
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

start() {
  local install=1
  [ "${1:-}" = "--no-install" ] && install=0
  local bindir
  if ! bindir=$(find_bindir); then
    if [ "$install" = 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      say "no PostgreSQL found: installing the postgresql package"
      export DEBIAN_FRONTEND=noninteractive
      apt-get install -y -q postgresql >/dev/null 2>&1 || \
        { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q postgresql >/dev/null 2>&1; } || \
        { say "apt-get install postgresql failed"; exit 3; }
      bindir=$(find_bindir) || { say "postgresql installed but no initdb/pg_ctl found"; exit 3; }
    else
      say "no PostgreSQL binaries (initdb, pg_ctl) found"; exit 3
    fi
  fi
  if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
    say "creating the postgres system user"
    useradd --system --no-create-home --home-dir /nonexistent --shell /bin/sh postgres
  fi
  local dir port
  dir=$(mktemp -d "${TMPDIR:-/tmp}/attnsearch-pg.XXXXXX")
  chmod 700 "$dir"
  [ "$(id -u)" = 0 ] && chown postgres: "$dir"
  cd "$dir"   # the owner must be able to stat its working directory
  if ! as_owner "$bindir/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 --locale=C --no-sync \
      >"$dir/initdb.log" 2>&1; then
    say "initdb failed:"; tail -n 20 "$dir/initdb.log" >&2; rm -rf "$dir"; exit 3
  fi
  local tries=0
  while :; do
    port=$(free_port)
    if as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
        start >/dev/null 2>&1; then
      break
    fi
    tries=$((tries + 1))
    if [ "$tries" -ge 3 ]; then
      say "the server did not start:"; tail -n 20 "$dir/server.log" >&2 || true; rm -rf "$dir"; exit 3
    fi
  done
  if ! as_owner "$bindir/createdb" -h 127.0.0.1 -p "$port" -U postgres attnsearch >&2; then
    as_owner "$bindir/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$dir"; say "createdb failed"; exit 3
  fi
  echo "$bindir" >"$dir/bindir"
  say "PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') on 127.0.0.1:$port (data in $dir)"
  echo "export ATTNSEARCH_TEST_POSTGRES=postgresql://postgres@127.0.0.1:$port/attnsearch"
  echo "export ATTNSEARCH_TEST_POSTGRES_DIR=$dir"
}

stop() {
  local dir="${1:-}"
  if [ -z "$dir" ] || [ ! -d "$dir/data" ]; then say "stop: no server folder given (${dir:-none})"; return 0; fi
  local bindir
  bindir=$(cat "$dir/bindir" 2>/dev/null || find_bindir)
  cd "$dir"
  as_owner "$bindir/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null 2>&1 || \
    as_owner "$bindir/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  cd /
  rm -rf "$dir"
  say "stopped the server in $dir"
}

case "${1:-}" in
  start) shift; start "$@" ;;
  stop) shift; stop "$@" ;;
  *) echo "usage: $0 start [--no-install] | stop DIR" >&2; exit 2 ;;
esac
