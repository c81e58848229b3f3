#!/usr/bin/env bash
# GPU check (issue 19): CPU vs CUDA on pbmc68k (labels, agreement, seconds), 100k cells on CUDA (the neighbour search on
# the GPU), bench scale at 1M cells on CUDA, and the image path's throughput (50k random 32x32 images, ResNet-18, one
# epoch). Log in $OUT/gpu.log. Under ten minutes on one H100 (each step has its own timeout).
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
echo "== tests that run where CUDA exists"
timeout 60 python3 -m pytest -q -p no:cacheprovider tests/core/test_neighbors.py -k torch
timeout 120 python3 - <<'PY'
import time, warnings; warnings.filterwarnings("ignore")
import numpy as np, torch, falcon_sc as fal
print("torch", torch.__version__, "cuda available:", torch.cuda.is_available())
labels = {}
for acc, prec in (("cpu", "32-true"), ("cuda", "32-true"), ("cuda", "bf16-mixed")):
    a = fal.datasets.pbmc68k()
    t = time.time()
    model = fal.FalconModel(a, "coarse").fit(10, accelerator=acc, precision=prec, show_progress=False)
    model.write_fit_results(a, "falcon")
    s = fal.metrics.evaluate(a.obs["fine"], a.obs["falcon"], a.obs["coarse"])
    print(f"pbmc68k fit on {acc}/{prec}: {time.time() - t:.1f} s, acc {s['accuracy']:.3f} ari {s['ari']:.3f}")
    labels[f"{acc}/{prec}"] = a.obs["falcon"].astype(str).to_numpy()
ref = labels["cpu/32-true"]
for k, v in labels.items():
    print(f"agreement with cpu: {k}: ARI {fal.metrics.ari(ref, v):.3f}, same label share {(ref == v).mean():.3f}")
PY
echo "== 100k cells, cpu neighbours vs cuda neighbours"
timeout 120 python3 - <<'PY'
import time, numpy as np
from falcon_sc.core.neighbors import within_class_neighbors
rng = np.random.default_rng(0)
X = rng.normal(size=(100_000, 60)).astype(np.float32); g = rng.integers(0, 7, 100_000)
for dev in ("cuda", None):
    t = time.time(); nb = within_class_neighbors(X, g, 20, device=dev); print(dev, f"{time.time() - t:.1f} s")
    if dev == "cuda": exact = nb
print("recall of the CPU search (pynndescent above its threshold) vs exact:", np.mean([len(set(a) & set(b)) / 20 for a, b in zip(exact[:2000], nb[:2000])]))
PY
echo "== bench scale 100k and 1M cells, cuda"
timeout 120 python3 -m falcon_sc.bench scale --n-cells 100000 --methods falcon --accelerator cuda
timeout 200 python3 -m falcon_sc.bench scale --n-cells 1000000 --methods falcon --accelerator cuda
echo "== image throughput: 50k random 32x32 images, ResNet-18, 1 epoch, cuda"
timeout 120 python3 - <<'PY'
import time, numpy as np, anndata as ad, pandas as pd, falcon_sc as fal
rng = np.random.default_rng(0)
n = 50_000
X = rng.integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8).astype(np.float32)
a = ad.AnnData(X, obs=pd.DataFrame({"coarse": pd.Categorical(rng.integers(0, 5, n).astype(str))}))
t = time.time()
fal.tl.refine_images(a, "coarse", 10, image_shape=(3, 32, 32), n_epochs=1, accelerator="cuda", show_progress=False)
dt = time.time() - t
print(f"refine_images, 1 epoch of {n} images: {dt:.1f} s ({n / dt:.0f} images/s, set-up included)")
PY
echo "== done"
