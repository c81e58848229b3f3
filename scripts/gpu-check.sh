#!/usr/bin/env bash
# GPU check (issue 15 session): CPU vs CUDA on pbmc68k (labels, agreement, seconds), bf16-mixed, bench scale 100k/300k
# on CUDA, digits image bench on CUDA. Log in $OUT/gpu.log.
# Run from the project root with .whl/ filled by shared/device/fetch-wheels.sh plus: msgspec google-crc32c scverse-misc
# fast-array-utils lightning-fabric pydantic pydantic-core pydantic-settings python-dotenv annotated-types
# typing-inspection texttable (missing on the GPU image); copy this file to .whl/ and run `bash .whl/gpu-check.sh`.
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
exec > >(tee "$OUT/gpu.log") 2>&1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "wheel install failed"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
timeout 150 python3 - <<'PY'
import time, warnings; warnings.filterwarnings("ignore")
import numpy as np, torch, falcon_sc as fal
print("torch", torch.__version__, "cuda available:", torch.cuda.is_available())
labels = {}
for acc, prec in (("cpu", "32-true"), ("cuda", "32-true"), ("cuda", "32-true"), ("cuda", "bf16-mixed")):
    a = fal.datasets.pbmc68k()
    t = time.time()
    model = fal.FalconModel(a, "coarse").fit(10, accelerator=acc, precision=prec, show_progress=False)
    model.write_fit_results(a, "falcon")
    dt = time.time() - t
    s = fal.metrics.evaluate(a.obs["fine"], a.obs["falcon"], a.obs["coarse"])
    key = f"{acc}/{prec}"
    print(f"pbmc68k fit on {key}: {dt:.1f} s, acc {s['accuracy']:.3f} ari {s['ari']:.3f}", flush=True)
    if key in labels:
        print("   same labels as the previous cuda run:", bool((labels[key] == a.obs['falcon'].astype(str).to_numpy()).all()))
    labels[key] = a.obs["falcon"].astype(str).to_numpy()
ref = labels["cpu/32-true"]
for k, v in labels.items():
    print(f"agreement with cpu: {k}: ARI {fal.metrics.ari(ref, v):.3f}, same label share {(ref == v).mean():.3f}")
PY
for n in 100000 300000; do
  echo "== bench scale, $n cells, cuda"
  timeout 170 python3 -m falcon_sc.bench scale --n-cells "$n" --methods falcon --accelerator cuda
done
echo "== image bench, digits, cuda"
timeout 120 python3 -m falcon_sc.bench images --dataset digits --methods falcon --seeds 1 --accelerator cuda --out /tmp/img
echo "== done"
