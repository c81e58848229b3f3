"""The version of falcon_sc, in a leaf module: modules that record it (saved models) import it from here.

The one place the version is written: ``pyproject.toml`` reads it (``[tool.hatch.version]``), ``falcon_sc``
re-exports it as ``falcon_sc.__version__``.
"""

from __future__ import annotations

__version__ = "0.1.0"
