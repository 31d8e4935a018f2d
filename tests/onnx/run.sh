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

daemon_workdir
dir=$daemon_dir
daemon_start "$neurond" "$dir"

mkdir "$dir/exports"
status=0
NEUROND_URL=$daemon_url ONNX_OUT_DIR=$dir/exports \
  node --test --test-reporter=spec --test-concurrency=1 "$here/onnx.test.cjs" || status=$?
"$py" "$here/check_models.py" "$dir/exports" || status=1

daemon_stop "$dir" || status=1
[ "$status" -eq 0 ] || { echo "--- neurond log:"; tail -n 60 "$dir/neurond.log"; }
exit "$status"
