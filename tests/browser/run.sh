#!/usr/bin/env bash
# The dashboard (GET /) in headless Chromium: start neurond twice on free loopback ports with
# temporary databases -- once open, once with --token-file -- and run dashboard.test.mjs
# (node's test runner + playwright-core) against them.
#
# usage: tests/browser/run.sh [NEUROND_BINARY]          (default: build/neurond)
# env:   CHROMIUM    browser binary (default /usr/bin/chromium, Debian's package)
#        SCREENSHOT  where to save a 1280x800 picture of a model page (default: none;
#                    SCREENSHOT=docs/dashboard.png refreshes the one in the docs)
# Exits 77 (skipped, for ctest) when node or chromium is missing, or when playwright-core is
# not installed and `npm ci` cannot install it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$here/../daemon.sh"
neurond=$(realpath "${1:-$root/build/neurond}")
chromium=${CHROMIUM:-/usr/bin/chromium}

skip() { echo "browser test skipped: $*"; exit 77; }
command -v node >/dev/null || skip "node not found"
[ -x "$chromium" ] || skip "$chromium not found (Debian package chromium)"
[ -x "$neurond" ] || { echo "no neurond binary at $neurond" >&2; exit 1; }
if [ ! -f "$here/node_modules/playwright-core/package.json" ]; then
  command -v npm >/dev/null || skip "npm not found to install playwright-core"
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error) ||
    skip "npm ci could not install playwright-core"
fi

dir=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

# start NAME [FLAGS...]: run neurond in the background; sets $url once it listens. (Not in a
# $(...) subshell: the pid must reach this shell's list for cleanup.)
start() {
  local name=$1 port=
  shift
  "$neurond" --bind 127.0.0.1 --port 0 --db "$dir/$name.db" --log-level warn "$@" \
    >"$dir/$name.log" 2>&1 &
  pids+=($!)
  port=$(daemon_port "$dir/$name.log") || true
  [ -n "$port" ] || { echo "neurond ($name) did not start:" >&2; cat "$dir/$name.log" >&2; exit 1; }
  url=http://127.0.0.1:$port
}

token=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
printf '# dashboard browser test\n%s\n' "$token" >"$dir/tokens"
start open
open_url=$url
start auth --token-file "$dir/tokens"
auth_url=$url

if [ -n "${SCREENSHOT:-}" ]; then
  case $SCREENSHOT in /*) ;; *) SCREENSHOT=$root/$SCREENSHOT ;; esac
fi

status=0
NEUROND_URL=$open_url NEUROND_AUTH_URL=$auth_url NEUROND_TOKEN=$token CHROMIUM=$chromium \
  SCREENSHOT=${SCREENSHOT:-} BROWSER_TMP=$dir \
  node --test --test-reporter=spec --test-concurrency=1 "$here/dashboard.test.mjs" || status=$?

# Stop the daemons as an operator would; a clean exit (and, in a sanitizer build, no report)
# is part of passing.
names=(open auth)
for i in "${!pids[@]}"; do
  kill -TERM "${pids[$i]}" 2>/dev/null || true
  rc=0
  wait "${pids[$i]}" || rc=$?
  if [ "$rc" -ne 0 ] || grep -qE 'Sanitizer|runtime error' "$dir/${names[$i]}.log"; then
    echo "neurond (${names[$i]}) exited with status $rc or reported a sanitizer error"
    status=1
  fi
done
pids=()
if [ "$status" -ne 0 ]; then
  for name in "${names[@]}"; do
    echo "--- neurond ($name) log:"
    tail -n 60 "$dir/$name.log"
  done
fi
exit "$status"
