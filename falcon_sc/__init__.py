"""falcon_sc: discover fine-grained classes inside coarse labels (FALCON) for scverse."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING

from . import baselines, data, datasets, errors, metrics, models, pl, pp, tl
from ._version import __version__
from .models import FalconModel

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the bench loads on first use (see __getattr__)
    from . import bench

#: submodules imported on first attribute access (PEP 562) rather than with the package: the bench needs the
#: benchmark-only dependencies and measures memory with POSIX facilities, none of which a user of ``tl`` needs
_LAZY_SUBMODULES = ("bench",)

__all__ = [
    "FalconModel",
    "baselines",
    "bench",
    "data",
    "datasets",
    "errors",
    "metrics",
    "models",
    "pl",
    "pp",
    "tl",
    "__version__",
]


def __getattr__(name: str) -> ModuleType:
    """Import the lazily loaded submodules (``falcon_sc.bench``) on first access."""
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")  # the import also sets it as an attribute here
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """The package's attributes with the lazily loaded submodules, loaded or not."""
    return sorted({*globals(), *_LAZY_SUBMODULES})
