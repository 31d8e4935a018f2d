#!/usr/bin/env bash
# `cmake --install` yields a neurond that runs from its prefix alone: install the build into a
# fresh temporary prefix, start <prefix>/bin/neurond --port 0 from an empty directory (neither the
# sources nor the build), and check GET /healthz, the embedded dashboard and a clean stop.
# Usage: run.sh CMAKE BUILD_DIR. Exits 77 (skipped) without curl.
set -euo pipefail
cmake=$1 build=$2
command -v curl >/dev/null || { echo "SKIP: no curl"; exit 77; }

work=$(mktemp -d /tmp/neurond-install-XXXXXX)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$work"/*.log; do echo "== $f"; cat "$f"; done; exit 1; }

"$cmake" --install "$build" --prefix "$work/prefix" >"$work/install.log" 2>&1 ||
  fail "cmake --install exited $?"
bin=$work/prefix/bin/neurond
[ -x "$bin" ] || fail "no $bin after cmake --install"
[ -f "$work/prefix/share/doc/neurond/api.md" ] || fail "docs/api.md was not installed"

mkdir "$work/run"
cd "$work/run"
: >"$work/stdout.log"   # exists before the background child opens it, for the sed below
"$bin" --port 0 --db "$work/run/t.db" >"$work/stdout.log" 2>"$work/stderr.log" &
pid=$!
port=
for _ in $(seq 100); do
  port=$(sed -n 's/^neurond listening on .*:\([0-9][0-9]*\)$/\1/p' "$work/stdout.log")
  [ -n "$port" ] && break
  kill -0 "$pid" 2>/dev/null || fail "the installed neurond exited at start"
  sleep 0.1
done
[ -n "$port" ] || fail "the installed neurond did not say where it listens within 10 s"

health=$(curl -sS --max-time 10 -w ' %{http_code}' "http://127.0.0.1:$port/healthz") ||
  fail "GET /healthz: curl failed"
case $health in
  *'"status":"ok"'*' 200') ;;
  *) fail "GET /healthz answered: $health" ;;
esac
page=$(curl -sS --max-time 10 -w ' %{http_code}' "http://127.0.0.1:$port/") ||
  fail "GET /: curl failed"
case $page in
  *'<html'*' 200') ;;
  *) fail "GET / did not answer the embedded dashboard (status ${page##* })" ;;
esac

kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
pid=
[ "$rc" -eq 0 ] || fail "the installed neurond exited $rc after SIGTERM"
echo "installed neurond ran from $work/prefix: /healthz ok, dashboard served, clean stop"
