#!/usr/bin/env bash
# tests/examples/run.sh -- run the examples of examples/ against a real daemon and check their
# results (registered with CTest as examples_<case>, label "examples").
#
#     tests/examples/run.sh NEUROND [CASE...]
#
# Starts NEUROND on a free loopback port (--port 0, the port read from its "neurond listening on
# HOST:PORT" line) with a fresh database and a token file, so every example also exercises
# NEUROND_TOKEN. Cases (all when none are named):
#
#   walkthrough     examples/walkthrough.sh: initial loss 281.7000511808419 (1e-9), then the model
#                   read back: step 3, loss 118.75020113004373, the three history losses
#   logistic_csv    examples/logistic_csv.sh: accuracy >= 0.99 on the 200 rows, the boundary's
#                   unit normal within 10 degrees of the generating line's and every row of
#                   separable.csv on its side of the boundary
#   softmax_iris    examples/softmax_iris.sh: accuracy >= 0.9 on the 150 flowers, the first flower
#                   of each species predicted right
#   early_stopping_iris  examples/early_stopping_iris.sh: 120 train and 30 validation rows, the
#                   run stopped early and the model is back at its best step (its validation loss
#                   is best_val_loss, history's row there says the same), validation accuracy >= 0.9
#   graph_jacobian  examples/graph_jacobian.sh: Jacobians [[1],[3]], [[3,2],[3,18]], [[9],[57]] and
#                   dL/dt = 66, each within 1e-9
#   client_py       examples/client.py with Debian's /usr/bin/python3: accuracy >= 0.99, equal to
#                   what the API answers for its model
#   onnx_node       examples/onnx_runtime.cjs in Node.js: ONNX Runtime's classes and accuracy on
#                   the 150 flowers equal the API's, accuracy >= 0.9, probabilities within 1e-12
#                   relative of /predict's. onnxruntime-node comes from tests/onnx/node_modules
#                   (`npm ci --ignore-scripts` there when missing); without node or the package
#                   this case is skipped (exit 77 when it is the only case asked for)
#   http_error      the scripts exit non-zero on an HTTP error (no token: 401) and when the daemon
#                   cannot be reached
#
# The checks live in tests/examples/check.py; they read the model back through the API rather
# than trusting the example's own summary. NEUROND_PYTHON overrides the interpreter.
set -euo pipefail

if [ "$#" -lt 1 ]; then
    echo "usage: $0 NEUROND [walkthrough|logistic_csv|softmax_iris|early_stopping_iris|graph_jacobian|client_py|onnx_node|http_error]..." >&2
    exit 2
fi
NEUROND=$1
shift
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SRC=$(cd "$HERE/../.." && pwd)
EX=$SRC/examples
CASES=("$@")
if [ "${#CASES[@]}" -eq 0 ]; then
    CASES=(walkthrough logistic_csv softmax_iris early_stopping_iris graph_jacobian client_py onnx_node
        http_error)
fi

# onnx_node needs node and onnxruntime-node (shared with tests/onnx, installed there).
ORT_MODULES=$SRC/tests/onnx/node_modules
onnx_node_ready() {
    command -v node >/dev/null 2>&1 || return 1
    [ -f "$ORT_MODULES/onnxruntime-node/package.json" ] && return 0
    command -v npm >/dev/null 2>&1 || return 1
    (cd "$SRC/tests/onnx" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) >&2
}
ONNX_NODE=1
if [[ " ${CASES[*]} " == *" onnx_node "* ]] && ! onnx_node_ready; then
    ONNX_NODE=0
    if [ "${#CASES[@]}" -eq 1 ]; then
        echo "examples: onnx_node skipped: node or onnxruntime-node (npm) not available"
        exit 77
    fi
fi

# Debian's interpreter: the python3 first on PATH may be another build.
PY=${NEUROND_PYTHON:-/usr/bin/python3}
if [ ! -x "$PY" ]; then
    PY=$(command -v python3 || true)
fi
if [ -z "$PY" ] || ! command -v curl >/dev/null 2>&1; then
    echo "examples: needs curl and python3" >&2
    exit 1
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/neurond-examples.XXXXXX")
PID=
cleanup() {
    if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
        kill -TERM "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT

TOKEN=examples-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
printf '# tokens for the examples test\n%s\n' "$TOKEN" >"$TMP/tokens"
# The files exist before the daemon starts: the background job opens its redirections only once
# it runs, and the loop below may read them first.
: >"$TMP/daemon.out"
: >"$TMP/daemon.err"
"$NEUROND" --bind 127.0.0.1 --port 0 --db "$TMP/neurond.db" --token-file "$TMP/tokens" \
    --log-level warn >"$TMP/daemon.out" 2>"$TMP/daemon.err" &
PID=$!

ADDR=
for _ in $(seq 1 200); do
    ADDR=$(sed -n 's/^neurond listening on \([0-9.]*:[0-9]*\)$/\1/p' "$TMP/daemon.out")
    if [ -n "$ADDR" ] || ! kill -0 "$PID" 2>/dev/null; then
        break
    fi
    sleep 0.05
done
if [ -z "$ADDR" ]; then
    echo "examples: neurond did not come up; its stderr:" >&2
    cat "$TMP/daemon.err" >&2
    exit 1
fi
URL=http://$ADDR
echo "examples: neurond at $URL (db $TMP/neurond.db, auth on)"

failed=0

# run_example CASE CMD...: run an example with the daemon's URL and token; keep its output.
run_example() {
    local name=$1 rc=0
    shift
    NEUROND_URL=$URL NEUROND_TOKEN=$TOKEN "$@" >"$TMP/$name.out" 2>&1 || rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "examples: $name exited with $rc; its output:" >&2
        sed 's/^/    /' "$TMP/$name.out" >&2
        return 1
    fi
    NEUROND_TOKEN=$TOKEN "$PY" "$HERE/check.py" "$name" "$URL" "$TMP/$name.out" || {
        echo "examples: $name output:" >&2
        sed 's/^/    /' "$TMP/$name.out" >&2
        return 1
    }
}

# expect_failure WHAT URL TOKEN SCRIPT PATTERN: the script must exit non-zero and say PATTERN.
expect_failure() {
    local what=$1 url=$2 token=$3 script=$4 pattern=$5 rc=0
    NEUROND_URL=$url NEUROND_TOKEN=$token bash "$script" >"$TMP/fail.out" 2>&1 || rc=$?
    if [ "$rc" -eq 0 ] || ! grep -q -- "$pattern" "$TMP/fail.out"; then
        echo "examples: $(basename "$script") $what: exit $rc, expected non-zero and '$pattern':" >&2
        sed 's/^/    /' "$TMP/fail.out" >&2
        return 1
    fi
    echo "check http_error: $(basename "$script") $what: exit $rc"
}

for c in "${CASES[@]}"; do
    case $c in
    walkthrough | logistic_csv | softmax_iris | early_stopping_iris | graph_jacobian)
        run_example "$c" bash "$EX/$c.sh" || failed=1
        ;;
    client_py)
        run_example client_py "$PY" "$EX/client.py" || failed=1
        ;;
    onnx_node)
        if [ "$ONNX_NODE" -eq 1 ]; then
            (cd "$TMP" && NODE_PATH=$ORT_MODULES run_example onnx_node node "$EX/onnx_runtime.cjs") ||
                failed=1
        else
            echo "examples: onnx_node skipped: node or onnxruntime-node (npm) not available"
        fi
        ;;
    http_error)
        for s in walkthrough logistic_csv softmax_iris early_stopping_iris graph_jacobian; do
            expect_failure "without a token" "$URL" "" "$EX/$s.sh" "401" || failed=1
        done
        expect_failure "with a wrong token" "$URL" "wrong-$TOKEN" "$EX/graph_jacobian.sh" \
            "401" || failed=1
        # A port nobody listens on: bind one, note it, close it.
        closed=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
        expect_failure "with no daemon" "http://127.0.0.1:$closed" "$TOKEN" \
            "$EX/graph_jacobian.sh" "" || failed=1
        rc=0
        NEUROND_URL=$URL "$PY" "$EX/client.py" >"$TMP/fail.out" 2>&1 || rc=$?
        if [ "$rc" -eq 0 ] || ! grep -q "HTTP 401 unauthenticated" "$TMP/fail.out"; then
            echo "examples: client.py without a token: exit $rc:" >&2
            sed 's/^/    /' "$TMP/fail.out" >&2
            failed=1
        else
            echo "check http_error: client.py without a token: exit $rc"
        fi
        ;;
    *)
        echo "examples: unknown case '$c'" >&2
        failed=1
        ;;
    esac
done

# The daemon survived everything and stops cleanly.
kill -TERM "$PID"
rc=0
wait "$PID" || rc=$?
PID=
if [ "$rc" -ne 0 ]; then
    echo "examples: neurond exited with $rc after SIGTERM; its stderr:" >&2
    cat "$TMP/daemon.err" >&2
    failed=1
fi
if [ "$failed" -ne 0 ]; then
    echo "examples: FAILED"
    exit 1
fi
echo "examples: ${CASES[*]}: ok"
