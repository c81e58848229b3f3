"""falcon_sc: discover fine-grained classes inside coarse labels (FALCON) for scverse."""

from __future__ import annotations

from . import baselines, bench, datasets, metrics, pl, pp, tl

__version__ = "0.1.0"

__all__ = ["baselines", "bench", "datasets", "metrics", "pl", "pp", "tl", "__version__"]
