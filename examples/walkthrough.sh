#!/usr/bin/env bash
# examples/walkthrough.sh -- the README tour as a script: the 2-3-1 sigmoid network of the worked
# example, its data, its loss and gradients, three sgd steps and the history they left.
#
#     scripts/serve &                  # or any running neurond
#     examples/walkthrough.sh          # NEUROND_URL=http://host:port to point elsewhere
#
# Needs bash and curl only. Prints every request and its answer; exits non-zero when a request
# fails or the loss is not the worked example's 281.7000511808419. The model it creates is left
# in place for you to explore (its id is printed at the end).
set -euo pipefail

URL=${NEUROND_URL:-http://127.0.0.1:8080}
URL=${URL%/}
CURL_AUTH=()
if [ -n "${NEUROND_TOKEN:-}" ]; then
    CURL_AUTH=(-H "Authorization: Bearer $NEUROND_TOKEN")
fi

# call METHOD PATH [JSON]: print the request, run it, print the answer; the answer is in $ANSWER.
call() {
    local method=$1 path=$2 body=${3:-} out status
    if [ -n "$body" ]; then
        printf '\n$ curl -s %s%s -H '\''Content-Type: application/json'\'' -d '\''%s'\''\n' \
            "$URL" "$path" "$body"
        out=$(curl -sS -w '\n%{http_code}' -X "$method" "$URL$path" "${CURL_AUTH[@]}" \
            -H 'Content-Type: application/json' -d "$body")
    else
        printf '\n$ curl -s %s%s\n' "$URL" "$path"
        out=$(curl -sS -w '\n%{http_code}' -X "$method" "$URL$path" "${CURL_AUTH[@]}")
    fi
    status=${out##*$'\n'}
    ANSWER=${out%$'\n'*}
    printf '%s\n' "$ANSWER"
    if [ "$status" -ge 400 ]; then
        echo "walkthrough: $method $path answered $status" >&2
        exit 1
    fi
}

# A number field of a flat JSON answer: field NAME.
field() {
    printf '%s' "$ANSWER" | sed -n "s/.*[{,]\"$1\":\([-0-9.eE+]*\).*/\1/p"
}

echo "# 1. The 2-3-1 network: sigmoid hidden layer, linear output, l2 loss summed over rows,"
echo "#    the worked example's weights (column 0 of each W is the bias), sgd with rate 0.01."
call POST /v1/models '{"kind":"mlp","inputs":2,"hidden":[{"units":3,"activation":"sigmoid"}],"output_activation":"linear","loss":"l2","reduction":"sum","parameters":{"W1":[[0.01,0.02,0.03],[0.03,0.01,0.02],[0.02,0.03,0.01]],"W2":[[0.01,0.02,0.03,0.04]]},"optimizer":{"method":"sgd","learning_rate":0.01}}'
ID=$(field id)
M=/v1/models/$ID

echo
echo "# 2. Three rows of training data."
call POST "$M/batches" '{"x":[[1,2],[1,3],[2,2]],"y":[8,11,10]}'

echo
echo "# 3. Predictions, loss and gradients at the initial weights ({} = all stored rows)."
call POST "$M/predict" '{"x":[[1,2],[1,3],[2,2]]}'
call POST "$M/loss" '{}'
LOSS=$(field loss)
call POST "$M/gradients" '{}'

echo
echo "# 4. Three full-batch gradient-descent steps, then the history they recorded."
call POST "$M/train" '{"steps":3}'
call GET "$M/history"
call GET "$M/parameters"

if ! awk -v l="$LOSS" 'BEGIN { d = l - 281.7000511808419; exit !(d < 1e-9 && d > -1e-9) }'; then
    echo "walkthrough: loss $LOSS, expected 281.7000511808419" >&2
    exit 1
fi
echo
echo "# Done: model $ID, initial loss $LOSS (the worked example's 281.7000511808419)."
