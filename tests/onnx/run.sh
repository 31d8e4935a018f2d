#!/usr/bin/env bash
# ONNX export end to end: start neurond on a free loopback port with a temporary database, run
# onnx.test.cjs (node's test runner + onnxruntime-node: every kind's export against POST
# /predict, bad format/dtype values, a graph that cannot be exported), then check every file it
# exported with Debian's python3-onnx (check_models.py: onnx.checker full_check, opset,
# producer, metadata).
#
# usage: tests/onnx/run.sh [NEUROND_BINARY]           (default: build/neurond)
# Exits 77 (skipped, for ctest) when node, Debian's python3-onnx or onnxruntime-node is missing
# and `npm ci --ignore-scripts` cannot install it. onnxruntime-node ships its CPU runtime in
# the package; its install script only fetches optional GPU builds, hence --ignore-scripts.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$here/../daemon.sh"
neurond=$(realpath "${1:-$root/build/neurond}")
py=/usr/bin/python3

skip() { echo "onnx test skipped: $*"; exit 77; }
command -v node >/dev/null || skip "node not found"
[ -x "$py" ] && "$py" -c 'import onnx' 2>/dev/null || skip "Debian's python3-onnx not installed"
[ -x "$neurond" ] || { echo "no neurond binary at $neurond" >&2; exit 1; }
if [ ! -f "$here/node_modules/onnxruntime-node/package.json" ]; then
  command -v npm >/dev/null || skip "npm not found to install onnxruntime-node"
  (cd "$here" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) ||
    skip "npm ci could not install onnxruntime-node"
fi

dir=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$dir"
}
trap cleanup EXIT

"$neurond" --bind 127.0.0.1 --port 0 --db "$dir/onnx.db" --log-level warn >"$dir/neurond.log" 2>&1 &
pid=$!
port=$(daemon_port "$dir/neurond.log") || true
[ -n "$port" ] || { echo "neurond did not start:" >&2; cat "$dir/neurond.log" >&2; exit 1; }

mkdir "$dir/exports"
status=0
NEUROND_URL=http://127.0.0.1:$port ONNX_OUT_DIR=$dir/exports \
  node --test --test-reporter=spec --test-concurrency=1 "$here/onnx.test.cjs" || status=$?
"$py" "$here/check_models.py" "$dir/exports" || status=1

kill -TERM "$pid" 2>/dev/null || true
rc=0
wait "$pid" || rc=$?
pid=
if [ "$rc" -ne 0 ] || grep -qE 'Sanitizer|runtime error' "$dir/neurond.log"; then
  echo "neurond exited with status $rc or reported a sanitizer error"
  status=1
fi
[ "$status" -eq 0 ] || { echo "--- neurond log:"; tail -n 60 "$dir/neurond.log"; }
exit "$status"
