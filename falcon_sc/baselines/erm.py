"""ERM: the supervised upper reference, an MLP trained on the true fine labels and scored out of fold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData
from sklearn.model_selection import KFold, StratifiedKFold

from .._docs import baseline_inputs, doc_params, image_example, image_options, neural_options
from ..core.training import fit_cross_entropy, map_rows
from ..core.views import ViewConfig
from ._common import BaselineResult, majority_parent
from ._neural import loop_config, neural_data


@doc_params(
    baseline_inputs=baseline_inputs,
    image_options=image_options,
    neural_options=neural_options,
    image_example=image_example,
)
def erm(
    adata: AnnData,
    coarse_key: str,
    n_fine: int,
    *,
    fine_key: str,
    batch_key: str | None = None,
    n_folds: int = 5,
    image_shape: tuple[int, int, int] | None = None,
    width: int | None = None,
    view: ViewConfig | None = None,
    checkpoint: str | Path | None = None,
    n_steps: int | None = None,
    random_state: int = 0,
    accelerator: str = "auto",
) -> BaselineResult:
    """Empirical risk minimisation on the true fine labels, cross-validated: the supervised upper bound.

    The MLP FALCON uses, on the same inputs, is trained with cross-entropy on the fine labels of ``n_folds - 1``
    folds and predicts the held-out fold; every cell's label comes from the model that did not see it. The relation
    is the majority coarse class of each fine class, and each cell is predicted among the fine classes under its own
    coarse label (as every other method). On images the network is FALCON's ResNet-18, trained on one random view of
    each image per minibatch and predicting the unaltered images. ``adata`` is not modified.

    Parameters
    ----------
    {baseline_inputs}
    fine_key
        Column of ``adata.obs`` with the true fine labels (the supervision).
    n_folds
        Cross-validation folds (stratified when every fine class has at least ``n_folds`` cells).
    {image_options}
    {neural_options}

    Returns
    -------
    Out-of-fold fine labels (the true class names) and the fine -> coarse relation.

    Examples
    --------
    {image_example}
    >>> res = fal.baselines.erm(digits, "coarse", 10, fine_key="fine", width=8, view=crops, n_steps=20)
    >>> sorted(set(res.relation.values()))
    ['curve', 'loop', 'stroke']
    """
    if not isinstance(adata, AnnData):
        raise TypeError(f"adata must be an AnnData, got {type(adata).__name__}.")
    if fine_key not in adata.obs.columns:
        raise KeyError(f"fine_key {fine_key!r} is not a column of adata.obs (columns: {list(adata.obs.columns)})")
    if n_folds < 2:
        raise ValueError(f"n_folds={n_folds} must be at least 2")
    data = neural_data(
        adata,
        coarse_key,
        n_fine,
        batch_key=batch_key,
        random_state=random_state,
        accelerator=accelerator,
        image_shape=image_shape,
        width=width,
        view=view,
        checkpoint=checkpoint,
        n_steps=n_steps,
    )
    fine = pd.Categorical(adata.obs[fine_key].astype(str))
    codes = np.asarray(fine.codes, dtype=np.int64)
    counts = np.bincount(codes)
    splitter = (
        StratifiedKFold(n_folds, shuffle=True, random_state=random_state)
        if counts.min() >= n_folds
        else KFold(n_folds, shuffle=True, random_state=random_state)
    )
    names = np.asarray(fine.categories.astype(str))
    relation = majority_parent(names[codes], adata.obs[coarse_key].to_numpy())
    # a cell's coarse label is known: predict among the fine classes under it
    allowed = np.array([[relation[f] == c for c in data.classes] for f in names])[:, data.coarse].T
    allowed[~allowed.any(axis=1)] = True  # a coarse class that is nobody's majority parent: no restriction
    pred = np.empty(data.n_obs, dtype=np.int64)
    train_view = data.views().jitter if data.images else None  # images: random views, as FALCON's student
    for train, test in splitter.split(np.zeros(data.n_obs), codes):
        model = data.network(len(names))
        cfg = loop_config(data, desc="erm")
        fit_cross_entropy(model, data.features.subset(train), codes[train], cfg, data.rng, view=train_view)
        model.eval()
        logits = map_rows(model, data.features.subset(test))
        pred[test] = np.where(allowed[test], logits, -np.inf).argmax(axis=1)
    return BaselineResult(labels=names[pred], relation=relation, info={"n_folds": n_folds})
