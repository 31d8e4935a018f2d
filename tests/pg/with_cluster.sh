#!/usr/bin/env bash
# tests/pg/with_cluster.sh NEUROND CMD [ARG...]: run CMD beside three neurond replicas that share
# one PostgreSQL database, behind HAProxy. Run it under tests/pg/with_postgres.sh, which provides
# the PostgreSQL server (NEUROND_TEST_PG).
#
# Each replica runs `NEUROND --port P --db DB --job-lease 3 --advertise 127.0.0.1:P` (and the words
# of NEUROND_CLUSTER_ARGS, when set) on a free loopback port P of its own, its stdout and stderr
# appended to a log file of its own; DB is a database made for this run. HAProxy balances
# requests round-robin over the replicas and health-checks each on GET /healthz every 500 ms
# (down after 2 failures, up after 1 success), retrying a request whose connection failed on
# another replica. CMD starts once every replica and the balancer answer, and sees:
#
#   NEUROND_CLUSTER_URL      http://127.0.0.1:PORT of HAProxy
#   NEUROND_REPLICA_URLS     the replicas' http://127.0.0.1:PORT, space-separated, replica 1 first
#   NEUROND_REPLICA_PIDS     their process ids at the start, in the same order
#   NEUROND_REPLICA_LOGS     their log files, in the same order
#   NEUROND_REPLICA_DB       the postgresql:// address the replicas share
#   NEUROND_REPLICA_EXE      NEUROND; NEUROND_REPLICA_ARGS the arguments every replica gets
#                            after its --port and --advertise
#   NEUROND_CLUSTER_DIR      the run's directory: replica-I.pid holds replica I's current pid
#   NEUROND_REPLICA_START    a command: `$NEUROND_REPLICA_START I` starts replica I (1-based)
#                            again on its port, log and database, after CMD killed it, and
#                            returns once its /healthz answers 200 (exit 1 if not within 15 s)
#
# so a test may kill -9, SIGSTOP, SIGCONT and restart replicas. Every replica (a paused one
# too), HAProxy and the directory are removed when CMD ends, however it ends. Exit 77 (a skip to
# ctest) when HAProxy or PostgreSQL is missing; otherwise CMD's exit status.
set -euo pipefail

if [ $# -lt 2 ]; then
  echo "usage: $0 NEUROND CMD [ARG...]" >&2
  exit 2
fi
neurond=$1
shift
replicas=3

haproxy=$(command -v haproxy || ls /usr/sbin/haproxy 2>/dev/null || true)
if [ -z "$haproxy" ]; then
  echo "SKIP: HAProxy (Debian package haproxy) is not installed"
  exit 77
fi
if [ -z "${NEUROND_TEST_PG:-}" ]; then
  echo "SKIP: no PostgreSQL test server (run under tests/pg/with_postgres.sh)"
  exit 77
fi
for tool in curl psql python3; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "SKIP: $tool is not installed"
    exit 77
  fi
done

dir=$(mktemp -d "${TMPDIR:-/tmp}/neurond-cluster.XXXXXX")
haproxy_pid=
stop() {
  local i pid
  # A paused replica ignores SIGTERM until it runs again: wake every one first.
  for i in $(seq 1 "$replicas"); do
    pid=$(cat "$dir/replica-$i.pid" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      kill -CONT "$pid" 2>/dev/null || true
      kill -TERM "$pid" 2>/dev/null || true
    fi
  done
  for i in $(seq 1 "$replicas"); do
    pid=$(cat "$dir/replica-$i.pid" 2>/dev/null || true)
    [ -n "$pid" ] || continue
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      # A child of this shell that has exited stays a zombie until it is waited for.
      [ "$(ps -o stat= -p "$pid" 2>/dev/null | cut -c1)" = Z ] && break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  done
  if [ -n "$haproxy_pid" ]; then
    kill -TERM "$haproxy_pid" 2>/dev/null || true
    wait "$haproxy_pid" 2>/dev/null || true
  fi
  rm -rf "$dir"
}
trap stop EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# A database of this run's own, so that nothing else in the server is seen by the replicas.
name="cluster_$$"
psql -q -v ON_ERROR_STOP=1 "$NEUROND_TEST_PG" -c "CREATE DATABASE $name" >/dev/null
db="${NEUROND_TEST_PG%/*}/$name"

# The one way a replica starts, at the beginning and on a test's request: a script of the run.
cat >"$dir/start-replica.sh" <<'SCRIPT'
#!/usr/bin/env bash
# start-replica.sh I: start replica I on its port and wait for its /healthz (15 s at most).
set -euo pipefail
here=$(dirname "$0")
i=${1:?usage: start-replica.sh I}
port=$(cat "$here/replica-$i.port")
read -r -a args <"$here/args"
exe=$(cat "$here/exe")
"$exe" --port "$port" --advertise "127.0.0.1:$port" "${args[@]}" \
  >>"$here/replica-$i.log" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$here/replica-$i.pid"
for _ in $(seq 1 150); do
  if curl -fsS -m 1 -o /dev/null "http://127.0.0.1:$port/healthz" 2>/dev/null; then
    exit 0
  fi
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "replica $i exited at start; its log:" >&2
    tail -n 20 "$here/replica-$i.log" >&2
    exit 1
  fi
  sleep 0.1
done
echo "replica $i did not answer /healthz within 15 s" >&2
exit 1
SCRIPT
chmod +x "$dir/start-replica.sh"
printf '%s\n' "$neurond" >"$dir/exe"
args="--db $db --job-lease 3 ${NEUROND_CLUSTER_ARGS:-}"
printf '%s\n' "$args" >"$dir/args"

urls=() pids=() logs=() servers=""
for i in $(seq 1 "$replicas"); do
  port=$(free_port)
  echo "$port" >"$dir/replica-$i.port"
  urls+=("http://127.0.0.1:$port")
  logs+=("$dir/replica-$i.log")
  servers+="    server r$i 127.0.0.1:$port check"$'\n'
done
# One at a time: the first applies the migrations, the others find them applied.
for i in $(seq 1 "$replicas"); do
  "$dir/start-replica.sh" "$i"
  pids+=("$(cat "$dir/replica-$i.pid")")
done

front=$(free_port)
cat >"$dir/haproxy.cfg" <<CFG
global
    maxconn 1024
    log stderr format raw local0 info

defaults
    mode http
    log global
    option httplog
    timeout connect 2s
    timeout client 10m
    # A synchronous /train may run for minutes, and an event stream is quiet for up to 15 s
    # between its keep-alive comments: the server side may be silent that long.
    timeout server 10m
    timeout http-request 30s
    timeout http-keep-alive 30s
    # A request whose connection could not be made goes to another replica.
    option redispatch
    retries 3
    # The balancer's own errors speak the API's error format (docker/haproxy.cfg does the same).
    http-error status 502 content-type "application/json; charset=utf-8" string '{"error":{"code":"unavailable","message":"the replica failed while answering"}}'
    http-error status 503 content-type "application/json; charset=utf-8" string '{"error":{"code":"unavailable","message":"no replica can take the request now"}}' hdr Retry-After 1
    http-error status 504 content-type "application/json; charset=utf-8" string '{"error":{"code":"unavailable","message":"the replica did not answer in time"}}'

frontend neurond
    bind 127.0.0.1:$front
    default_backend replicas

backend replicas
    balance roundrobin
    option httpchk GET /healthz
    http-check expect status 200
    default-server inter 500ms fall 2 rise 1
$servers
CFG
"$haproxy" -c -q -f "$dir/haproxy.cfg"
"$haproxy" -db -f "$dir/haproxy.cfg" >"$dir/haproxy.log" 2>&1 </dev/null &
haproxy_pid=$!
ok=0
for _ in $(seq 1 100); do
  if curl -fsS -m 1 -o /dev/null "http://127.0.0.1:$front/healthz" 2>/dev/null; then
    ok=1
    break
  fi
  sleep 0.1
done
if [ "$ok" -ne 1 ]; then
  echo "HAProxy did not answer on port $front; its log:" >&2
  cat "$dir/haproxy.log" >&2
  exit 1
fi

export NEUROND_CLUSTER_URL="http://127.0.0.1:$front"
export NEUROND_REPLICA_URLS="${urls[*]}"
export NEUROND_REPLICA_PIDS="${pids[*]}"
export NEUROND_REPLICA_LOGS="${logs[*]}"
export NEUROND_REPLICA_DB="$db"
export NEUROND_REPLICA_EXE="$neurond"
export NEUROND_REPLICA_ARGS="$args"
export NEUROND_CLUSTER_DIR="$dir"
export NEUROND_REPLICA_START="$dir/start-replica.sh"
rc=0
"$@" || rc=$?
if [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ]; then
  for i in $(seq 1 "$replicas"); do
    echo "--- replica $i log (last lines) ---"
    tail -n 40 "$dir/replica-$i.log" 2>/dev/null || true
  done
  echo "--- HAProxy log (last lines) ---"
  tail -n 40 "$dir/haproxy.log" 2>/dev/null || true
fi
exit "$rc"
