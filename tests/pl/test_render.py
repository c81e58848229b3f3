"""Every ``fal.pl`` figure renders for 1, 2 and 30 coarse classes (a synthetic AnnData holding the results keys)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
from scipy import sparse

import falcon_sc as fal

N_EPOCHS, CELLS, GENES = 12, 8, 40


def synthetic(n_coarse: int, seed: int = 0) -> AnnData:
    """Results of a FALCON run on ``n_coarse`` coarse classes of 1-3 fine classes each, written by hand.

    True and predicted fine classes share most cells; every fine class has genes of its own (counts), so marker
    tests find them; a few cells are flagged outside their parent. Nothing is trained.
    """
    rng = np.random.default_rng(seed)
    coarse_names = [f"type {c}" for c in range(n_coarse)] if n_coarse > 2 else ["T cell", "myeloid"][:n_coarse]
    kids = [1 + (c % 3) for c in range(n_coarse)]  # 1, 2, 3, 1, ...: single-child classes included
    fine = [f"{c}/{i + 1}" for c, k in zip(coarse_names, kids, strict=True) for i in range(k)]
    parent = [c for c, k in zip(coarse_names, kids, strict=True) for _ in range(k)]
    labels = np.repeat(fine, CELLS)
    n = len(labels)
    true = np.array([f"true {f}" for f in labels], dtype=object)
    swap = rng.random(n) < 0.15  # some cells carry a sibling's true label
    true[swap] = np.roll(true, CELLS)[swap]
    X = rng.poisson(1.0, (n, GENES)).astype(np.float32)
    for i, f in enumerate(fine):
        X[labels == f, i % GENES] += 8.0
    obs = pd.DataFrame(
        {
            "coarse": pd.Categorical(np.repeat(parent, CELLS), categories=coarse_names),
            "fine": pd.Categorical(true),
            "falcon": pd.Categorical(labels, categories=fine),
            "falcon_confidence": rng.uniform(0.5, 1.0, n),
            "falcon_outside_parent": rng.random(n) < 0.05,
        },
        index=[f"cell{i}" for i in range(n)],
    )
    adata = AnnData(sparse.csr_matrix(X), obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(GENES)]))
    relations = pd.DataFrame(
        [[int(p == c) for c in coarse_names] for p in parent], index=fine, columns=coarse_names, dtype=np.int8
    )
    probs = np.full((n, len(fine)), 0.02)
    probs[np.arange(n), np.repeat(np.arange(len(fine)), CELLS)] = 1.0
    adata.obsm["falcon_probs"] = (probs / probs.sum(1, keepdims=True)).astype(np.float32)
    adata.obsm["falcon_embedding"] = rng.normal(size=(n, 4)).astype(np.float32)
    adata.obsm["falcon_umap"] = rng.normal(size=(n, 2)).astype(np.float32)
    children = np.tile(kids, (N_EPOCHS, 1))
    children[: N_EPOCHS // 2, 0] += 1 if n_coarse > 1 else 0  # one class lost a child half-way
    estimate = pd.DataFrame({"estimated": kids, "used": kids, "given": False}, index=coarse_names)
    evidence = pd.DataFrame(
        [
            {"coarse": c, "n_children": k, "seed": s, "connectivity": float(np.clip(0.9 - 0.25 * (kk - k + 1), 0, 1))}
            for c, kk in zip(coarse_names, kids, strict=True)
            for k in range(2, kk + 4)
            for s in range(2)
        ]
    )
    adata.uns["falcon"] = {
        "relations": relations,
        "fine_classes": pd.DataFrame(
            {"parent": parent, "n_cells": CELLS, "mean_confidence": 0.9}, index=pd.Index(fine)
        ),
        "history": pd.DataFrame(
            {
                "epoch": range(N_EPOCHS),
                "loss": np.linspace(1.0, 0.3, N_EPOCHS),
                "coarse": 0.1,
                "neighbour": 0.2,
                "confident": 0.05,
                "regulariser": 0.01,
                "fine_in_use": len(fine),
                "largest_fine_share": 1.0 / len(fine),
                "relation_changes": [0] * (N_EPOCHS // 2) + [int(n_coarse > 1)] + [0] * (N_EPOCHS - N_EPOCHS // 2 - 1),
                "relation_solves": 1,
            }
        ),
        "children_history": children,
        "n_fine_estimate": estimate,
        "n_fine_evidence": evidence,
        "n_fine_threshold": 0.3,
        "params": {"coarse_key": "coarse", "n_fine": len(fine), "learn_relation": True, "relation_every": 30},
    }
    return adata


@pytest.fixture(scope="module", params=[1, 2, 30], ids=lambda n: f"{n}_coarse")
def results(request) -> AnnData:
    adata = synthetic(request.param)
    fal.tl.fine_markers(adata, n_genes=3, single_child="rest")
    return adata


PLOTS = {
    "relations_graph": lambda a: fal.pl.relations(a, "falcon", true_key="fine", show=False),
    "relations_heatmap": lambda a: fal.pl.relations(a, "falcon", kind="heatmap", true_key="fine", show=False),
    "embedding": lambda a: fal.pl.embedding(a, "falcon", color=["falcon", "fine"], show=False),
    "confusion": lambda a: fal.pl.confusion(a, "fine", show=False),
    "history": lambda a: fal.pl.history(a, "falcon", show=False),
    "n_fine": lambda a: fal.pl.n_fine(a, "falcon", show=False),
    "fine_markers": lambda a: fal.pl.fine_markers(a, "falcon", show=False),
    "coarse_conflicts": lambda a: fal.pl.coarse_conflicts(a, "falcon", show=False),
}


@pytest.mark.parametrize("name", list(PLOTS))
def test_renders(results, name, tmp_path):
    out = PLOTS[name](results)
    fig = (out[0] if isinstance(out, list) else out).get_figure(root=True) if not isinstance(out, plt.Figure) else out
    path = tmp_path / f"{name}.png"
    fig.savefig(path, dpi=40)
    assert path.stat().st_size > 0
    plt.close("all")
