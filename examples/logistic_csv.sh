#!/usr/bin/env bash
# examples/logistic_csv.sh -- logistic regression on a CSV file: post the file as text/csv,
# train by full-batch gradient descent, read the training accuracy from /loss and the decision
# boundary θ0 + θ1 x1 + θ2 x2 = 0 from /boundary, and classify two new points.
#
#     scripts/serve &                                  # or any running neurond
#     examples/logistic_csv.sh                         # examples/data/separable.csv
#     examples/logistic_csv.sh my.csv                  # any CSV: x1,x2,label (0/1), header optional
#
# Environment: NEUROND_URL (default http://127.0.0.1:8080), NEUROND_TOKEN (bearer token, when
# neurond runs with --token-file). Needs bash and curl. Exits non-zero on any HTTP error, or when
# the training accuracy on the shipped data set is below 0.99 (it is linearly separable).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$HERE/common.sh"

DATA=${1:-$HERE/data/separable.csv}
STEPS=${STEPS:-500}

echo "# 1. A logistic regression model for two features: p = σ(θ0 + θ1 x1 + θ2 x2)."
echo "#    Binary cross-entropy (the default for logistic), sgd with learning rate 0.5."
call POST /v1/models '{"kind":"logistic","inputs":2,"optimizer":{"method":"sgd","learning_rate":0.5}}'
ID=$(num id)
M=/v1/models/$ID

echo
echo "# 2. The training data: $(basename "$DATA"), one row per line, label in the last column;"
echo "#    the header line is skipped because its fields are not numbers (?header=auto)."
call_file POST "$M/batches" "$DATA" text/csv
ROWS=$(num total_rows)

echo
echo "# 3. $STEPS full-batch gradient-descent steps, recording every 50th step in the history."
call POST "$M/train" "{\"steps\":$STEPS,\"history_every\":50}"
call GET "$M/history"

echo
echo "# 4. Training accuracy: {} evaluates the loss on every stored row; classifiers also"
echo "#    answer the fraction classified right (class 1 iff θᵀx* > 0) and the number of errors."
call POST "$M/loss" '{}'
ACCURACY=$(num accuracy)
ERRORS=$(num errors)

echo
echo "# 5. The decision boundary θ0 + θ1 x1 + θ2 x2 = 0: its normal (θ1, θ2), the unit normal u, and"
echo "#    offset = −θ0/‖(θ1, θ2)‖, so the line is the set of points x with u·x = offset."
if [ "$#" -eq 0 ]; then
    echo "#    (separable.csv was drawn around the line 0.5 + 1.5 x1 − x2 = 0: u ≈ (0.83, −0.55).)"
fi
call GET "$M/boundary"
UNIT=$(list unit_normal)
OFFSET=$(num offset)

echo
echo "# 6. Two new points: p = P(y=1|x), the class, and the signed distance to the boundary."
call POST "$M/predict" '{"x":[[2,-1],[-2,1]]}'

echo
echo "# Done: model $ID, $ROWS rows, training accuracy $ACCURACY ($ERRORS errors)."
echo "# Boundary: unit normal ($UNIT), offset $OFFSET."
if [ "$#" -eq 0 ] && ! awk -v a="$ACCURACY" 'BEGIN { exit !(a >= 0.99) }'; then
    fail "training accuracy $ACCURACY is below 0.99 on a linearly separable set"
fi
