#!/usr/bin/env bash
# /evaluate against scikit-learn: start neurond on a free loopback port with a temporary
# database and run check_metrics.py with Debian's python3-sklearn, which trains models of every
# kind on sklearn's bundled data sets (split into train and validation batches) and compares each
# metric /evaluate returns with sklearn.metrics on the daemon's own /predict answers.
#
# usage: tests/sklearn/run.sh [NEUROND_BINARY]        (default: build/neurond)
# Exits 77 (skipped, for ctest) when Debian's python3-sklearn is not installed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$here/../daemon.sh"
neurond=$(realpath "${1:-$root/build/neurond}")
py=/usr/bin/python3

[ -x "$py" ] && "$py" -c 'import sklearn' 2>/dev/null ||
  { echo "sklearn test skipped: Debian's python3-sklearn not installed"; exit 77; }
[ -x "$neurond" ] || { echo "no neurond binary at $neurond" >&2; exit 1; }

daemon_workdir
dir=$daemon_dir
daemon_start "$neurond" "$dir"

status=0
NEUROND_URL=$daemon_url "$py" "$here/check_metrics.py" || status=$?
daemon_stop "$dir" || status=1
[ "$status" -eq 0 ] || { echo "--- neurond log:"; tail -n 60 "$dir/neurond.log"; }
exit "$status"
