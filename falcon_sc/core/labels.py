"""Fine labels from a relation: predictions restricted to a coarse class's children, and fine-class names."""

from __future__ import annotations

import numpy as np


def restricted_probs(probs: np.ndarray, relation: np.ndarray, coarse: np.ndarray) -> np.ndarray:
    """Probabilities renormalised over the children of each cell's coarse class.

    NaN and infinite probabilities count as 0. A cell whose children all get 0 gets equal probabilities over them,
    so the argmax of every row is always a child of the cell's own coarse class.
    """
    allowed = relation[:, coarse].T.astype(bool)
    restricted = np.where(allowed & np.isfinite(probs), probs, 0)
    mass = restricted.sum(axis=1, keepdims=True)
    empty = mass[:, 0] <= 0
    if empty.any():
        restricted[empty] = allowed[empty]
        mass[empty] = allowed[empty].sum(axis=1, keepdims=True)
    return restricted / np.clip(mass, 1e-12, None)


def fine_class_names(relation: np.ndarray, labels: np.ndarray, coarse_names: list[str]) -> np.ndarray:
    """``<coarse>/1, <coarse>/2, ...`` per fine class, by decreasing number of cells under its parent."""
    parent = relation.argmax(axis=1)
    sizes = np.bincount(labels, minlength=relation.shape[0])
    names = np.empty(relation.shape[0], dtype=object)
    for c, cname in enumerate(coarse_names):
        kids = np.flatnonzero(parent == c)
        for rank, f in enumerate(kids[np.argsort(-sizes[kids], kind="stable")]):
            names[f] = f"{cname}/{rank + 1}"
    return names.astype(str)
