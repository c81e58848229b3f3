"""falcon_sc: discover fine-grained classes inside coarse labels (FALCON) for scverse."""

from __future__ import annotations

__version__ = "0.1.0"
