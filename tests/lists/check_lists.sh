#!/usr/bin/env bash
# The build names its sources one by one (CMakeLists.txt, tests/CMakeLists.txt): a C file added
# to lib/, server/, tests/unit/ or tests/integration/ but not to those lists would never be
# compiled, or its tests never run, without anyone noticing. This fails on such a file.
# Usage: check_lists.sh SOURCE_DIR
set -euo pipefail
cd "$1"
missing=0
need() {   # need FILE WORD LISTFILE WHERE: WORD must be a word of LISTFILE, which is WHERE
  if ! grep -qw -- "$2" "$3"; then
    echo "$1 is not in $4"
    missing=1
  fi
}
for f in lib/*.c server/*.c; do need "$f" "$f" CMakeLists.txt CMakeLists.txt; done
# Unit and integration tests are listed by module / area inside set(UNIT_TESTS ...) and
# set(INTEGRATION_TESTS ...).
sed -n '/^set(UNIT_TESTS/,/)/p' tests/CMakeLists.txt >/tmp/neurond-unit-list.$$
sed -n '/^set(INTEGRATION_TESTS/,/)/p' tests/CMakeLists.txt >/tmp/neurond-it-list.$$
trap 'rm -f /tmp/neurond-unit-list.$$ /tmp/neurond-it-list.$$' EXIT
for f in tests/unit/test_*.c; do
  m=${f#tests/unit/test_}
  need "$f" "${m%.c}" /tmp/neurond-unit-list.$$ "set(UNIT_TESTS) of tests/CMakeLists.txt"
done
for f in tests/integration/it_*.c; do
  a=${f#tests/integration/it_}
  need "$f" "${a%.c}" /tmp/neurond-it-list.$$ \
    "set(INTEGRATION_TESTS) of tests/CMakeLists.txt"
done
[ "$missing" -eq 0 ] || { echo "add them to those lists"; exit 1; }
echo "every C file of lib/, server/, tests/unit/ and tests/integration/ is in the build"
