#!/usr/bin/env bash
# tests/pg/with_postgres.sh CMD [ARG...]: run CMD beside a throwaway PostgreSQL cluster.
#
# The cluster is made by initdb in a temporary directory, as the postgres user when run as root
# (PostgreSQL refuses to run as root), listens on a free loopback port only, trusts loopback
# connections (nothing else can reach it), and is stopped and removed when CMD ends, however it
# ends. CMD sees NEUROND_TEST_PG, a postgresql:// address of the cluster's `postgres` database,
# and NEUROND_TEST_PG_STOP / NEUROND_TEST_PG_START, shell commands that stop the server (fast
# shutdown: sessions are cut) and start it again on the same port, for outage tests, and
# NEUROND_TEST_PG_PAUSE / NEUROND_TEST_PG_RESUME, which stop every process of the server with
# SIGSTOP and continue them: a server that hangs rather than refuses. Exit 77 (a skip to ctest)
# when the PostgreSQL server binaries are missing.
set -euo pipefail

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ] || [ ! -x "$bindir/pg_ctl" ]; then
  echo "SKIP: the PostgreSQL server (Debian package postgresql) is not installed"
  exit 77
fi

dir=$(mktemp -d "${TMPDIR:-/tmp}/neurond-pg.XXXXXX")
as=()
if [ "$(id -u)" -eq 0 ]; then
  if ! id postgres >/dev/null 2>&1; then
    echo "SKIP: running as root and there is no postgres user to run PostgreSQL as"
    rm -rf "$dir"
    exit 77
  fi
  chown postgres "$dir"
  chmod 700 "$dir"
  as=(runuser -u postgres --)
fi

started=0
stop() {
  if [ "$started" -eq 1 ]; then
    # A test that failed while the server was paused (NEUROND_TEST_PG_PAUSE) left it stopped,
    # and a stopped server ignores pg_ctl: let it run first.
    if [ -x "$dir/signal-server" ]; then "$dir/signal-server" CONT >/dev/null 2>&1 || true; fi
    "${as[@]}" "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
}
trap stop EXIT
trap 'exit 130' INT TERM

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"${as[@]}" "$bindir/initdb" -D "$dir/data" -U neurond --auth=trust -E UTF8 --no-sync \
  >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
# fsync off: a test cluster's data need not survive a power cut, and it is much faster. A
# measurement against SQLite's durable commits sets NEUROND_TEST_PG_FSYNC=on.
pg_ctl="${as[*]} $bindir/pg_ctl -D $dir/data -l $dir/server.log -w -t 30"
options="-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=${NEUROND_TEST_PG_FSYNC:-off} -c max_connections=200"
started=1
$pg_ctl -o "$options" start >/dev/null || { cat "$dir/server.log" >&2; exit 1; }

export NEUROND_TEST_PG="postgresql://neurond@127.0.0.1:$port/postgres"
export NEUROND_TEST_PG_STOP="$pg_ctl -m fast stop >/dev/null"
export NEUROND_TEST_PG_START="$pg_ctl -o '$options' start >/dev/null"
# A server that hangs instead of refusing: every process of it stopped, then continued.
cat >"$dir/signal-server" <<EOF
#!/bin/sh
pid=\$(head -n 1 "$dir/data/postmaster.pid")
kids=\$(grep -l "^PPid:[[:space:]]*\$pid\\\$" /proc/[0-9]*/status 2>/dev/null | cut -d/ -f3)
kill -"\$1" "\$pid" \$kids
EOF
chmod +x "$dir/signal-server"
export NEUROND_TEST_PG_PAUSE="$dir/signal-server STOP"
export NEUROND_TEST_PG_RESUME="$dir/signal-server CONT"
set +e
"$@"
rc=$?
set -e
if [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ]; then
  echo "--- PostgreSQL server log (last lines) ---"
  tail -n 30 "$dir/server.log" 2>/dev/null || true
fi
exit "$rc"
