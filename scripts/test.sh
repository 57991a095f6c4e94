#!/usr/bin/env bash
# Lint, type-check and run every test, in two pytest phases:
#   parallel  every test not marked `serial`, spread over TEST_WORKERS processes
#             (pytest-xdist; each worker starts its own servers as it needs them);
#   serial    the tests marked `serial` (their deadlines assume an idle machine),
#             one at a time after the parallel phase has ended.
# Arguments go to both phases (a path, -k EXPR, -x ...). TEST_PHASE=parallel or
# TEST_PHASE=serial runs one phase only; TEST_WORKERS=0 runs the parallel phase
# in this process. pytest's "no tests ran" (exit 5) fails the run, unless the
# other phase ran tests (a path may hold serial tests only, or none).
set -uo pipefail
BIN="${VENV:-.venv}/bin"
WORKERS="${TEST_WORKERS:-4}"
PHASE="${TEST_PHASE:-all}"
case "$PHASE" in
  all | parallel | serial) ;;
  *) echo "TEST_PHASE must be all, parallel or serial, not '$PHASE'" >&2; exit 2 ;;
esac

status=0
"$BIN/ruff" check . || status=1
"$BIN/ruff" format --check . || status=1
"$BIN/mypy" || status=1

ran=0
# run_phase NAME PYTEST-ARGS...: run pytest; count the phase if it ran a test.
run_phase() {
  local name=$1
  shift
  echo "=== pytest, $name phase"
  local start=$SECONDS
  "$BIN/pytest" -p no:cacheprovider "$@"
  local rc=$?
  echo "=== pytest, $name phase: exit $rc after $((SECONDS - start)) s"
  if [ $rc -eq 5 ]; then
    return
  fi
  ran=$((ran + 1))
  [ $rc -ne 0 ] && status=$rc
}

if [ "$PHASE" != serial ]; then
  run_phase parallel --phase parallel -n "$WORKERS" --dist worksteal "$@"
fi
if [ "$PHASE" != parallel ]; then
  run_phase serial --phase serial "$@"
fi
if [ $ran -eq 0 ]; then
  echo "pytest collected no tests: failing" >&2
  status=1
fi
exit $status
