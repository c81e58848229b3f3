#!/usr/bin/env bash
# Create .venv with the CPU build of torch first (a bare `torch` requirement pulls a multi-GB CUDA build), then falcon_sc.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null 2>&1 || true

# --- torch (CPU build) -------------------------------------------------------------------------------------------
# From the PyTorch CPU index when it answers within 5 s (one probe, no retries); otherwise (offline, a mirror, local
# wheels) the plain pin from the configured indexes and find-links, which take a CPU wheel where one is offered.
# FALCON_TORCH_INDEX overrides the index; set it empty to skip it. Skipped when torch is already importable.
TORCH_PIN="torch==2.13.0"
TORCH_INDEX="${FALCON_TORCH_INDEX-https://download.pytorch.org/whl/cpu}"
install_torch() {
    if [ -n "$TORCH_INDEX" ] && python - "$TORCH_INDEX" 2>/dev/null <<'PY'
import sys, urllib.request
urllib.request.urlopen(sys.argv[1].rstrip("/") + "/torch/", timeout=5).close()
PY
    then
        python -m pip install -q --timeout 15 --retries 0 --index-url "$TORCH_INDEX" "$TORCH_PIN" && return 0
        echo "setup.sh: installing $TORCH_PIN from $TORCH_INDEX failed; using the configured package indexes." >&2
    fi
    python -m pip install -q "$TORCH_PIN"
}
check_torch_cpu() {
    python - "$TORCH_PIN" <<'PY'
import sys, warnings
warnings.simplefilter("ignore")  # e.g. "Failed to initialize NumPy": numpy comes with falcon_sc below
import torch
if torch.version.cuda is not None:
    print(f"setup.sh: WARNING: a CUDA build of torch got installed ({torch.__version__}, CUDA {torch.version.cuda}; "
          "several GB); falcon_sc needs only the CPU build. To replace it:\n"
          "    .venv/bin/python -m pip install --force-reinstall --index-url https://download.pytorch.org/whl/cpu "
          f"'{sys.argv[1]}'", file=sys.stderr)
PY
}
if ! python -c "import torch" 2>/dev/null; then
    install_torch
    check_torch_cpu
fi
# ------------------------------------------------------------------------------------------------------------------

# dev: pytest (+ pytest-cov, hypothesis), ruff, mypy; tutorials: nbclient/ipykernel to execute tutorials/*.ipynb in tests
python -m pip install -q -e ".[dev,tutorials]"
