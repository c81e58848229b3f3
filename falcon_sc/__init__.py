"""falcon_sc: discover fine-grained classes inside coarse labels (FALCON) for scverse."""

from __future__ import annotations

# the one place the version is written: pyproject.toml reads it ([tool.hatch.version]), saved models store it
__version__ = "0.1.0"

from . import baselines, bench, data, datasets, metrics, models, pl, pp, tl  # noqa: E402
from .models import FalconModel  # noqa: E402

__all__ = [
    "FalconModel",
    "baselines",
    "bench",
    "data",
    "datasets",
    "metrics",
    "models",
    "pl",
    "pp",
    "tl",
    "__version__",
]
