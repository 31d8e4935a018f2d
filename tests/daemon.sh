# tests/daemon.sh -- sourced by the shell tests that start neurond with --port 0.
#
# daemon_port LOG: wait up to 10 s for neurond's "listening on HOST:PORT" line in LOG and print
# PORT; prints nothing (and returns 1) when the line never comes.
daemon_port() {
  local log=$1 port=
  for _ in $(seq 200); do
    # LOG may not exist yet: the daemon's redirection happens in its own background child.
    port=$(sed -n 's/.*listening on [^ ]*:\([0-9][0-9]*\).*/\1/p' "$log" 2>/dev/null | head -n 1) || port=
    [ -n "$port" ] && { echo "$port"; return 0; }
    sleep 0.05
  done
  return 1
}

# daemon_start BINARY DIR: run BINARY on a free loopback port with the database DIR/neurond.db
# and its log in DIR/neurond.log; sets daemon_pid and daemon_url. Returns 1 (the log on stderr)
# when it does not come up. Pair with daemon_stop, and kill daemon_pid in an EXIT trap.
daemon_start() {
  local neurond=$1 dir=$2 port=
  "$neurond" --bind 127.0.0.1 --port 0 --db "$dir/neurond.db" --log-level warn \
    >"$dir/neurond.log" 2>&1 &
  daemon_pid=$!
  port=$(daemon_port "$dir/neurond.log") || true
  [ -n "$port" ] || { echo "neurond did not start:" >&2; cat "$dir/neurond.log" >&2; return 1; }
  daemon_url=http://127.0.0.1:$port
}

# daemon_stop DIR: SIGTERM the daemon of daemon_start and wait for it; returns 1 when it exited
# with a non-zero status or its log shows a sanitizer report.
daemon_stop() {
  local dir=$1 rc=0
  kill -TERM "$daemon_pid" 2>/dev/null || true
  wait "$daemon_pid" || rc=$?
  daemon_pid=
  if [ "$rc" -ne 0 ] || grep -qE 'Sanitizer|runtime error' "$dir/neurond.log"; then
    echo "neurond exited with status $rc or reported a sanitizer error"
    return 1
  fi
}

# daemon_workdir: a new temporary directory in daemon_dir, removed when the shell exits, after
# killing a daemon of daemon_start still running (an EXIT trap).
daemon_workdir() {
  daemon_dir=$(mktemp -d)
  daemon_pid=
  trap daemon_cleanup EXIT
}

daemon_cleanup() {
  if [ -n "$daemon_pid" ]; then
    kill "$daemon_pid" 2>/dev/null || true
    wait "$daemon_pid" 2>/dev/null || true
  fi
  rm -rf "$daemon_dir"
}
