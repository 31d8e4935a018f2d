#!/usr/bin/env bash
# examples/early_stopping_iris.sh -- held-out evaluation and early stopping on Fisher's Iris
# data: every fifth flower of examples/data/iris.csv goes into a validation batch, the rest into
# the training batch; an mlp trains until its validation loss stops improving, goes back to its
# best step, and is evaluated on both splits (confusion matrix, macro f1, log loss).
#
#     scripts/serve &                  # or any running neurond
#     examples/early_stopping_iris.sh
#
# Environment: NEUROND_URL (default http://127.0.0.1:8080), NEUROND_TOKEN (bearer token, when
# neurond runs with --token-file). Needs bash, curl and awk. Exits non-zero on any HTTP error,
# or when the validation accuracy is below 0.9.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$HERE/common.sh"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/neurond-iris.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

echo "# 1. An mlp with 8 tanh hidden units and a softmax output over the 3 species; Adam with a"
echo "#    cosine learning-rate schedule after a 20-step warmup."
call POST /v1/models '{"kind":"mlp","inputs":4,"hidden":[{"units":8,"activation":"tanh"}],"outputs":3,"output_activation":"softmax","init":{"method":"xavier","seed":3},"optimizer":{"method":"adam","learning_rate":0.05,"schedule":{"kind":"cosine","t_max":2000,"eta_min":0.001,"warmup_steps":20}}}'
ID=$(num id)
M=/v1/models/$ID

echo
echo "# 2. Every fifth flower (30 of 150, 10 per species) is held out as validation data."
awk 'NR == 1 || (NR - 2) % 5 != 4' "$HERE/data/iris.csv" >"$TMP/train.csv"
awk 'NR == 1 || (NR - 2) % 5 == 4' "$HERE/data/iris.csv" >"$TMP/validation.csv"
call_file POST "$M/batches" "$TMP/train.csv" text/csv
call_file POST "$M/batches?split=validation" "$TMP/validation.csv" text/csv
call GET "$M"

echo
echo "# 3. Train for at most 2000 steps; stop when 20 evaluations in a row (one per recorded"
echo "#    row: every 5th step) have not lowered the validation loss by 1e-4, and go back to"
echo "#    the best step's parameters."
call POST "$M/train" '{"steps":2000,"history_every":5,"early_stopping":{"patience":20,"min_delta":0.0001,"restore_best":true}}'
STOPPED=$(sed -n 's/.*"stopped":"\([a-z_]*\)".*/\1/p' <<<"$ANSWER")
BEST=$(num best_step)
STEP=$(num step)

echo
echo "# 4. The training and validation curves, sampled."
call GET "$M/history?max_points=6"

echo
echo "# 5. Metrics on the training rows and on the held-out rows."
call POST "$M/evaluate" '{}'
call POST "$M/evaluate" '{"split":"validation"}'
ACCURACY=$(num accuracy)

echo
echo "# Done: model $ID, stopped $STOPPED at step $STEP (best step $BEST), validation accuracy $ACCURACY."
if ! awk -v a="$ACCURACY" 'BEGIN { exit !(a >= 0.9) }'; then
    fail "validation accuracy $ACCURACY is below 0.9"
fi
