"""Cells as a FALCON problem: coarse labels, fitted preprocessing, network inputs and the neighbour space."""

from __future__ import annotations

from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from .._coarse import CoarseSchemes, coarse_schemes
from ..pp import CellFeatures, FeatureTransform
from ._params import SetupParams
from ._pipeline import Problem, filled_groups


def coarse_codes(adata: ad.AnnData, keys: list[str]) -> tuple[np.ndarray, list[str], CoarseSchemes | None]:
    """Coarse class per cell and the class names; with several schemes the joint groups and the schemes."""
    if len(keys) > 1:  # several schemes: features, neighbours and the warm start work on the joint groups
        schemes = coarse_schemes(adata.obs, keys)
        return schemes.joint, schemes.joint_names, schemes
    coarse_cat = pd.Categorical(adata.obs[keys[0]]).remove_unused_categories()
    return coarse_cat.codes.astype(np.int64), [str(c) for c in coarse_cat.categories], None


def fit_features(
    adata: ad.AnnData, setup: SetupParams, groups: np.ndarray, n_groups: int, random_state: int, **override: Any
) -> tuple[FeatureTransform, CellFeatures]:
    """:meth:`FeatureTransform.fit <falcon_sc.pp.FeatureTransform.fit>` with the setup's preprocessing."""
    options = {
        "layer": setup.layer,
        "use_rep": setup.use_rep,
        "input_kind": setup.input_kind,
        "batch_key": setup.batch_key,
        "n_top_genes": setup.n_top_genes,
        "n_comps": setup.n_comps,
        "n_comps_within": setup.n_comps_within,
        "model_input": setup.model_input,
        **override,
    }
    # refine and FalconModel.fit scan every value before any work (falcon_sc._validate.check_data)
    return FeatureTransform.fit(
        adata, groups, n_coarse=n_groups, random_state=random_state, values_checked=True, **options
    )


def cell_problem(
    adata: ad.AnnData, setup: SetupParams, keys: list[str], n_fine: Any, random_state: int
) -> tuple[Problem, FeatureTransform, CellFeatures]:
    """The FALCON problem of the cells of ``adata``, with the fitted transform and the inputs it produced.

    With several schemes, missing labels are filled on the global components first (so no fine class is cut), and
    the within-class components are fitted inside the joint groups.
    """
    coarse, coarse_names, schemes = coarse_codes(adata, keys)
    groups, group_names, first, table = coarse, coarse_names, None, None
    if schemes is not None:
        _, first = fit_features(adata, setup, coarse, len(coarse_names), random_state, n_comps_within=0)
        groups, group_names, table = filled_groups(schemes, first.neighbour_space, n_fine)
    reuse = {} if first is None else {"prepared": first.prepared}  # the preprocessing does not depend on the groups
    transform, inputs = fit_features(adata, setup, groups, len(group_names), random_state, **reuse)
    problem = Problem(
        features=inputs.features,
        space=inputs.neighbour_space,
        coarse=coarse,
        coarse_names=coarse_names,
        groups=groups,
        group_names=group_names,
        schemes=schemes,
        shared=None if inputs.prepared is None else inputs.prepared.embedding,  # the global components
        group_table=table,
    )
    return problem, transform, inputs


def describe_inputs(transform: FeatureTransform, width: int) -> str:
    """What the preprocessing produced, for its log line (``"lognorm; 2,000 genes -> 50 + 10 within-class PCs"``)."""
    if transform.use_rep is not None:
        return f"obsm[{transform.use_rep!r}], {width} dimensions"
    head = f"{transform.input_kind}; {len(transform.genes):,} genes"
    if transform.model_input == "hvg":
        return f"{head} as inputs"
    n_global = 0 if transform.pca is None else transform.pca.n_comps
    within = f" + {transform.n_comps_within} within-class" if transform.n_comps_within else ""
    return f"{head} -> {n_global}{within} PCs"
