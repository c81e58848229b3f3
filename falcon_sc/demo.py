"""End-to-end demo: FALCON and two baselines on a bundled dataset with known fine labels.

Run ``python -m falcon_sc.demo [--dataset pbmc68k|pbmc3k|zeisel|sim] [--out falcon_demo] [--seed 0]``: the coarse
labels of the dataset are refined into as many fine classes as it has true fine labels by
:func:`falcon_sc.tl.refine` and by the baselines of :mod:`falcon_sc.baselines`; the scores against the true fine
labels are printed and saved (``metrics.csv``), with the learned relation (``relation.csv``) and figures
(``overview.png``: learned vs true relation, and a UMAP of FALCON's embedding coloured by the true fine labels and
by FALCON's own classes; ``confusion.png``; ``history.png``). Works offline.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from . import datasets, metrics, tl
from .bench._methods import complete_relation, relations_to_dict

DATASETS: dict[str, Callable[[int], ad.AnnData]] = {
    "pbmc68k": lambda seed: datasets.pbmc68k(),
    "pbmc3k": lambda seed: datasets.pbmc3k(),
    "zeisel": lambda seed: datasets.zeisel(),
    "sim": lambda seed: datasets.simulate(n_cells=3000, n_genes=1000, random_state=seed),
}
COARSE, FINE, KEY = "coarse", "fine", "falcon"
DEMO_BASELINES = ("kmeans_within", "leiden_within", "leiden_scanpy", "subcluster")
"""What a scanpy user would do instead: k-means or Leiden inside each coarse class, the full scanpy workflow restricted
to each coarse class, and re-analysis of each class on its own (:mod:`falcon_sc.baselines`)."""


def score(adata: ad.AnnData, labels: np.ndarray, relation: dict[str, str], seconds: float, method: str) -> dict:
    """Scores of one method's fine labels against ``obs["fine"]``."""
    labels = np.asarray(labels).astype(str)
    coarse = adata.obs[COARSE].astype(str).to_numpy()
    relation = complete_relation(labels, coarse, relation)
    res = metrics.evaluate(
        adata.obs[FINE].astype(str).to_numpy(),
        labels,
        coarse=coarse,
        true_relation=datasets.true_relation(adata),
        pred_relation=relation,
    )
    return {
        "method": method,
        "accuracy": res["accuracy"],
        "macro_accuracy": res["macro_accuracy"],
        "ari": res["ari"],
        "within_coarse_ari": res["within_coarse_ari"],
        "relation_edits": res["relation_edit_distance"],
        "n_found": len(np.unique(labels)),
        "seconds": seconds,
    }


def learned_relation_table(adata: ad.AnnData) -> pd.DataFrame:
    """Learned fine classes with parent, size, confidence, matched true class, overlap and that class's true parent.

    ``matched_true`` is the true fine class paired with the learned class by the Hungarian matching behind the
    clustering accuracy (:func:`~falcon_sc.metrics.match_labels`: one-to-one, maximising the cells shared over all
    pairs), ``matched_cells`` the learned class's cells that carry that true label; ``top_true`` / ``top_cells`` the
    true class most of its cells carry. ``true_parent`` is the coarse class the matched true class belongs to.
    """
    table = adata.uns[KEY]["fine_classes"].copy()
    true = adata.obs[FINE].astype(str)
    pred = adata.obs[KEY].astype(str)
    matching = metrics.match_labels(true.to_numpy(), pred.to_numpy())
    true_parent = datasets.true_relation(adata)
    overlap = pd.crosstab(pred, true)
    table["matched_true"] = [matching.get(f) for f in table.index]
    table["matched_cells"] = [
        int(overlap.loc[f, t]) if t is not None and f in overlap.index else 0
        for f, t in zip(table.index, table["matched_true"], strict=True)
    ]
    table["top_true"] = [overlap.loc[f].idxmax() if f in overlap.index else None for f in table.index]
    table["top_cells"] = [int(overlap.loc[f].max()) if f in overlap.index else 0 for f in table.index]
    table["true_parent"] = [true_parent.get(t) if t is not None else None for t in table["matched_true"]]
    table.index.name = "fine"
    return table


def print_relation(adata: ad.AnnData, table: pd.DataFrame) -> None:
    """Print the learned fine classes under each coarse class, with their matched true class and overlap."""
    true_children = pd.Series(datasets.true_relation(adata)).value_counts()
    print(
        "\nLearned relation: FALCON's fine classes under each coarse class (learned: FALCON's children; true: true "
        "fine classes whose cells are mostly in that coarse class; conf: mean probability of each cell's label among "
        "its siblings).\n"
        "  [X: n of N cells] = the true fine class X paired with this FALCON class by the Hungarian matching behind "
        "the accuracy (one-to-one, maximising the cells shared over all pairs); n of its N cells are labelled X.\n"
        "  \u2717 C = X belongs to coarse class C, not to this one: a left-over pairing of the one-to-one matching "
        "(typically: more FALCON classes here than true ones), not a claim about these cells; 'mostly Y (m)' names "
        "the true class most of them carry."
    )
    for parent, group in table.groupby("parent", sort=False):
        n_true = int(true_children.get(parent, 0))
        print(f"  {parent}: {len(group)} learned, {n_true} true")
        for fine, row in group.sort_values("n_cells", ascending=False, kind="stable").iterrows():
            n = int(row["n_cells"])
            if row["matched_true"] is None:
                bracket = "[no true class left to pair]"
            else:
                bracket = f"[{row['matched_true']}: {int(row['matched_cells'])} of {n} cells]"
            mostly = (
                f"  mostly {row['top_true']} ({int(row['top_cells'])})"
                if row["top_true"] is not None and row["top_true"] != row["matched_true"]
                else ""
            )
            mark = "" if row["true_parent"] in (None, parent) else f"  \u2717 {row['true_parent']}"
            print(f"      {fine:<16} {n:>6} cells  conf {row['mean_confidence']:.2f}  {bracket}{mark}{mostly}")


def save_figures(adata: ad.AnnData, out: Path, seed: int) -> list[Path]:
    """Write ``overview.png`` (relations + UMAPs), ``confusion.png`` and ``history.png``; return the paths."""
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    from . import pl

    n_nodes = max(adata.obs[KEY].nunique(), adata.obs[FINE].nunique())
    top = max(3.5, 0.28 * n_nodes + 1.2)
    fig = Figure(figsize=(15, top + 5.8), layout="constrained")
    axs = fig.subplot_mosaic([["rel", "true"], ["umap_true", "umap_falcon"]], height_ratios=[top, 5.8])
    pl.relations(adata, key=KEY, true_key=FINE, ax=[axs["rel"], axs["true"]], show=False)
    # both panels on the same coordinates: a UMAP of FALCON's learned representation (obsm["falcon_embedding"]),
    # computed once and kept in obsm["falcon_umap"] of the demo's own AnnData
    # the true classes in the hue of the coarse class holding most of their cells, as FALCON's classes (a shade
    # each), so the two UMAPs and the relation graph above share one colour code
    pl.embedding(
        adata,
        KEY,
        color=FINE,
        palette="family",
        ax=axs["umap_true"],
        random_state=seed,
        store=True,
        size=12,
        show=False,
    )
    pl.embedding(adata, KEY, ax=axs["umap_falcon"], size=12, show=False)  # colours: parent's hue, a shade each
    axs["umap_true"].set_title(
        f"true fine labels (obs['{FINE}']), UMAP of FALCON's embedding\ncolour: hue of the coarse class of most of "
        "its cells, a shade per class",
        fontsize=11,
    )
    axs["umap_falcon"].set_title(
        f"FALCON fine classes (obs['{KEY}'])\nsame UMAP; colour: hue of the parent coarse class, a shade per class",
        fontsize=11,
    )
    paths = [out / "overview.png", out / "confusion.png", out / "history.png"]
    fig.savefig(paths[0], dpi=130)

    n_fine = adata.obs[KEY].nunique()
    fig = Figure(
        figsize=(max(5.5, 0.42 * n_fine + 4.0), max(4.5, 0.35 * adata.obs[FINE].nunique() + 3.0)), layout="constrained"
    )
    pl.confusion(adata, FINE, key=KEY, ax=fig.add_subplot(), show=False)
    fig.savefig(paths[1], dpi=130)

    history = pl.history(adata, KEY, show=False)  # its own figure: the panels' heights follow the coarse classes
    assert history is not None  # show=False returns the figure
    history.savefig(paths[2], dpi=130)
    plt.close(history)
    return paths


def main(argv: Sequence[str] | None = None) -> pd.DataFrame:
    """Run the demo (command line entry point).

    Parameters
    ----------
    argv
        Command line arguments; default ``sys.argv[1:]``.

    Returns
    -------
    The table of scores (one row per method).
    """
    parser = argparse.ArgumentParser(
        prog="python -m falcon_sc.demo",
        description="Refine coarse labels into fine classes with FALCON and baselines; score against known labels.",
    )
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="pbmc68k", help="bundled dataset")
    parser.add_argument("--out", type=Path, default=Path("falcon_demo"), help="output folder (created)")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--n-epochs", type=int, default=None, help="FALCON epochs (default: automatic)")
    parser.add_argument("--no-baselines", action="store_true", help="run FALCON only")
    parser.add_argument("--no-figures", action="store_true", help="skip the figures")
    args = parser.parse_args(argv)

    adata = DATASETS[args.dataset](args.seed)
    n_fine = int(adata.obs[FINE].nunique())
    n_coarse = int(adata.obs[COARSE].nunique())
    print(
        f"{args.dataset}: {adata.n_obs} cells x {adata.n_vars} genes, {n_coarse} coarse classes "
        f"({', '.join(map(str, adata.obs[COARSE].cat.categories))}) -> n_fine = {n_fine} (number of true fine "
        "classes)"
    )

    rows = []
    print("running FALCON (fal.tl.refine) ...", flush=True)
    start = time.perf_counter()
    tl.refine(adata, COARSE, n_fine, key_added=KEY, random_state=args.seed, n_epochs=args.n_epochs, show_progress=False)
    seconds = time.perf_counter() - start
    rows.append(
        score(adata, adata.obs[KEY].to_numpy(), relations_to_dict(adata.uns[KEY]["relations"]), seconds, "falcon")
    )
    if not args.no_baselines:
        from .baselines import BASELINES

        for name in DEMO_BASELINES:
            print(f"running {name} ...", flush=True)
            start = time.perf_counter()
            res = BASELINES[name](adata, COARSE, n_fine, random_state=args.seed)
            rows.append(score(adata, res.labels, res.relation, time.perf_counter() - start, name))

    table = pd.DataFrame(rows)
    best = table.iloc[1:][["within_coarse_ari", "macro_accuracy"]].max() if len(table) > 1 else None
    print(
        f"\nScores against the true fine labels ({args.dataset}, seed {args.seed}; relation_edits: edit distance "
        "of the learned to the true coarse-fine graph, 0 is perfect):"
    )
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if best is not None:
        falcon_row = table.iloc[0]
        print(
            "FALCON minus the best baseline: within-coarse ARI "
            f"{falcon_row['within_coarse_ari'] - best['within_coarse_ari']:+.3f}, macro accuracy "
            f"{falcon_row['macro_accuracy'] - best['macro_accuracy']:+.3f} (one dataset and seed: see "
            "`python -m falcon_sc.bench real` for the real-cell suite)"
        )

    relation = learned_relation_table(adata)
    print_relation(adata, relation)

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "metrics.csv", out / "relation.csv"]
    table.to_csv(written[0], index=False)
    relation.to_csv(written[1])
    if not args.no_figures:
        written += save_figures(adata, out, args.seed)
    print("\nWrote:")
    for path in written:
        print(f"  {path}")
    return table


if __name__ == "__main__":
    main()
