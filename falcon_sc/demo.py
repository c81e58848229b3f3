"""End-to-end demo: FALCON and two baselines on a bundled dataset with known fine labels.

Run ``python -m falcon_sc.demo [--dataset pbmc68k|pbmc3k|zeisel|sim] [--out falcon_demo] [--seed 0]``: the coarse
labels of the dataset are refined into as many fine classes as it has true fine labels by
:func:`falcon_sc.tl.refine` and by the baselines of :mod:`falcon_sc.baselines`; the scores against the true fine
labels are printed and saved (``metrics.csv``), with the learned relation (``relation.csv``) and figures
(``overview.png``: learned vs true relation and UMAPs; ``confusion.png``; ``history.png``). Works offline.
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
    """Learned fine classes with parent, size, confidence, matched true class and that class's true parent."""
    table = adata.uns[KEY]["fine_classes"].copy()
    matching = metrics.match_labels(adata.obs[FINE].astype(str).to_numpy(), adata.obs[KEY].astype(str).to_numpy())
    true_parent = datasets.true_relation(adata)
    table["matched_true"] = [matching.get(f) for f in table.index]
    table["true_parent"] = [true_parent.get(t) if t is not None else None for t in table["matched_true"]]
    table.index.name = "fine"
    return table


def print_relation(adata: ad.AnnData, table: pd.DataFrame) -> None:
    """Print the learned fine classes under each coarse class, with their matched true class."""
    true_children = pd.Series(datasets.true_relation(adata)).value_counts()
    print("\nLearned relation (fine classes per coarse class; [matched true class]):")
    for parent, group in table.groupby("parent", sort=False):
        n_true = int(true_children.get(parent, 0))
        print(f"  {parent}: {len(group)} learned, {n_true} true")
        for fine, row in group.sort_values("n_cells", ascending=False, kind="stable").iterrows():
            mark = "" if row["true_parent"] in (None, parent) else f"  <- true parent: {row['true_parent']}"
            print(
                f"      {fine:<24} {int(row['n_cells']):>6} cells  conf {row['mean_confidence']:.2f}  "
                f"[{row['matched_true']}]{mark}"
            )


def umap_coordinates(adata: ad.AnnData, seed: int) -> np.ndarray:
    """``obsm["X_umap"]`` when present, else a UMAP of FALCON's PCA input (computed on a throw-away AnnData)."""
    if "X_umap" in adata.obsm:
        return np.asarray(adata.obsm["X_umap"])
    import scanpy as sc

    from .pp import prepare

    tmp = ad.AnnData(obs=pd.DataFrame(index=adata.obs_names.copy()))
    tmp.obsm["X_pca"] = prepare(adata, random_state=seed).embedding
    sc.pp.neighbors(tmp, use_rep="X_pca", random_state=seed)
    sc.tl.umap(tmp, random_state=seed)
    return np.asarray(tmp.obsm["X_umap"])


def _scatter(ax, xy: np.ndarray, labels: Sequence[str], colors: dict[str, object], title: str) -> None:
    names = np.asarray(labels).astype(str)
    order = list(dict.fromkeys(colors))
    for name in order + sorted(set(names) - set(order)):
        mask = names == name
        if mask.any():
            ax.scatter(*xy[mask].T, s=4, color=colors.get(name, "0.7"), label=name, rasterized=True, linewidths=0)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(
        loc="center left",
        bbox_to_anchor=(1.0, 0.5),
        fontsize=6,
        markerscale=3,
        frameon=False,
        ncols=2 if len(set(names)) > 16 else 1,
    )


def save_figures(adata: ad.AnnData, out: Path, seed: int) -> list[Path]:
    """Write ``overview.png`` (relations + UMAPs), ``confusion.png`` and ``history.png``; return the paths."""
    from matplotlib.figure import Figure

    from . import pl
    from .pl._utils import palette

    n_nodes = max(adata.obs[KEY].nunique(), adata.obs[FINE].nunique())
    top = max(3.5, 0.28 * n_nodes + 1.2)
    fig = Figure(figsize=(15, top + 5.5), layout="constrained")
    axs = fig.subplot_mosaic([["rel", "true"], ["umap_true", "umap_falcon"]], height_ratios=[top, 5.5])
    pl.relations(adata, key=KEY, true_key=FINE, ax=[axs["rel"], axs["true"]], show=False)
    xy = umap_coordinates(adata, seed)
    true_names = [str(c) for c in adata.obs[FINE].cat.categories]
    true_colors = dict(zip(true_names, palette(len(true_names)), strict=True))
    matching = metrics.match_labels(adata.obs[FINE].astype(str).to_numpy(), adata.obs[KEY].astype(str).to_numpy())
    # a learned class gets the colour of the true class it is matched with (grey when unmatched)
    learned_colors = {
        str(g): true_colors[str(matching[g])] for g in adata.obs[KEY].cat.categories if matching.get(g) is not None
    }
    _scatter(axs["umap_true"], xy, adata.obs[FINE], true_colors, f"true fine labels ({FINE})")
    _scatter(axs["umap_falcon"], xy, adata.obs[KEY], learned_colors, "FALCON (colour of the matched true class)")
    paths = [out / "overview.png", out / "confusion.png", out / "history.png"]
    fig.savefig(paths[0], dpi=130)

    n_fine = adata.obs[KEY].nunique()
    fig = Figure(
        figsize=(max(5.0, 0.42 * n_fine + 3.5), max(4.0, 0.35 * adata.obs[FINE].nunique() + 2.5)), layout="constrained"
    )
    pl.confusion(adata, FINE, key=KEY, ax=fig.add_subplot(), show=False)
    fig.savefig(paths[1], dpi=130)

    fig = Figure(figsize=(9, 6), layout="constrained")
    pl.history(adata, key=KEY, ax=list(fig.subplots(2, 2).ravel()), show=False)
    fig.savefig(paths[2], dpi=130)
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

        for name in ("kmeans_within", "leiden_within"):
            print(f"running {name} ...", flush=True)
            start = time.perf_counter()
            res = BASELINES[name](adata, COARSE, n_fine, random_state=args.seed)
            rows.append(score(adata, res.labels, res.relation, time.perf_counter() - start, name))

    table = pd.DataFrame(rows)
    print(
        f"\nScores against the true fine labels ({args.dataset}, seed {args.seed}; relation_edits: edit distance "
        "of the learned to the true coarse-fine graph, 0 is perfect):"
    )
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))

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
