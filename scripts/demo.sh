#!/usr/bin/env bash
# Set up (if needed) and run falcon_sc on the bundled PBMC data: prints accuracy/ARI vs a baseline, saves a figure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
python -m falcon_sc.demo "$@"
