#!/usr/bin/env bash
# tests/pg/run_integration.sh NEUROND GOLDEN_DIR IT_EXE...: the integration executables once
# more, on PostgreSQL; run under tests/pg/with_postgres.sh, which provides the cluster. Each
# daemon a test starts gets a fresh database in it (tests/integration/client.c). Two at a time
# (it_postgres, which restarts the server, alone at the end); a failed executable's output is
# printed. Exit 0 when none failed (an executable that skips itself, exit 77, is a SQLite-only
# one), 1 otherwise.
set -uo pipefail
neurond=$1 golden=$2
shift 2
logs=$(mktemp -d "${TMPDIR:-/tmp}/neurond-pg-it.XXXXXX")
trap 'rm -rf "$logs"' EXIT

run_one() {   # run_one EXE: its result line "<name> <rc>"
  local name
  name=$(basename "$1")
  CK_EXCLUDE_TAGS=separate "$1" "$neurond" "$golden" >"$logs/$name.log" 2>&1
  echo "$name $?" >"$logs/$name.rc"
}
export -f run_one
export neurond golden logs
# it_postgres stops and starts the server: alone, after the others.
printf '%s\n' "$@" | grep -v '/it_postgres$' | xargs -P 2 -I{} bash -c 'run_one "$1"' _ {}
for exe in "$@"; do
  case "$exe" in */it_postgres) run_one "$exe" ;; esac
done

failed=0
for exe in "$@"; do
  name=$(basename "$exe")
  rc=$(cut -d' ' -f2 "$logs/$name.rc" 2>/dev/null || echo 1)
  case "$rc" in
    0) echo "pass  $name  $(grep -E '^[0-9]+%' "$logs/$name.log" | tail -n 1)" ;;
    77) echo "skip  $name  $(grep -m1 '^SKIP' "$logs/$name.log")" ;;
    *) echo "FAIL  $name (exit $rc)"; sed 's/^/    /' "$logs/$name.log"; failed=1 ;;
  esac
done
exit "$failed"
