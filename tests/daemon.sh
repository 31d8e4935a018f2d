# tests/daemon.sh -- sourced by the shell tests that start neurond with --port 0.
#
# daemon_port LOG: wait up to 10 s for neurond's "listening on HOST:PORT" line in LOG and print
# PORT; prints nothing (and returns 1) when the line never comes.
daemon_port() {
  local log=$1 port=
  for _ in $(seq 200); do
    port=$(sed -n 's/.*listening on [^ ]*:\([0-9][0-9]*\).*/\1/p' "$log" | head -n 1)
    [ -n "$port" ] && { echo "$port"; return 0; }
    sleep 0.05
  done
  return 1
}
