#!/usr/bin/env bash
# bench/load/run.sh -- a bounded load run against a neurond started here, on 127.0.0.1 only.
#
# Starts neurond on a free loopback port with a temporary database, creates the models
# (a tiny linear model and a mid-size MLP for predict, one model per /step stream and per
# /train stream, each train model with 256 stored rows), then drives it with wrk and
# bench/load/mix.lua: a warm-up, then the measured run. Meanwhile it samples the daemon's open
# file descriptors and RSS every second. It reports requests/s (overall and per kind), latency
# percentiles, status codes, fd and RSS, writes the report (Markdown) and prints it.
#
# It fails (exit 1) when any response is 5xx -- or any other non-2xx, since the mix is built so
# that none is expected -- on socket errors, when the daemon dies or does not stop cleanly, when
# the fd count after the run exceeds the count after the warm-up by more than FD_SLACK, when RSS after
# the run exceeds RSS after the warm-up by RSS_MAX_GROWTH_PCT or more, or when a model's step
# counter does not account for every successful /step or /train call.
#
# usage: bench/load/run.sh [--smoke] [--neurond PATH] [--out FILE] [--threads N]
#   --smoke          8 connections, 1 s warm-up, 2 s run (for ctest); report not kept unless --out
#   --neurond PATH   use this binary instead of building build-load/neurond (Release)
#   --out FILE       where to write the report (default bench/load/results.md; --smoke: none)
#   --threads N      neurond --threads (default: the daemon's default, one per core)
#   --layout MIX     the connections per kind instead of the built-in mix, e.g.
#                    train=8,healthz=2 (kinds: predict_tiny predict_mlp step train get_model
#                    history parameters healthz; get_model/history need step or train models)
# environment: LOAD_DURATION, LOAD_WARMUP (seconds), FD_SLACK (4), RSS_MAX_GROWTH_PCT
# (10; --smoke: 50, as two seconds say little about a slow leak; no RSS gate for an ASan build).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

smoke=0 neurond= out= threads= custom_layout=
while [ $# -gt 0 ]; do
  case $1 in
    --smoke) smoke=1 ;;
    --neurond) neurond=$2; shift ;;
    --out) out=$2; shift ;;
    --threads) threads=$2; shift ;;
    --layout) custom_layout=$2; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

if [ $smoke = 1 ]; then
  duration=${LOAD_DURATION:-2} warmup=${LOAD_WARMUP:-1} conns=8
  layout=predict_tiny=1,predict_mlp=1,step=1,train=1,get_model=1,history=1,parameters=1,healthz=1
  rss_max_pct=${RSS_MAX_GROWTH_PCT:-50}
else
  duration=${LOAD_DURATION:-20} warmup=${LOAD_WARMUP:-5} conns=64
  layout=predict_tiny=10,predict_mlp=10,step=8,train=8,get_model=6,history=6,parameters=6,healthz=10
  rss_max_pct=${RSS_MAX_GROWTH_PCT:-10}
  [ -n "$custom_layout" ] || out=${out:-$here/results.md}
fi
if [ -n "$custom_layout" ]; then
  layout=$custom_layout
  conns=$(tr ',' '\n' <<<"$layout" | awk -F= '{n += $2} END {print n + 0}')
fi
fd_slack=${FD_SLACK:-4}
n_step=$(sed -n 's/.*step=\([0-9]*\).*/\1/p' <<<"$layout")
n_train=$(sed -n 's/.*train=\([0-9]*\).*/\1/p' <<<"$layout")
n_step=${n_step:-0} n_train=${n_train:-0}

for tool in wrk curl awk; do
  command -v $tool >/dev/null || { echo "run.sh: $tool is not installed (Debian: apt-get install $tool)" >&2; exit 2; }
done

if [ -z "$neurond" ]; then
  build=$root/build-load
  echo "== building $build/neurond (Release)" >&2
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DNEUROND_TESTS=OFF >/dev/null
  cmake --build "$build" --target neurond -j2 >/dev/null
  neurond=$build/neurond
fi
[ -x "$neurond" ] || { echo "run.sh: $neurond is not executable" >&2; exit 2; }
# Under AddressSanitizer RSS grows with the allocator's quarantine by design: report it, no gate.
sanitized=0
if grep -aq __asan_init "$neurond" 2>/dev/null; then sanitized=1; fi

t_start=$(date +%s.%N)
say() { echo "== [$(awk -v a="$t_start" -v b="$(date +%s.%N)" 'BEGIN {printf "%5.1fs", b - a}')] $*" >&2; }
dir=$(mktemp -d "${TMPDIR:-/tmp}/neurond-load.XXXXXX")
pid= sampler=
cleanup() {
  [ -n "$sampler" ] && kill "$sampler" 2>/dev/null
  [ -n "$pid" ] && kill "$pid" 2>/dev/null
  wait 2>/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT

# ------------------------------------------------------------------ start the daemon
args=(--bind 127.0.0.1 --port 0 --db "$dir/load.db" --log-level warn)
[ -n "$threads" ] && args+=(--threads "$threads")
: >"$dir/stdout"   # exists before the background child opens it, for the sed below
"$neurond" "${args[@]}" >"$dir/stdout" 2>"$dir/log" &
pid=$!
port=
for _ in $(seq 100); do
  port=$(sed -n 's/^neurond listening on 127\.0\.0\.1:\([0-9][0-9]*\)$/\1/p' "$dir/stdout" | head -n 1)
  [ -n "$port" ] && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.05
done
[ -n "$port" ] || { echo "run.sh: neurond did not start:" >&2; cat "$dir/stdout" "$dir/log" >&2; exit 1; }
url=http://127.0.0.1:$port

api() { # METHOD PATH [BODY] -> body on stdout; fails on a non-2xx answer
  local body=${3:-}
  if [ -n "$body" ]; then
    curl -sS --fail-with-body --max-time 10 -X "$1" -H 'Content-Type: application/json' \
         --data-binary "$body" "$url$2"
  else
    curl -sS --fail-with-body --max-time 10 -X "$1" "$url$2"
  fi
}
new_model() { api POST /v1/models "$1" | grep -o '"id":[0-9]*' | head -n 1 | cut -d: -f2; }

# 256 rows of 8 features in [-1,1], label 1 where x·w > 0: JSON batch body, seeded.
batch_json() {
  awk -v seed="$1" 'BEGIN {
    srand(seed); split("0.5 -0.25 0.75 0.1 -0.6 0.3 0.2 -0.4", w, " ")
    printf "{\"x\":["
    for (r = 1; r <= 256; r++) {
      s = 0; printf "%s[", (r > 1 ? "," : "")
      for (c = 1; c <= 8; c++) { x = rand() * 2 - 1; s += x * w[c]; printf "%s%.4f", (c > 1 ? "," : ""), x }
      printf "]"; y[r] = s > 0 ? 1 : 0
    }
    printf "],\"y\":["
    for (r = 1; r <= 256; r++) printf "%s%d", (r > 1 ? "," : ""), y[r]
    printf "]}"
  }'
}

say "$("$neurond" --version 2>/dev/null | head -n 1) on $url, db $dir/load.db"
tiny=$(new_model '{"name":"load-tiny","kind":"linear","inputs":2,"init":{"method":"uniform","scale":0.5,"seed":1}}')
mlp=$(new_model '{"name":"load-mlp","kind":"mlp","inputs":32,"hidden":[{"units":64,"activation":"relu"},{"units":64,"activation":"relu"}],"outputs":4,"output_activation":"softmax","init":{"method":"xavier","seed":2}}')
step_ids=() train_ids=()
for i in $(seq "$n_step"); do
  step_ids+=("$(new_model "{\"name\":\"load-step-$i\",\"kind\":\"mlp\",\"inputs\":8,\"hidden\":[{\"units\":16,\"activation\":\"tanh\"}],\"init\":{\"method\":\"xavier\",\"seed\":$((10 + i))},\"optimizer\":{\"method\":\"sgd\",\"learning_rate\":0.01}}")")
done
for i in $(seq "$n_train"); do
  id=$(new_model "{\"name\":\"load-train-$i\",\"kind\":\"mlp\",\"inputs\":8,\"hidden\":[{\"units\":16,\"activation\":\"tanh\"}],\"output_activation\":\"sigmoid\",\"init\":{\"method\":\"xavier\",\"seed\":$((100 + i))},\"optimizer\":{\"method\":\"adam\",\"learning_rate\":0.001}}")
  api POST "/v1/models/$id/batches" "$(batch_json $((100 + i)))" >/dev/null
  train_ids+=("$id")
done
join() { local IFS=,; echo "$*"; }
export LOAD_LAYOUT=$layout LOAD_TINY=$tiny LOAD_MLP=$mlp
export LOAD_STEP=$(join "${step_ids[@]}") LOAD_TRAIN=$(join "${train_ids[@]}")
export LOAD_READ=$(join "${train_ids[@]}" "${step_ids[@]}")
export LOAD_PARAMS=$(join "$mlp" "$tiny" "${train_ids[@]}")

# ------------------------------------------------------------------ sampling
fds() { ls /proc/"$pid"/fd 2>/dev/null | wc -l; }
rss() { awk '/^VmRSS:/ {print $2}' /proc/"$pid"/status 2>/dev/null || echo 0; }
now() { date +%s.%N; }
# The daemon's CPU time (clock ticks, user + system), and the machine's busy and total ticks.
cpu() {
  local d
  d=$(sed 's/^.*) //' /proc/"$pid"/stat 2>/dev/null | awk '{print $12 + $13}')
  echo "${d:-0} $(awk '/^cpu / {t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t}' /proc/stat)"
}
socks() { find /proc/"$pid"/fd -lname 'socket:*' 2>/dev/null | wc -l; }
# After a run, wait (bounded) until the server has closed the clients' connections.
settled_fds() {
  for _ in $(seq 50); do
    [ "$(socks)" -le "$socks0" ] && break
    sleep 0.1
  done
  fds
}

loadavg0=$(cut -d' ' -f1-3 /proc/loadavg)
fd0=$(fds) rss0=$(rss) socks0=$(socks)
max_samples=$((warmup + duration + 30))
( for _ in $(seq "$max_samples"); do
    kill -0 "$pid" 2>/dev/null || break
    echo "$(now) $(fds) $(rss) $(cpu)"
    sleep 1
  done ) >"$dir/samples" &
sampler=$!

run_wrk() { # SECONDS OUTFILE
  LOAD_OUT=$2 timeout $(($1 + 30)) wrk -t "$conns" -c "$conns" -d "$1"s --timeout 10s \
    -s "$here/mix.lua" "$url" >"$2.wrk" 2>&1 || { echo "run.sh: wrk failed:" >&2; cat "$2.wrk" >&2; exit 1; }
}

say "warm-up: $conns connections, ${warmup}s"
t_warm=$(now)
run_wrk "$warmup" "$dir/warm.txt"
fd_warm=$(settled_fds) rss_warm=$(rss)
say "run: $conns connections, ${duration}s"
t_run=$(now)
run_wrk "$duration" "$dir/run.txt"
t_end=$(now)
fd_end=$(settled_fds) rss_end=$(rss)
kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true; sampler=

# ------------------------------------------------------------------ checks
say "checks"
fail=()
alive=yes
kill -0 "$pid" 2>/dev/null || { alive=no; fail+=("neurond died during the run"); }
health=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$url/healthz" || true)
[ "$health" = 200 ] || fail+=("GET /healthz after the run answered $health")

for f in warm run; do
  bad5=$(awk '$1 == "status" && $2 >= 500 {n += $3} END {print n + 0}' "$dir/$f.txt")
  bad=$(awk '$1 == "status" && ($2 < 200 || $2 >= 300) {n += $3} END {print n + 0}' "$dir/$f.txt")
  sock=$(awk '$1 == "socket_errors" {n = 0; for (i = 2; i <= NF; i++) {split($i, a, "="); n += a[2]}; print n}' "$dir/$f.txt")
  [ "$bad5" = 0 ] || fail+=("$f: $bad5 responses with a 5xx status")
  [ "$bad" = "$bad5" ] || fail+=("$f: $((bad - bad5)) non-2xx responses other than 5xx (none is expected)")
  [ "$sock" = 0 ] || fail+=("$f: socket errors: $(awk '$1 == "socket_errors"' "$dir/$f.txt")")
  grep -q '^overall ' "$dir/$f.txt" || fail+=("$f: wrk wrote no summary")
done
# Against the count after the warm-up: each worker thread opens its SQLite connection (three
# fds: database, WAL, shared memory) on first use, and with many threads not all of them
# have served a request before the warm-up.
[ $((fd_end - fd_warm)) -le "$fd_slack" ] ||
  fail+=("fd count grew from $fd_warm after the warm-up to $fd_end after the run (slack $fd_slack)")
rss_pct=$(awk -v a="$rss_warm" -v b="$rss_end" 'BEGIN {printf "%.1f", (a > 0 ? (b - a) * 100 / a : 0)}')
[ $sanitized = 1 ] || awk -v p="$rss_pct" -v m="$rss_max_pct" 'BEGIN {exit !(p < m)}' ||
  fail+=("RSS grew ${rss_pct}% from the end of the warm-up (${rss_warm} kB) to the end (${rss_end} kB), limit ${rss_max_pct}%")

# Every successful call is an update: each model's step counter must equal the successful calls
# of its connection (5 steps per /train), plus at most one call per wrk run that was still in
# flight when wrk stopped (the server finishes it; wrk does not count it).
check_steps() { # KIND PER_CALL IDS...
  local kind=$1 per=$2 i=0 id ok step
  shift 2
  for id in "$@"; do
    i=$((i + 1))
    ok=$(awk -v k="$kind" -v n="$i" '$1 == "stream" && $2 == k && $3 == n {s += $4} END {print s + 0}' \
         "$dir/warm.txt" "$dir/run.txt")
    step=$(api GET "/v1/models/$id" | grep -o '"step":[0-9]*' | head -n 1 | cut -d: -f2)
    if [ -z "$step" ] || [ "$step" -lt $((ok * per)) ] || [ "$step" -gt $(((ok + 2) * per)) ]; then
      fail+=("model $id ($kind stream $i): step $step, but $ok successful calls x $per")
    fi
  done
}
if [ $alive = yes ]; then
  check_steps step 1 "${step_ids[@]}"
  check_steps train 5 "${train_ids[@]}"
fi

# Stop the daemon: SIGTERM, bounded wait, clean exit expected.
say "stopping neurond"
kill -TERM "$pid" 2>/dev/null || true
stopped=no
for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || { stopped=yes; break; }; sleep 0.1; done
if [ $stopped = yes ]; then
  set +e; wait "$pid"; code=$?; set -e
  [ "$code" = 0 ] || fail+=("neurond exited with status $code after SIGTERM")
else
  fail+=("neurond did not stop within 10 s of SIGTERM")
  kill -KILL "$pid" 2>/dev/null || true
fi
pid=
log_errors=$(grep -ciE 'error|assert|sanitizer' "$dir/log" || true)

# ------------------------------------------------------------------ report
ms() { awk -v v="$1" 'BEGIN {printf "%.2f", v}'; }
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }
report() {
  local r=$dir/run.txt line kind
  local overall; overall=$(grep '^overall ' "$r" || true)
  echo "## Load run ($( [ $smoke = 1 ] && echo smoke || echo full ))"
  echo
  echo "- when: $(date -u +%Y-%m-%dT%H:%M:%SZ); host: $(nproc) cores, $(uname -sr); $(wrk --version 2>&1 | head -n 1 | cut -d' ' -f1-2)"
  echo "- neurond: $("$neurond" --version 2>/dev/null | head -n 1) at $(git -C "$root" rev-parse --short HEAD 2>/dev/null)$(git -C "$root" diff --quiet HEAD -- lib server schema 2>/dev/null || echo '+local changes'), --threads ${threads:-default ($(nproc))}, db on $(df -T "$dir" | awk 'NR == 2 {print $2}')"
  echo "- machine load average before the run: $loadavg0 (other work on the host skews every figure)"
  echo "- load: $conns connections on 127.0.0.1 (one wrk thread each), ${warmup}s warm-up then ${duration}s measured"
  echo "- mix (connections): $(sed 's/=/ /g; s/,/, /g' <<<"$layout")"
  echo
  echo "| kind | conns | requests | req/s | p50 ms | p90 ms | p99 ms | max ms | statuses |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---|"
  while read -r line; do
    kind=$(cut -d' ' -f2 <<<"$line")
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$kind" \
      "$(field conns "$line")" "$(field n "$line")" "$(field rps "$line")" \
      "$(ms "$(field p50 "$line")")" "$(ms "$(field p90 "$line")")" \
      "$(ms "$(field p99 "$line")")" "$(ms "$(field max "$line")")" \
      "$(awk -v k="$kind" '$1 == "kind_status" && $2 == k {printf "%s%s: %s", (n++ ? ", " : ""), $3, $4}' "$r")"
  done < <(grep '^kind ' "$r")
  printf '| **all** | %s | %s | **%s** | %s | %s | %s | %s | %s |\n' \
    "$(field conns "$overall")" "$(field n "$overall")" "$(field rps "$overall")" \
    "$(ms "$(field p50 "$overall")")" "$(ms "$(field p90 "$overall")")" \
    "$(ms "$(field p99 "$overall")")" "$(ms "$(field max "$overall")")" \
    "$(awk '$1 == "status" {printf "%s%s: %s", (n++ ? ", " : ""), $2, $3}' "$r")"
  echo
  echo "wrk's own figures for the whole mix: $(grep '^wrk_latency_ms' "$r" | cut -d' ' -f2-) (ms);" \
       "$(grep '^socket_errors' "$r" | sed 's/socket_errors/socket errors:/')."
  echo "Warm-up: $(grep '^overall ' "$dir/warm.txt" | sed 's/^overall //'); statuses" \
       "$(awk '$1 == "status" {printf "%s%s: %s", (n++ ? ", " : ""), $2, $3}' "$dir/warm.txt")."
  echo
  local under
  under=$(awk -v a="$t_run" -v b="$t_end" '$1 >= a && $1 <= b {
      if (!n++) {f0 = $2; r0 = $3}; f1 = $2; r1 = $3
      if ($2 > fmax) fmax = $2; if ($3 > rmax) rmax = $3
      if (n == 1) {d0 = $4; b0 = $5; a0 = $6}; d1 = $4; b1 = $5; a1 = $6 }
    END {printf "fd %d → %d (max %d), RSS %d → %d kB (max %d kB), %d samples; CPU: neurond %.0f%% of one core, machine %.0f%% busy (of %d cores, wrk included)",
                f0, f1, fmax, r0, r1, rmax, n, (a1 > a0 ? (d1 - d0) * 100 * ncpu / (a1 - a0) : 0),
                (a1 > a0 ? (b1 - b0) * 100 / (a1 - a0) : 0), ncpu}' ncpu="$(nproc)" "$dir/samples")
  echo "| resource | before load | after warm-up | after run | change (gate) |"
  echo "|---|---:|---:|---:|---|"
  echo "| open fds (idle) | $fd0 | $fd_warm | $fd_end | $((fd_end - fd_warm)) after warm-up → end (≤ $fd_slack) |"
  echo "| RSS kB (idle) | $rss0 | $rss_warm | $rss_end | ${rss_pct}% after warm-up → end ($([ $sanitized = 1 ] && echo "not gated: ASan build" || echo "< ${rss_max_pct}%")) |"
  echo
  echo "Sampled every second during the measured run: $under."
  echo "Daemon log lines matching error/assert/sanitizer: $log_errors; shut down on SIGTERM: $stopped."
  echo
  if [ ${#fail[@]} = 0 ]; then
    echo "Result: **PASS** (no 5xx or other non-2xx, no fd growth, $([ $sanitized = 1 ] && echo "RSS not gated (ASan)" || echo "RSS flat"), step counters consistent, clean shutdown)."
  else
    echo "Result: **FAIL**"
    for f in "${fail[@]}"; do echo "- $f"; done
    { grep -h '^first_error' "$dir/warm.txt" "$dir/run.txt" || true; } |
      sed 's/^first_error /- first non-2xx: /' | head -n 8
  fi
}
say "done"
report >"$dir/report.md" || echo "run.sh: writing the report failed" >&2
cat "$dir/report.md"
if [ -n "$out" ]; then
  cp "$dir/report.md" "$out"
  echo "(written to $out)" >&2
fi
[ ${#fail[@]} = 0 ]
