"""Log-normalisation of rows by input kind, shared by the in-memory and the streamed (chunked) preprocessing."""

from __future__ import annotations

from typing import Any

import anndata as ad
import numpy as np
import scanpy as sc
from scipy import sparse


def log_normalised_rows(tmp: ad.AnnData, kind: str) -> None:
    """Normalise ``tmp`` in place by its input kind (row by row): counts and normalised values to 1e4 + log1p."""
    if kind in ("counts", "normalized"):
        sc.pp.normalize_total(tmp, target_sum=1e4)
        sc.pp.log1p(tmp)


def normalised_block(raw: Any, kind: str) -> Any:
    """Rows read from the matrix, log-normalised by the input kind (float32 CSR, or a float32 array)."""
    block = sparse.csr_matrix(raw, dtype=np.float32) if sparse.issparse(raw) else np.asarray(raw, dtype=np.float32)
    if kind != "lognorm":
        tmp = ad.AnnData(X=block)
        with sc.settings.verbosity.override("warning"):  # scanpy's messages once per chunk say nothing new
            log_normalised_rows(tmp, kind)
        block = tmp.X
    return block
