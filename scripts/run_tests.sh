#!/usr/bin/env bash
# Runs every test (unit, integration with real models and server, browser). pytest's
# exit 5 ("no tests collected") is a failure here, never a pass.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
"$VENV/bin/python" -m pytest "$@"
rc=$?
if [[ $rc -eq 5 ]]; then
  echo "run_tests: pytest collected no tests: failing" >&2
  exit 1
fi
exit $rc
