#!/bin/sh
# A test that cannot run must say so to ctest (exit 77), never pass: run it_faults's read-only
# case as an unprivileged user (nobody), who cannot set the immutable attribute, and expect 77.
# Usage: skip_reported.sh <it_faults> <neurond> <golden dir>. Exits 77 itself when it cannot
# drop privileges (not root, no setpriv, or nobody cannot reach the build).
it_faults=$1 neurond=$2 golden=$3
as_nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
skip() { echo "SKIP: $*"; exit 77; }
[ "$(id -u)" -eq 0 ] && command -v setpriv >/dev/null || skip "needs root and setpriv"
as_nobody test -x "$it_faults" -a -x "$neurond" || skip "nobody cannot run the build"
CK_RUN_CASE=readonly as_nobody "$it_faults" "$neurond" "$golden"
rc=$?
[ "$rc" -eq 77 ] && exit 0
echo "FAIL: it_faults's read-only case without privileges exited $rc, expected 77 (skipped)"
exit 1
