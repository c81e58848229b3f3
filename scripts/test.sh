#!/usr/bin/env bash
# Set up (if needed) and run the test suite with a coverage report of falcon_sc (per file; fully covered files are left
# out), the tutorial notebooks included (tests/test_tutorials.py executes every tutorials/*.ipynb; FALCON_TUTORIALS=0
# skips them). Extra arguments go to pytest, e.g. `-k relation`. A plain `python -m pytest -q` runs without coverage
# and skips the notebooks.
#
# Without extra arguments the notebooks run in a second pytest process beside the rest of the suite: both use one
# torch thread (tests/conftest.py, the notebooks' first cell), so on 2 cores the notebooks' minutes overlap the suite's
# instead of adding to them. The notebooks' kernels were never part of the coverage report. With extra arguments
# everything runs in one process, as `pytest` selects it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export FALCON_TUTORIALS="${FALCON_TUTORIALS:-1}"
case "$(echo "$FALCON_TUTORIALS" | tr '[:upper:]' '[:lower:]')" in
    0 | false | no) tutorials=0 ;;
    *) tutorials=1 ;;
esac
if [ "$#" -gt 0 ] || [ "$tutorials" = 0 ]; then
    exec python -m pytest -q --cov=falcon_sc --cov-report=term:skip-covered "$@"
fi

log="$(mktemp "${TMPDIR:-/tmp}/falcon_tutorials.XXXXXX")"
python -m pytest -q -p no:cacheprovider --durations=0 -m tutorial tests/test_tutorials.py >"$log" 2>&1 &
notebooks=$!
trap 'kill "$notebooks" 2>/dev/null || true' INT TERM
set +e
python -m pytest -q --cov=falcon_sc --cov-report=term:skip-covered --durations=15 -m "not tutorial"
suite=$?
wait "$notebooks"
tutorial_rc=$?
set -e
echo
echo "---- tutorials (tests/test_tutorials.py, run beside the suite) ----"
cat "$log"
rm -f "$log"
if [ "$suite" -ne 0 ]; then
    exit "$suite"
fi
exit "$tutorial_rc"
