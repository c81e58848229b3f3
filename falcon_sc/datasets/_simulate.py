"""Hierarchical negative-binomial simulator of counts with coarse and fine cell types."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from ._utils import finalise

_CHUNK = 4096  # cells generated per dense block (fixed: the output must not depend on it)


def _check_number(name: str, value: Any, *, low: float | None = None, high: float | None = None, strict=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(float(value)):
        raise ValueError(f"`{name}` must be a finite number, got {value!r}.")
    number = float(value)
    if low is not None and (number <= low if strict else number < low):
        raise ValueError(f"`{name}` must be {'>' if strict else '>='} {low}, got {value!r}.")
    if high is not None and number > high:
        raise ValueError(f"`{name}` must be <= {high}, got {value!r}.")
    return number


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"`{name}` must be an integer, got {value!r}.")
    if value < low:
        raise ValueError(f"`{name}` must be >= {low}, got {value!r}.")
    return int(value)


def _allocate(n: int, p: np.ndarray, minimum: int) -> np.ndarray:
    """Split ``n`` into parts of at least ``minimum``, the rest proportional to ``p`` (largest remainder)."""
    sizes = np.full(p.size, minimum, dtype=np.int64)
    rest = n - sizes.sum()
    share = rest * p / p.sum()
    extra = np.floor(share).astype(np.int64)
    left = rest - extra.sum()
    extra[np.argsort(-(share - extra), kind="stable")[:left]] += 1
    return sizes + extra


def _dense_to_csr(counts: np.ndarray) -> sparse.csr_matrix:
    """Convert a dense integer block to CSR float32 (faster than ``csr_matrix(dense)``)."""
    flat = np.flatnonzero(counts)
    n_rows, n_cols = counts.shape
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(flat // n_cols, minlength=n_rows), out=indptr[1:])
    data = counts.ravel()[flat].astype(np.float32)
    return sparse.csr_matrix((data, (flat % n_cols).astype(np.int32), indptr), shape=counts.shape)


def _effects(
    rng: np.random.Generator, n_genes: int, frac: float, strength: float, size: int, pool: np.ndarray | None = None
) -> np.ndarray:
    """Log-fold-change programs: ``size`` rows, each with ``frac * n_genes`` genes changed by ~``strength``.

    The genes are drawn from ``pool`` (all genes by default).
    """
    lfc = np.zeros((size, n_genes))
    pool = np.arange(n_genes) if pool is None else pool
    n_de = min(pool.size, max(1, int(round(frac * n_genes))))
    for k in range(size):
        genes = rng.choice(pool, n_de, replace=False)
        magnitude = strength * rng.lognormal(0.0, 0.3, n_de)
        sign = np.where(rng.random(n_de) < 0.5, -1.0, 1.0)
        lfc[k, genes] = sign * magnitude
    return lfc


def _class_sizes(
    n_cells: int,
    weights: np.ndarray,
    fine_parent: np.ndarray,
    rng: np.random.Generator,
    *,
    size_sd: float,
    n_rare: int,
    rare_coarse: Sequence[int] | None,
    rare_fraction: float,
    minimum: int,
    rare_minimum: int,
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Fine class sizes with a within-coarse log-normal spread and rare children.

    Returns the final weights, the sizes and the indices of the rare fine classes.
    """
    n_coarse = int(fine_parent.max()) + 1
    counts = np.bincount(fine_parent, minlength=n_coarse)
    total = np.bincount(fine_parent, weights=weights, minlength=n_coarse)  # coarse weights, kept throughout
    w = weights.copy()
    if size_sd > 0:
        w *= np.exp(size_sd * rng.standard_normal(w.size))
        w *= (total / np.bincount(fine_parent, weights=w, minlength=n_coarse))[fine_parent]
    if rare_coarse is None:
        candidates = np.flatnonzero(counts >= 2)
        rare_coarse = sorted(candidates[np.argsort(-total[candidates], kind="stable")[:n_rare]].tolist())
    last = np.cumsum(counts) - 1  # the last child of every coarse class
    rare_fine = [int(last[c]) for c in rare_coarse]
    if not rare_fine:
        return w, _allocate(n_cells, w, minimum), []
    is_rare = np.zeros(w.size, dtype=bool)
    is_rare[rare_fine] = True
    for c in rare_coarse:  # the rare child gets rare_fraction of the coarse weight, its siblings share the rest
        sib = (fine_parent == c) & ~is_rare
        w[sib] *= (1 - rare_fraction) * total[c] / w[sib].sum()
        w[last[c]] = rare_fraction * total[c]
    # coarse class sizes first, then the children inside every coarse class
    floors = np.where(is_rare, rare_minimum, minimum)
    coarse_floor = np.bincount(fine_parent, weights=floors, minlength=n_coarse).astype(np.int64)
    coarse_sizes = coarse_floor + _allocate(int(n_cells - coarse_floor.sum()), total, 0)
    sizes = np.zeros(w.size, dtype=np.int64)
    for c in range(n_coarse):
        members = np.flatnonzero(fine_parent == c)
        n_c = int(coarse_sizes[c])
        if is_rare[members].any():
            sib = members[~is_rare[members]]
            rare_size = max(rare_minimum, int(np.floor(rare_fraction * n_c + 0.5)))
            rare_size = min(rare_size, n_c - sib.size * minimum)
            sizes[last[c]] = rare_size
            sizes[sib] = _allocate(n_c - rare_size, w[sib], minimum)
        else:
            sizes[members] = _allocate(n_c, w[members], minimum)
    return w, sizes, rare_fine


def simulate(
    n_cells: int = 5000,
    n_genes: int = 2000,
    children: Sequence[int] = (1, 2, 5, 4, 3, 2, 1),
    *,
    imbalance: float = 0.5,
    min_cells_per_class: int = 20,
    size_sd: float = 0.0,
    n_rare: int = 0,
    rare_coarse: Sequence[int] | None = None,
    rare_fraction: float = 0.02,
    rare_min_cells: int = 30,
    coarse_effect: float = 1.5,
    coarse_de_frac: float = 0.1,
    fine_effect: float = 0.8,
    fine_de_frac: float = 0.02,
    state_effect: float = 2.0,
    state_de_frac: float = 0.02,
    n_batches: int = 1,
    batch_effect: float = 0.8,
    batch_de_frac: float = 0.1,
    batch_library_shift: float = 0.3,
    library_size: float = 2000.0,
    library_sd: float = 0.4,
    dispersion: float = 0.1,
    dropout: float = 0.0,
    random_state: int = 0,
) -> ad.AnnData:
    r"""Simulate UMI counts of cells with a two-level (coarse -> fine) type hierarchy.

    Model. Gene base expression :math:`b_g \sim \mathrm{Gamma}(0.6, 1/0.3)` (heavy-tailed, as in Splatter).
    Every coarse class has a strong program: ``coarse_de_frac * n_genes`` genes with log-fold changes of magnitude
    about ``coarse_effect`` (random sign, log-normal jitter). Every fine class of a coarse class with two or more
    children adds a subtle program: ``fine_de_frac * n_genes`` genes with magnitude about ``fine_effect``. Cell
    :math:`i` of fine class :math:`k` in batch :math:`j` has mean :math:`\mu_{ig} = L_i\, p_{kjg}` where
    :math:`p_{kj} \propto b \exp(\mathrm{lfc}_{\text{coarse}} + \mathrm{lfc}_{\text{fine}} +
    \mathrm{lfc}_{\text{batch}})` and the library size :math:`L_i` is log-normal (median ``library_size``, log-sd
    ``library_sd``, shifted per batch). In addition every coarse class has a continuous state program (e.g.
    activation) on ``state_de_frac * n_genes`` genes with magnitude about ``state_effect``, scaled per cell by a
    uniform score in [0, 1] (``obs["state"]``) and shared by its fine classes: it elongates the fine clusters, so
    that centroid methods such as k-means do worse than graph clustering.
    Counts are negative binomial with gene-wise dispersion around
    ``dispersion`` (variance :math:`\mu + \phi_g \mu^2`), optionally zero-inflated with probability ``dropout``.

    Class sizes: fine class proportions are :math:`\exp(\mathrm{imbalance}\,(z_c + z_{cf}))` with standard
    normal :math:`z` per coarse class and per fine class (0 = all fine classes equally large), after reserving
    ``min_cells_per_class`` cells for every fine class. ``size_sd > 0`` adds a log-normal spread *within* each coarse
    class: the weights of the children of a coarse class are multiplied by :math:`\exp(\mathrm{size\_sd}\, u_{cf})`
    (standard normal :math:`u`, drawn from a random stream of its own) and rescaled so that the coarse class keeps its
    total weight, hence its expected size. Rare subtypes (``n_rare`` or ``rare_coarse``): in each chosen coarse class
    (two or more children) the last child is rare, with :math:`\max(\mathrm{rare\_min\_cells},
    \mathrm{round}(\mathrm{rare\_fraction}\, n_c))` of the :math:`n_c` cells of its coarse class, the other
    children sharing the rest by their weights; coarse class sizes are then allocated first (from the same weights) and
    the children inside each coarse class second. The rare fine classes are listed in ``uns["falcon_dataset"]["rare"]``.
    Batches (``n_batches > 1``) are assigned uniformly and
    independently of type; each batch changes ``batch_de_frac * n_genes`` genes by about ``batch_effect`` (by
    default larger than the fine effects, so a batch-unaware method splits by batch) and shifts the log library
    size by :math:`\mathcal{N}(0, \text{batch\_library\_shift}^2)`.

    Parameters
    ----------
    n_cells, n_genes
        Matrix size.
    children
        Number of fine classes in each coarse class.
    imbalance
        Log-scale spread of class proportions; 0 gives balanced fine classes.
    min_cells_per_class
        Minimum number of cells of every fine class (except the rare ones, see ``rare_min_cells``).
    size_sd
        Log-sd of the fine class sizes within each coarse class, on top of ``imbalance`` and without changing the
        coarse class sizes (0, the default, adds nothing).
    n_rare
        Number of coarse classes that get one rare child: the ``n_rare`` coarse classes with two or more children and
        the largest expected size. Ignored when ``rare_coarse`` is given.
    rare_coarse
        Indices of the coarse classes (each with two or more children) that get one rare child, instead of ``n_rare``.
    rare_fraction
        Share of its coarse class's cells that a rare child gets, in (0, 0.5].
    rare_min_cells
        Minimum number of cells of a rare child (it wins over ``rare_fraction`` in small coarse classes).
    coarse_effect, coarse_de_frac, fine_effect, fine_de_frac
        Magnitude (log scale) and gene fraction of the coarse and fine programs.
    state_effect, state_de_frac
        Magnitude and gene fraction of the continuous within-type state program (0 disables it).
    n_batches, batch_effect, batch_de_frac, batch_library_shift
        Batch structure (stored in ``obs["batch"]`` when ``n_batches > 1``).
    library_size, library_sd
        Median and log-sd of the per-cell total counts.
    dispersion
        Typical negative-binomial dispersion :math:`\phi`.
    dropout
        Extra probability of zeroing a count.
    random_state
        Seed; the output is a deterministic function of the arguments.

    Returns
    -------
    AnnData
        ``X``: raw counts (CSR float32, integer-valued). ``obs``: ``coarse`` ("C0", ...), ``fine`` ("C0.f0", ...),
        ``batch`` (if any), ``library_size``, ``state``. ``var``: ``base_mean`` and booleans ``coarse_de``, ``fine_de``,
        ``batch_de``. ``uns["falcon_dataset"]`` holds name, relation, source, ``rare`` (the rare fine classes, possibly
        none) and the parameters.

    Examples
    --------
    >>> import falcon_sc as fal
    >>> adata = fal.datasets.simulate(n_cells=300, n_genes=200, children=(1, 2, 3), random_state=0)
    >>> adata.shape
    (300, 200)
    >>> adata.obs["fine"].cat.categories.tolist()
    ['C0.f0', 'C1.f0', 'C1.f1', 'C2.f0', 'C2.f1', 'C2.f2']
    >>> fal.datasets.true_relation(adata)["C2.f1"]
    'C2'
    """
    n_cells = _check_int("n_cells", n_cells, 1)
    n_genes = _check_int("n_genes", n_genes, 10)
    if isinstance(children, str | bytes) or not isinstance(children, Sequence | np.ndarray) or len(children) == 0:
        raise ValueError(f"`children` must be a non-empty sequence of positive integers, got {children!r}.")
    children = [_check_int("children", k, 1) for k in children]
    imbalance = _check_number("imbalance", imbalance, low=0)
    min_cells_per_class = _check_int("min_cells_per_class", min_cells_per_class, 1)
    size_sd = _check_number("size_sd", size_sd, low=0, high=5)
    rare_fraction = _check_number("rare_fraction", rare_fraction, low=0, high=0.5, strict=True)
    rare_min_cells = _check_int("rare_min_cells", rare_min_cells, 1)
    n_rare = _check_int("n_rare", n_rare, 0)
    multi = [c for c, k in enumerate(children) if k >= 2]
    if rare_coarse is not None:
        if isinstance(rare_coarse, str | bytes) or not isinstance(rare_coarse, Sequence | np.ndarray):
            raise ValueError(f"`rare_coarse` must be a sequence of coarse class indices, got {rare_coarse!r}.")
        rare_coarse = [_check_int("rare_coarse", c, 0) for c in rare_coarse]
        bad = [c for c in rare_coarse if c >= len(children) or children[c] < 2]
        if bad:
            raise ValueError(
                f"`rare_coarse` must name coarse classes with two or more children (indices {multi}), got {bad}."
            )
        if len(set(rare_coarse)) != len(rare_coarse):
            raise ValueError(f"`rare_coarse` has repeated coarse classes: {rare_coarse}.")
        if n_rare not in (0, len(rare_coarse)):
            raise ValueError(f"`n_rare`={n_rare} disagrees with `rare_coarse` ({len(rare_coarse)} classes).")
        n_rare = len(rare_coarse)
    elif n_rare > len(multi):
        raise ValueError(
            f"`n_rare`={n_rare} is too large: only {len(multi)} coarse classes have two or more children to hold a "
            "rare child."
        )
    coarse_effect = _check_number("coarse_effect", coarse_effect, low=0)
    fine_effect = _check_number("fine_effect", fine_effect, low=0)
    batch_effect = _check_number("batch_effect", batch_effect, low=0)
    state_effect = _check_number("state_effect", state_effect, low=0)
    state_de_frac = _check_number("state_de_frac", state_de_frac, low=0, high=1, strict=True)
    batch_library_shift = _check_number("batch_library_shift", batch_library_shift, low=0)
    coarse_de_frac = _check_number("coarse_de_frac", coarse_de_frac, low=0, high=1, strict=True)
    fine_de_frac = _check_number("fine_de_frac", fine_de_frac, low=0, high=1, strict=True)
    batch_de_frac = _check_number("batch_de_frac", batch_de_frac, low=0, high=1, strict=True)
    n_batches = _check_int("n_batches", n_batches, 1)
    library_size = _check_number("library_size", library_size, low=0, strict=True)
    library_sd = _check_number("library_sd", library_sd, low=0)
    dispersion = _check_number("dispersion", dispersion, low=0, strict=True)
    dropout = _check_number("dropout", dropout, low=0)
    if dropout >= 1:
        raise ValueError(f"`dropout` must be < 1, got {dropout!r}.")
    if isinstance(random_state, bool) or not isinstance(random_state, numbers.Integral) or random_state < 0:
        raise ValueError(f"`random_state` must be a non-negative integer, got {random_state!r}.")
    n_fine = sum(children)
    needed = (n_fine - n_rare) * min_cells_per_class + n_rare * rare_min_cells
    if n_cells < needed:
        raise ValueError(
            f"`n_cells`={n_cells} is too small: {n_fine} fine classes need at least "
            f"{needed} cells (min_cells_per_class={min_cells_per_class}"
            + (f", {n_rare} rare with rare_min_cells={rare_min_cells})." if n_rare else ").")
        )

    seq = np.random.SeedSequence(int(random_state))
    # the first three streams are those of earlier versions: the output for the old arguments is unchanged
    ss_params, ss_cells, ss_counts, ss_sizes = seq.spawn(4)
    rng = np.random.default_rng(ss_params)

    # ---- hierarchy and class sizes
    n_coarse = len(children)
    fine_parent = np.repeat(np.arange(n_coarse), children)
    coarse_names = [f"C{c}" for c in range(n_coarse)]
    fine_names = [f"C{c}.f{j}" for c in range(n_coarse) for j in range(children[c])]
    z_coarse = rng.standard_normal(n_coarse)
    z_fine = rng.standard_normal(n_fine)
    weights = np.exp(imbalance * (z_coarse[fine_parent] + z_fine))
    rare_fine: list[int] = []
    if size_sd > 0 or n_rare > 0:
        weights, sizes, rare_fine = _class_sizes(
            n_cells,
            weights,
            fine_parent,
            np.random.default_rng(ss_sizes),
            size_sd=size_sd,
            n_rare=n_rare,
            rare_coarse=rare_coarse,
            rare_fraction=rare_fraction,
            minimum=min_cells_per_class,
            rare_minimum=rare_min_cells,
        )
    else:
        sizes = _allocate(n_cells, weights, min_cells_per_class)

    # ---- gene programs (log scale), one row per fine class
    base = rng.gamma(0.6, 1.0 / 0.3, n_genes) + 1e-3
    log_base = np.log(base / base.sum())
    lfc_coarse = _effects(rng, n_genes, coarse_de_frac, coarse_effect, n_coarse)
    # fine markers are drawn from the more expressed half of the genes, so that their strength varies less
    expressed = np.flatnonzero(base >= np.median(base))
    lfc_fine = _effects(rng, n_genes, fine_de_frac, fine_effect, n_fine, expressed)
    lfc_fine[np.asarray(children)[fine_parent] == 1] = 0.0  # a single child is its coarse class
    class_log = log_base + lfc_coarse[fine_parent] + lfc_fine
    phi = dispersion * rng.lognormal(0.0, 0.5, n_genes)
    if n_batches > 1:
        lfc_batch = _effects(rng, n_genes, batch_de_frac, batch_effect, n_batches)
        lib_shift = rng.normal(0.0, batch_library_shift, n_batches)
    else:
        lfc_batch = np.zeros((1, n_genes))
        lib_shift = np.zeros(1)
    # continuous within-type state (e.g. activation): one gene program per coarse class, cell score in [0, 1]
    lfc_state = _effects(rng, n_genes, state_de_frac, state_effect, n_coarse, expressed)
    # log expression profiles per (fine class, batch), (n_fine * n_batches, n_genes)
    prof = (class_log[:, None, :] + lfc_batch[None, :, :]).reshape(n_fine * n_batches, n_genes)

    # ---- cells
    rng_cells = np.random.default_rng(ss_cells)
    fine_idx = rng_cells.permutation(np.repeat(np.arange(n_fine), sizes))
    batch_idx = rng_cells.integers(0, n_batches, n_cells) if n_batches > 1 else np.zeros(n_cells, dtype=np.int64)
    lib = np.exp(np.log(library_size) + lib_shift[batch_idx] + library_sd * rng_cells.standard_normal(n_cells))
    state = rng_cells.random(n_cells) if state_effect > 0 else np.zeros(n_cells)

    # ---- counts, chunk by chunk directly into CSR
    expr = np.exp(prof - prof.max(axis=1, keepdims=True))  # unnormalised profiles
    state_genes = np.flatnonzero((lfc_state != 0).any(axis=0))
    lfc_state_sub = lfc_state[:, state_genes]
    shape = 1.0 / phi
    n_chunks = -(-n_cells // _CHUNK)
    chunk_seeds = ss_counts.spawn(n_chunks)
    blocks = []
    for b in range(n_chunks):
        sl = slice(b * _CHUNK, min((b + 1) * _CHUNK, n_cells))
        r = np.random.default_rng(chunk_seeds[b])
        mu = expr[fine_idx[sl] * n_batches + batch_idx[sl]]
        if state_effect > 0:
            mu[:, state_genes] *= np.exp(state[sl, None] * lfc_state_sub[fine_parent[fine_idx[sl]]])
        mu *= (lib[sl] / mu.sum(axis=1))[:, None]
        gam = r.standard_gamma(shape, size=mu.shape)
        gam *= phi
        gam *= mu
        del mu
        counts = r.poisson(gam)
        del gam
        if dropout > 0:
            counts[r.random(counts.shape) < dropout] = 0
        blocks.append(_dense_to_csr(counts))
        del counts
    X = sparse.vstack(blocks, format="csr", dtype=np.float32) if len(blocks) > 1 else blocks[0]
    X.sort_indices()

    obs = pd.DataFrame(
        {
            "coarse": pd.Categorical.from_codes(fine_parent[fine_idx], categories=coarse_names),
            "fine": pd.Categorical.from_codes(fine_idx, categories=fine_names),
        },
        index=pd.Index([f"cell{i}" for i in range(n_cells)]),
    )
    if n_batches > 1:
        obs["batch"] = pd.Categorical.from_codes(batch_idx, categories=[f"B{j}" for j in range(n_batches)])
    obs["library_size"] = lib
    obs["state"] = state
    var = pd.DataFrame(
        {
            "base_mean": base,
            "coarse_de": (lfc_coarse != 0).any(axis=0),
            "fine_de": (lfc_fine != 0).any(axis=0),
            "batch_de": (lfc_batch != 0).any(axis=0) if n_batches > 1 else np.zeros(n_genes, dtype=bool),
        },
        index=pd.Index([f"gene{g}" for g in range(n_genes)]),
    )
    adata = ad.AnnData(X=X, obs=obs, var=var)
    relation = {fine_names[k]: coarse_names[fine_parent[k]] for k in range(n_fine)}
    finalise(adata, "simulate", "falcon_sc.datasets.simulate (hierarchical negative-binomial simulator)", relation)
    adata.uns["falcon_dataset"]["rare"] = [fine_names[k] for k in rare_fine]
    adata.uns["falcon_dataset"]["params"] = {
        "n_cells": n_cells,
        "n_genes": n_genes,
        "children": list(children),
        "imbalance": imbalance,
        "min_cells_per_class": min_cells_per_class,
        "size_sd": size_sd,
        "n_rare": n_rare,
        "rare_coarse": [int(fine_parent[k]) for k in rare_fine],
        "rare_fraction": rare_fraction,
        "rare_min_cells": rare_min_cells,
        "coarse_effect": coarse_effect,
        "coarse_de_frac": coarse_de_frac,
        "fine_effect": fine_effect,
        "fine_de_frac": fine_de_frac,
        "state_effect": state_effect,
        "state_de_frac": state_de_frac,
        "n_batches": n_batches,
        "batch_effect": batch_effect,
        "batch_de_frac": batch_de_frac,
        "batch_library_shift": batch_library_shift,
        "library_size": library_size,
        "library_sd": library_sd,
        "dispersion": dispersion,
        "dropout": dropout,
        "random_state": int(random_state),
    }
    return adata


#: Named simulator settings, see :func:`simulate_preset`.
PRESETS: dict[str, dict[str, Any]] = {
    "balanced": {"n_cells": 4000, "imbalance": 0.0},
    "imbalanced": {"n_cells": 6000, "imbalance": 0.8},
    "batches": {"n_cells": 5000, "imbalance": 0.5, "n_batches": 3, "batch_effect": 1.0},
    # rare subtypes: one child with 2% of its coarse class (>= 30 cells) in the 3 largest multi-child coarse classes,
    # the other children log-normal within their coarse class
    "rare": {"n_cells": 8000, "imbalance": 0.3, "size_sd": 0.5, "n_rare": 3, "rare_fraction": 0.02},
    # another hierarchy (5 coarse / 16 fine), wider log-normal sizes, 3 rare children, 2 batches, 10% dropout
    "rare_batches": {
        "n_cells": 10000,
        "children": (1, 3, 6, 2, 4),
        "imbalance": 0.3,
        "size_sd": 0.7,
        "n_rare": 3,
        "rare_fraction": 0.02,
        "n_batches": 2,
        "dropout": 0.1,
    },
}


def simulate_preset(name: str, *, random_state: int = 0, **overrides: Any) -> ad.AnnData:
    """Simulate one of the named settings in :data:`PRESETS`.

    Parameters
    ----------
    name
        ``"balanced"`` (all fine classes equally large), ``"imbalanced"`` (strongly unequal class sizes),
        ``"batches"`` (3 batches with a batch effect stronger than the fine programs), ``"rare"`` (8000 cells,
        log-normal sizes within the coarse classes and a rare child with 2% of its coarse class in 3 coarse classes)
        or ``"rare_batches"`` (10000 cells, children ``(1, 3, 6, 2, 4)``, wider log-normal sizes, 3 rare children,
        2 batches, 10% dropout).
    random_state
        Seed.
    **overrides
        Further :func:`simulate` arguments, replacing the preset's.

    Returns
    -------
    AnnData
        As :func:`simulate`, with ``uns["falcon_dataset"]["name"] = "simulate:<name>"``.

    Examples
    --------
    >>> import falcon_sc as fal
    >>> adata = fal.datasets.simulate_preset("batches", n_cells=400, n_genes=200, children=(2, 3))  # smaller
    >>> adata.uns["falcon_dataset"]["name"], adata.shape
    ('simulate:batches', (400, 200))
    >>> adata.obs["batch"].cat.categories.tolist()
    ['B0', 'B1', 'B2']
    """
    if name not in PRESETS:
        raise ValueError(f"`name` must be one of {sorted(PRESETS)}, got {name!r}.")
    adata = simulate(**{**PRESETS[name], **overrides}, random_state=random_state)
    adata.uns["falcon_dataset"]["name"] = f"simulate:{name}"
    return adata
