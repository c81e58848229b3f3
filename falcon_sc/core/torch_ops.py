"""The heavy preprocessing on torch, for ``accelerator="cuda"``: exact neighbour search inside each coarse class.

RAPIDS (cuML, rapids-singlecell) is not needed: the search is a matrix product and a top-k, which torch runs on any
device. The same code runs on the CPU, where the tests compare it with scikit-learn's exact search, so the GPU path
is the tested code on another device. It is imported only when a device is asked for.
"""

from __future__ import annotations

import numpy as np
import torch

#: query rows per block of the similarity matrix (block x class size floats on the device)
QUERY_BLOCK = 4096


def _unit_rows(X: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit length (zero rows stay zero)."""
    return X / X.norm(dim=1, keepdim=True).clamp_min(1e-12)


def exact_neighbors(
    X: np.ndarray, n_neighbors: int, *, metric: str = "cosine", device: torch.device | str = "cpu"
) -> np.ndarray:
    """Each row's ``n_neighbors + 1`` nearest rows of ``X`` (itself usually first), exact, on ``device``.

    Cosine similarities (or negative squared euclidean distances) are computed block by block of
    :data:`QUERY_BLOCK` query rows and the best kept with ``torch.topk``, so memory is
    ``QUERY_BLOCK x n_rows`` floats whatever the number of rows. The scores are float32, so rows closer than float32
    resolution (duplicates) may come in another order than scikit-learn's float64 search gives.

    Parameters
    ----------
    X
        Rows x features.
    n_neighbors
        Neighbours per row besides itself (at most ``n_rows - 1``).
    metric
        ``"cosine"`` or ``"euclidean"``.
    device
        Torch device of the search (``"cuda"``, ``"cpu"``).

    Returns
    -------
    Rows x ``n_neighbors + 1`` int64 array of row indices, nearest first.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    >>> exact_neighbors(X, 1)
    array([[0, 1],
           [1, 0],
           [2, 3],
           [3, 2]])
    """
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}.")
    n_rows = X.shape[0]
    k = min(n_neighbors + 1, n_rows)
    data = torch.as_tensor(np.ascontiguousarray(X), dtype=torch.float32, device=device)
    if metric == "cosine":
        data = _unit_rows(data)
    squared = (data * data).sum(dim=1)
    out = np.empty((n_rows, k), dtype=np.int64)
    for start in range(0, n_rows, QUERY_BLOCK):
        block = data[start : start + QUERY_BLOCK]
        score = block @ data.T
        if metric == "euclidean":
            score = 2 * score - squared[None, :] - squared[start : start + QUERY_BLOCK, None]
        out[start : start + block.shape[0]] = torch.topk(score, k, dim=1).indices.cpu().numpy()
    return out
