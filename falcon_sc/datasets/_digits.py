"""scikit-learn's 1,797 real 8x8 handwritten digits with two documented coarse groupings (offline)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

from ._utils import finalise

#: coarse grouping ``obs["coarse"]``: digits drawn with a closed loop, with straight strokes, with open curves
DIGIT_SHAPES: dict[str, tuple[int, ...]] = {"loop": (0, 6, 8, 9), "stroke": (1, 4, 7), "curve": (2, 3, 5)}
#: second grouping ``obs["coarse_parity"]`` (a different scheme over the same fine classes)
DIGIT_PARITY: dict[str, tuple[int, ...]] = {"even": (0, 2, 4, 6, 8), "odd": (1, 3, 5, 7, 9)}


def _lookup(groups: dict[str, tuple[int, ...]]) -> dict[int, str]:
    return {digit: name for name, digits in groups.items() for digit in digits}


def digits() -> ad.AnnData:
    """The 1,797 8x8 grey digit images of :func:`sklearn.datasets.load_digits` as cells x pixels.

    ``X``: 64 pixel intensities (0-16) per image, row-major; ``uns["falcon_dataset"]["image_shape"]`` is
    ``(1, 8, 8)`` to turn rows back into images. ``obs["fine"]``: the digit (10 classes). Two coarse schemes over
    the same fine classes: ``obs["coarse"]`` by shape (:data:`DIGIT_SHAPES`: loop 0/6/8/9, stroke 1/4/7, curve
    2/3/5) and ``obs["coarse_parity"]`` (:data:`DIGIT_PARITY`: even / odd). Shipped with scikit-learn: nothing is
    downloaded.

    Examples
    --------
    >>> import falcon_sc as fal
    >>> adata = fal.datasets.digits()
    >>> adata.shape
    (1797, 64)
    """
    from sklearn.datasets import load_digits

    raw = load_digits()
    target = np.asarray(raw.target)
    shapes, parity = _lookup(DIGIT_SHAPES), _lookup(DIGIT_PARITY)
    obs = pd.DataFrame(
        {
            "coarse": [shapes[int(t)] for t in target],
            "fine": [str(int(t)) for t in target],
            "coarse_parity": pd.Categorical([parity[int(t)] for t in target]),
        },
        index=[f"digit{i}" for i in range(len(target))],
    )
    var = pd.DataFrame(index=[f"px{r}_{c}" for r in range(8) for c in range(8)])
    adata = ad.AnnData(X=np.asarray(raw.data, dtype=np.float32), obs=obs, var=var)
    relation = {str(d): shapes[d] for d in range(10)}
    finalise(adata, "digits", "sklearn.datasets.load_digits (UCI optical digits, 8x8)", relation)
    adata.uns["falcon_dataset"]["image_shape"] = np.array([1, 8, 8])
    return adata
