#!/usr/bin/env bash
# Start neurond on a free loopback port, exercise a few routes (including errors and a training
# run), and check that GET /metrics is valid Prometheus text format by `promtool check metrics`
# and carries the families the daemon promises.
# usage: check_metrics.sh NEUROND_BINARY
set -euo pipefail
neurond=$1
dir=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT

# The log exists before the daemon starts: the redirection happens in the background child,
# and a read of a missing log would stop this script (set -e).
: >"$dir/log"
"$neurond" --port 0 --db "$dir/t.db" >"$dir/log" 2>&1 &
pid=$!
for _ in $(seq 100); do
  port=$(sed -n 's/.*listening on [^ ]*:\([0-9][0-9]*\).*/\1/p' "$dir/log" | head -n 1)
  [ -n "$port" ] && break
  sleep 0.05
done
[ -n "$port" ] || { echo "neurond did not start:"; cat "$dir/log"; exit 1; }
url=http://127.0.0.1:$port
json=(-H 'Content-Type: application/json')

curl -sf "$url/healthz" >/dev/null
curl -sf "${json[@]}" -d '{"kind":"logistic","inputs":2}' "$url/v1/models" >/dev/null
curl -sf "${json[@]}" -d '{"x":[[0,1],[1,0],[1,1]],"y":[0,1,1]}' "$url/v1/models/1/batches" >/dev/null
curl -sf "${json[@]}" -d '{"steps":25}' "$url/v1/models/1/train" >/dev/null
curl -s "$url/v1/models/99" >/dev/null
curl -s -X PUT "$url/healthz" >/dev/null
curl -sf "$url/metrics" >"$dir/metrics.txt"

promtool check metrics <"$dir/metrics.txt"
for family in neurond_http_requests_total neurond_http_request_duration_seconds \
              neurond_training_steps_total neurond_active_jobs; do
  grep -q "^# TYPE $family " "$dir/metrics.txt" || { echo "missing family $family"; exit 1; }
done
steps=$(awk '/^neurond_training_steps_total/ {print $2}' "$dir/metrics.txt")
[ "${steps%.*}" -ge 25 ] || { echo "neurond_training_steps_total is $steps, expected >= 25"; exit 1; }
grep -q 'neurond_http_requests_total{route="/v1/models/{id}",method="GET",status="404"} 1' \
  "$dir/metrics.txt" || { echo "404 on /v1/models/{id} not counted"; exit 1; }
echo "metrics: promtool found no problems"
