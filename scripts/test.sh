#!/usr/bin/env bash
# Lint, type-check and run every test. pytest's "no tests ran" (exit 5) fails.
set -uo pipefail
BIN="${VENV:-.venv}/bin"
status=0
"$BIN/ruff" check . || status=1
"$BIN/ruff" format --check . || status=1
"$BIN/mypy" || status=1
"$BIN/pytest" -p no:cacheprovider "$@"
rc=$?
if [ $rc -eq 5 ]; then
  echo "pytest collected no tests: failing" >&2
  rc=1
fi
[ $rc -ne 0 ] && status=$rc
exit $status
