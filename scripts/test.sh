#!/usr/bin/env bash
# Set up (if needed) and run the test suite with a coverage report of falcon_sc (per file; fully covered files are left
# out), the tutorial notebooks included (tests/test_tutorials.py executes every tutorials/*.ipynb; FALCON_TUTORIALS=0
# skips them). Extra arguments go to pytest, e.g. `-k relation`. A plain `python -m pytest -q` runs without coverage
# and skips the notebooks.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export FALCON_TUTORIALS="${FALCON_TUTORIALS:-1}"
python -m pytest -q --cov=falcon_sc --cov-report=term:skip-covered "$@"
