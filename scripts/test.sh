#!/usr/bin/env bash
# Run the test suite (set-up included). PostgreSQL tests use 127.0.0.1:5432; set
# RADCHECK_TEST_REQUIRE_PG=1 to make them fail instead of skip when it is down (CI does).
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: the suite or the selection is broken" >&2
  exit 1
fi
exit "$rc"
