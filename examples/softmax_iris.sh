#!/usr/bin/env bash
# examples/softmax_iris.sh -- softmax regression on Fisher's Iris data (150 flowers, 4
# measurements, 3 species): post examples/data/iris.csv as text/csv, train with Adam, read the
# training accuracy and the class probabilities of three flowers.
#
#     scripts/serve &                  # or any running neurond
#     examples/softmax_iris.sh
#
# Environment: NEUROND_URL (default http://127.0.0.1:8080), NEUROND_TOKEN (bearer token, when
# neurond runs with --token-file). Needs bash and curl. Exits non-zero on any HTTP error, or when
# the training accuracy is below 0.9.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$HERE/common.sh"

STEPS=${STEPS:-500}

echo "# 1. Softmax regression: 4 inputs, 3 classes (0 setosa, 1 versicolor, 2 virginica)."
echo "#    W1 is [3, 1+4]: one row, a class template, per species; loss cce (the default)."
call POST /v1/models '{"kind":"softmax","inputs":4,"classes":3,"optimizer":{"method":"adam","learning_rate":0.05}}'
ID=$(num id)
M=/v1/models/$ID

echo
echo "# 2. The data set as CSV: sepal length, sepal width, petal length, petal width, species."
call_file POST "$M/batches" "$HERE/data/iris.csv" text/csv

echo
echo "# 3. Loss and accuracy before training (every class equally likely: loss ≈ ln 3)."
call POST "$M/loss" '{}'

echo
echo "# 4. $STEPS full-batch Adam steps; every 25th step goes into the history."
call POST "$M/train" "{\"steps\":$STEPS,\"history_every\":25}"
call GET "$M/history?max_points=5"

echo
echo "# 5. Training accuracy on all 150 flowers."
call POST "$M/loss" '{}'
ACCURACY=$(num accuracy)
ERRORS=$(num errors)

echo
echo "# 6. Class probabilities for the first flower of each species (rows 1, 51 and 101)."
call POST "$M/predict" '{"x":[[5.1,3.5,1.4,0.2],[7.0,3.2,4.7,1.4],[6.3,3.3,6.0,2.5]]}'

echo
echo "# 7. The learned class templates (column 0 of each row is the bias)."
call GET "$M/parameters"

echo
echo "# Done: model $ID, training accuracy $ACCURACY ($ERRORS of 150 misclassified)."
if ! awk -v a="$ACCURACY" 'BEGIN { exit !(a >= 0.9) }'; then
    fail "training accuracy $ACCURACY is below 0.9"
fi
