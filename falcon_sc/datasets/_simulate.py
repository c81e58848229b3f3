"""Hierarchical negative-binomial simulator of counts with coarse and fine cell types.

:func:`simulate` checks its arguments once (:class:`SimSettings`), then draws in a fixed order from four independent
random streams: the class hierarchy and sizes (:func:`class_hierarchy`), the gene programs (:func:`gene_programs`),
the cells (:func:`draw_cells`) and the counts, chunk by chunk (:func:`draw_counts`); :func:`to_anndata` assembles the
result. The order of the draws is part of the output: a fixed seed gives the same data in every version.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import anndata as ad
import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import sparse

from .._checks import check_choice, check_int, check_number
from ._utils import finalise

_CHUNK = 4096  # cells generated per dense block (fixed: the output must not depend on it)


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


@dataclass(frozen=True)
class SimSettings:
    """The checked arguments of :func:`simulate` (see there); ``rare_coarse`` is ``None`` unless given."""

    n_cells: int
    n_genes: int
    children: tuple[int, ...]
    imbalance: float
    min_cells_per_class: int
    size_sd: float
    n_rare: int
    rare_coarse: tuple[int, ...] | None
    rare_fraction: float
    rare_min_cells: int
    coarse_effect: float
    coarse_de_frac: float
    fine_effect: float
    fine_de_frac: float
    state_effect: float
    state_de_frac: float
    n_batches: int
    batch_effect: float
    batch_de_frac: float
    batch_library_shift: float
    library_size: float
    library_sd: float
    dispersion: float
    dropout: float
    random_state: int

    @property
    def n_fine(self) -> int:
        """Total number of fine classes."""
        return sum(self.children)


#: arguments of :func:`simulate` that are numbers: (low, high, open_low) of :func:`~falcon_sc._checks.check_number`
_NUMBERS: dict[str, tuple[float | None, float | None, bool]] = {
    "imbalance": (0, None, False),
    "size_sd": (0, 5, False),
    "rare_fraction": (0, 0.5, True),
    "coarse_effect": (0, None, False),
    "fine_effect": (0, None, False),
    "batch_effect": (0, None, False),
    "state_effect": (0, None, False),
    "state_de_frac": (0, 1, True),
    "batch_library_shift": (0, None, False),
    "coarse_de_frac": (0, 1, True),
    "fine_de_frac": (0, 1, True),
    "batch_de_frac": (0, 1, True),
    "library_size": (0, None, True),
    "library_sd": (0, None, False),
    "dispersion": (0, None, True),
    "dropout": (0, None, False),
}

#: arguments of :func:`simulate` that are ints, with their minimum
_INTS: dict[str, int] = {
    "n_cells": 1,
    "n_genes": 10,
    "min_cells_per_class": 1,
    "rare_min_cells": 1,
    "n_rare": 0,
    "n_batches": 1,
    "random_state": 0,
}


def _int_sequence(name: str, value: Any, minimum: int) -> tuple[int, ...]:
    """``value`` as a tuple of ints >= ``minimum``: ``TypeError`` unless a (non-string) sequence of ints."""
    if isinstance(value, str | bytes) or not isinstance(value, Sequence | np.ndarray):
        raise TypeError(f"{name}={value!r} must be a sequence of ints, got {type(value).__name__}.")
    for i, item in enumerate(value):
        check_int(f"{name}[{i}]", item, minimum)
    return tuple(int(item) for item in value)


def _check_rare(children: tuple[int, ...], n_rare: int, rare_coarse: Any) -> tuple[int, tuple[int, ...] | None]:
    """The number of rare children and the coarse classes given for them (``None``: the largest, chosen later)."""
    multi = [c for c, k in enumerate(children) if k >= 2]
    if rare_coarse is None:
        if n_rare > len(multi):
            raise ValueError(
                f"n_rare={n_rare} is too large: only {len(multi)} coarse classes have two or more children to hold "
                "a rare child."
            )
        return n_rare, None
    chosen = _int_sequence("rare_coarse", rare_coarse, 0)
    bad = [c for c in chosen if c >= len(children) or children[c] < 2]
    if bad:
        raise ValueError(
            f"rare_coarse={list(chosen)} must name coarse classes with two or more children (indices {multi}); "
            f"{bad} do not."
        )
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"rare_coarse={list(chosen)} has repeated coarse classes.")
    if n_rare not in (0, len(chosen)):
        raise ValueError(f"n_rare={n_rare} disagrees with rare_coarse={list(chosen)} ({len(chosen)} classes).")
    return len(chosen), chosen


def check_settings(**arguments: Any) -> SimSettings:
    """Check the arguments of :func:`simulate` (``TypeError`` for a wrong type, ``ValueError`` out of range).

    Every argument is checked before any random draw; the errors name the argument and the value found.
    """
    for name, minimum in _INTS.items():
        check_int(name, arguments[name], minimum)
    for name, (low, high, open_low) in _NUMBERS.items():
        check_number(name, arguments[name], low=low, high=high, open_low=open_low)
    if float(arguments["dropout"]) >= 1:
        raise ValueError(f"dropout={arguments['dropout']!r} must be a finite number in [0, 1).")
    children = _int_sequence("children", arguments["children"], 1)
    if not children:
        raise ValueError("children=() must name at least one coarse class (its number of fine classes).")
    n_rare, rare_coarse = _check_rare(children, int(arguments["n_rare"]), arguments["rare_coarse"])
    a = {name: float(arguments[name]) for name in _NUMBERS}
    settings = SimSettings(
        n_cells=int(arguments["n_cells"]),
        n_genes=int(arguments["n_genes"]),
        children=children,
        imbalance=a["imbalance"],
        min_cells_per_class=int(arguments["min_cells_per_class"]),
        size_sd=a["size_sd"],
        n_rare=n_rare,
        rare_coarse=rare_coarse,
        rare_fraction=a["rare_fraction"],
        rare_min_cells=int(arguments["rare_min_cells"]),
        coarse_effect=a["coarse_effect"],
        coarse_de_frac=a["coarse_de_frac"],
        fine_effect=a["fine_effect"],
        fine_de_frac=a["fine_de_frac"],
        state_effect=a["state_effect"],
        state_de_frac=a["state_de_frac"],
        n_batches=int(arguments["n_batches"]),
        batch_effect=a["batch_effect"],
        batch_de_frac=a["batch_de_frac"],
        batch_library_shift=a["batch_library_shift"],
        library_size=a["library_size"],
        library_sd=a["library_sd"],
        dispersion=a["dispersion"],
        dropout=a["dropout"],
        random_state=int(arguments["random_state"]),
    )
    needed = (settings.n_fine - n_rare) * settings.min_cells_per_class + n_rare * settings.rare_min_cells
    if settings.n_cells < needed:
        raise ValueError(
            f"n_cells={settings.n_cells} is too small: {settings.n_fine} fine classes need at least "
            f"{needed} cells (min_cells_per_class={settings.min_cells_per_class}"
            + (f", {n_rare} rare with rare_min_cells={settings.rare_min_cells})." if n_rare else ").")
        )
    return settings


@dataclass(frozen=True)
class Hierarchy:
    """Coarse and fine classes of a simulation: parent of each fine class, names, sizes, the rare fine classes."""

    fine_parent: npt.NDArray[np.integer]
    coarse_names: list[str]
    fine_names: list[str]
    sizes: np.ndarray
    rare_fine: list[int]


def class_hierarchy(settings: SimSettings, rng: np.random.Generator, rng_sizes: np.random.Generator) -> Hierarchy:
    """The fine classes of every coarse class and their sizes (draws from ``rng``, and ``rng_sizes`` when used)."""
    s = settings
    n_coarse = len(s.children)
    fine_parent = np.repeat(np.arange(n_coarse), s.children)
    coarse_names = [f"C{c}" for c in range(n_coarse)]
    fine_names = [f"C{c}.f{j}" for c in range(n_coarse) for j in range(s.children[c])]
    z_coarse = rng.standard_normal(n_coarse)
    z_fine = rng.standard_normal(s.n_fine)
    weights = np.exp(s.imbalance * (z_coarse[fine_parent] + z_fine))
    rare_fine: list[int] = []
    if s.size_sd > 0 or s.n_rare > 0:
        weights, sizes, rare_fine = _class_sizes(
            s.n_cells,
            weights,
            fine_parent,
            rng_sizes,
            size_sd=s.size_sd,
            n_rare=s.n_rare,
            rare_coarse=None if s.rare_coarse is None else list(s.rare_coarse),
            rare_fraction=s.rare_fraction,
            minimum=s.min_cells_per_class,
            rare_minimum=s.rare_min_cells,
        )
    else:
        sizes = _allocate(s.n_cells, weights, s.min_cells_per_class)
    return Hierarchy(fine_parent, coarse_names, fine_names, sizes, rare_fine)


@dataclass(frozen=True)
class Programs:
    """Gene programs of a simulation (log scale): base expression, coarse / fine / batch / state effects."""

    base: np.ndarray
    lfc_coarse: np.ndarray
    lfc_fine: np.ndarray
    lfc_batch: np.ndarray
    lib_shift: np.ndarray
    lfc_state: np.ndarray
    phi: np.ndarray
    profiles: np.ndarray  # log expression per (fine class, batch): (n_fine * n_batches, n_genes)


def gene_programs(settings: SimSettings, rng: np.random.Generator, fine_parent: np.ndarray) -> Programs:
    """Draw the gene programs, one row per fine class (coarse + fine), batch and coarse class (state)."""
    s = settings
    n_genes, n_fine, n_coarse = s.n_genes, s.n_fine, len(s.children)
    base = rng.gamma(0.6, 1.0 / 0.3, n_genes) + 1e-3
    log_base = np.log(base / base.sum())
    lfc_coarse = _effects(rng, n_genes, s.coarse_de_frac, s.coarse_effect, n_coarse)
    # fine markers are drawn from the more expressed half of the genes, so that their strength varies less
    expressed = np.flatnonzero(base >= np.median(base))
    lfc_fine = _effects(rng, n_genes, s.fine_de_frac, s.fine_effect, n_fine, expressed)
    lfc_fine[np.asarray(s.children)[fine_parent] == 1] = 0.0  # a single child is its coarse class
    class_log = log_base + lfc_coarse[fine_parent] + lfc_fine
    phi = s.dispersion * rng.lognormal(0.0, 0.5, n_genes)
    if s.n_batches > 1:
        lfc_batch = _effects(rng, n_genes, s.batch_de_frac, s.batch_effect, s.n_batches)
        lib_shift = rng.normal(0.0, s.batch_library_shift, s.n_batches)
    else:
        lfc_batch = np.zeros((1, n_genes))
        lib_shift = np.zeros(1)
    # continuous within-type state (e.g. activation): one gene program per coarse class, cell score in [0, 1]
    lfc_state = _effects(rng, n_genes, s.state_de_frac, s.state_effect, n_coarse, expressed)
    profiles = (class_log[:, None, :] + lfc_batch[None, :, :]).reshape(n_fine * s.n_batches, n_genes)
    return Programs(base, lfc_coarse, lfc_fine, lfc_batch, lib_shift, lfc_state, phi, profiles)


@dataclass(frozen=True)
class Cells:
    """Per cell: fine class index, batch index, library size and state score."""

    fine_idx: npt.NDArray[np.integer]
    batch_idx: npt.NDArray[np.integer]
    library: np.ndarray
    state: np.ndarray


def draw_cells(settings: SimSettings, rng: np.random.Generator, sizes: np.ndarray, lib_shift: np.ndarray) -> Cells:
    """Shuffle the cells of every class and draw their batches, library sizes and state scores."""
    s = settings
    n_cells = s.n_cells
    fine_idx = rng.permutation(np.repeat(np.arange(s.n_fine), sizes))
    batch_idx = rng.integers(0, s.n_batches, n_cells) if s.n_batches > 1 else np.zeros(n_cells, dtype=np.int64)
    lib = np.exp(np.log(s.library_size) + lib_shift[batch_idx] + s.library_sd * rng.standard_normal(n_cells))
    state = rng.random(n_cells) if s.state_effect > 0 else np.zeros(n_cells)
    return Cells(fine_idx, batch_idx, lib, state)


def draw_counts(
    settings: SimSettings, programs: Programs, cells: Cells, fine_parent: np.ndarray, seed: np.random.SeedSequence
) -> sparse.csr_matrix:
    """Negative-binomial counts (optionally zero-inflated), chunk by chunk directly into CSR float32.

    Every chunk of :data:`_CHUNK` cells has a random stream of its own, spawned from ``seed``.
    """
    blocks = list(count_blocks(settings, programs, cells, fine_parent, seed))
    X = sparse.vstack(blocks, format="csr", dtype=np.float32) if len(blocks) > 1 else blocks[0]
    X.sort_indices()
    return X


def count_blocks(
    settings: SimSettings, programs: Programs, cells: Cells, fine_parent: np.ndarray, seed: np.random.SeedSequence
) -> Iterator[sparse.csr_matrix]:
    """The counts of :func:`draw_counts`, one CSR float32 block of :data:`_CHUNK` cells at a time."""
    s = settings
    n_cells, n_batches = s.n_cells, s.n_batches
    prof = programs.profiles
    expr = np.exp(prof - prof.max(axis=1, keepdims=True))  # unnormalised profiles
    state_genes = np.flatnonzero((programs.lfc_state != 0).any(axis=0))
    lfc_state_sub = programs.lfc_state[:, state_genes]
    phi = programs.phi
    shape = 1.0 / phi
    fine_idx, batch_idx, lib, state = cells.fine_idx, cells.batch_idx, cells.library, cells.state
    n_chunks = -(-n_cells // _CHUNK)
    chunk_seeds = seed.spawn(n_chunks)
    for b in range(n_chunks):
        sl = slice(b * _CHUNK, min((b + 1) * _CHUNK, n_cells))
        r = np.random.default_rng(chunk_seeds[b])
        mu = expr[fine_idx[sl] * n_batches + batch_idx[sl]]
        if s.state_effect > 0:
            mu[:, state_genes] *= np.exp(state[sl, None] * lfc_state_sub[fine_parent[fine_idx[sl]]])
        mu *= (lib[sl] / mu.sum(axis=1))[:, None]
        gam = r.standard_gamma(shape, size=mu.shape)
        gam *= phi
        gam *= mu
        del mu
        counts = r.poisson(gam)
        del gam
        if s.dropout > 0:
            counts[r.random(counts.shape) < s.dropout] = 0
        block = _dense_to_csr(counts)
        del counts
        block.sort_indices()
        yield block


def to_anndata(
    settings: SimSettings, hierarchy: Hierarchy, programs: Programs, cells: Cells, X: sparse.csr_matrix | None
) -> ad.AnnData:
    """The AnnData of :func:`simulate`: counts, ``obs``/``var`` annotations and ``uns["falcon_dataset"]``."""
    s, h = settings, hierarchy
    obs = pd.DataFrame(
        {
            "coarse": pd.Categorical.from_codes(h.fine_parent[cells.fine_idx], categories=pd.Index(h.coarse_names)),
            "fine": pd.Categorical.from_codes(cells.fine_idx, categories=pd.Index(h.fine_names)),
        },
        index=pd.Index([f"cell{i}" for i in range(s.n_cells)]),
    )
    if s.n_batches > 1:
        batches = pd.Index([f"B{j}" for j in range(s.n_batches)])
        obs["batch"] = pd.Categorical.from_codes(cells.batch_idx, categories=batches)
    obs["library_size"] = cells.library
    obs["state"] = cells.state
    batch_de = (programs.lfc_batch != 0).any(axis=0) if s.n_batches > 1 else np.zeros(s.n_genes, dtype=bool)
    var = pd.DataFrame(
        {
            "base_mean": programs.base,
            "coarse_de": (programs.lfc_coarse != 0).any(axis=0),
            "fine_de": (programs.lfc_fine != 0).any(axis=0),
            "batch_de": batch_de,
        },
        index=pd.Index([f"gene{g}" for g in range(s.n_genes)]),
    )
    adata = ad.AnnData(X=X, obs=obs, var=var)
    relation = {h.fine_names[k]: h.coarse_names[h.fine_parent[k]] for k in range(s.n_fine)}
    finalise(adata, "simulate", "falcon_sc.datasets.simulate (hierarchical negative-binomial simulator)", relation)
    adata.uns["falcon_dataset"]["rare"] = [h.fine_names[k] for k in h.rare_fine]
    adata.uns["falcon_dataset"]["params"] = _uns_params(settings, [int(h.fine_parent[k]) for k in h.rare_fine])
    return adata


def _uns_params(settings: SimSettings, rare_coarse: list[int]) -> dict[str, Any]:
    """``uns["falcon_dataset"]["params"]``: the arguments in signature order, ``rare_coarse`` as simulated."""
    params = asdict(settings)
    params.update(children=list(settings.children), rare_coarse=rare_coarse)
    return params


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
    settings = check_settings(
        n_cells=n_cells,
        n_genes=n_genes,
        children=children,
        imbalance=imbalance,
        min_cells_per_class=min_cells_per_class,
        size_sd=size_sd,
        n_rare=n_rare,
        rare_coarse=rare_coarse,
        rare_fraction=rare_fraction,
        rare_min_cells=rare_min_cells,
        coarse_effect=coarse_effect,
        coarse_de_frac=coarse_de_frac,
        fine_effect=fine_effect,
        fine_de_frac=fine_de_frac,
        state_effect=state_effect,
        state_de_frac=state_de_frac,
        n_batches=n_batches,
        batch_effect=batch_effect,
        batch_de_frac=batch_de_frac,
        batch_library_shift=batch_library_shift,
        library_size=library_size,
        library_sd=library_sd,
        dispersion=dispersion,
        dropout=dropout,
        random_state=random_state,
    )
    hierarchy, programs, cells, ss_counts = _draw(settings)
    X = draw_counts(settings, programs, cells, hierarchy.fine_parent, ss_counts)
    return to_anndata(settings, hierarchy, programs, cells, X)


def _draw(settings: SimSettings) -> tuple[Hierarchy, Programs, Cells, np.random.SeedSequence]:
    """Everything of a simulation but the counts, and the seed of the counts' stream."""
    seq = np.random.SeedSequence(settings.random_state)
    # the first three streams are those of earlier versions: the output for the old arguments is unchanged
    ss_params, ss_cells, ss_counts, ss_sizes = seq.spawn(4)
    rng = np.random.default_rng(ss_params)
    hierarchy = class_hierarchy(settings, rng, np.random.default_rng(ss_sizes))
    programs = gene_programs(settings, rng, hierarchy.fine_parent)
    cells = draw_cells(settings, np.random.default_rng(ss_cells), hierarchy.sizes, programs.lib_shift)
    return hierarchy, programs, cells, ss_counts


def simulate_h5ad(path: str | os.PathLike, **kwargs: Any) -> ad.AnnData:
    """Write the simulation :func:`simulate` would return to an ``.h5ad`` file, count block by count block.

    The counts are never held whole (memory: one block of 4,096 cells, plus ``obs``), so a million cells fit in a
    few hundred MB; the file holds the same data as ``simulate(**kwargs).write_h5ad(path)``. Returns the file opened
    with ``backed="r"`` (close it with ``adata.file.close()``).

    Parameters
    ----------
    path
        The ``.h5ad`` file to write (overwritten).
    **kwargs
        The arguments of :func:`simulate`.

    Examples
    --------
    >>> import os
    >>> import tempfile
    >>> import falcon_sc as fal
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = os.path.join(tmp, "sim.h5ad")
    ...     backed = fal.datasets.simulate_h5ad(path, n_cells=300, n_genes=200, children=(1, 2, 3))
    ...     print(backed.isbacked, backed.shape)
    ...     backed.file.close()
    True (300, 200)
    """
    import h5py

    try:
        from anndata.io import sparse_dataset, write_elem
    except ImportError:  # anndata < 0.11
        from anndata.experimental import sparse_dataset, write_elem

    arguments = inspect.signature(simulate).bind(**kwargs)  # a TypeError names an unknown argument
    arguments.apply_defaults()
    settings = check_settings(**arguments.arguments)
    hierarchy, programs, cells, ss_counts = _draw(settings)
    to_anndata(settings, hierarchy, programs, cells, None).write_h5ad(path)
    with h5py.File(path, "r+") as f:
        for i, block in enumerate(count_blocks(settings, programs, cells, hierarchy.fine_parent, ss_counts)):
            if i == 0:
                write_elem(f, "X", block)
            else:
                sparse_dataset(f["X"]).append(block)
    return ad.read_h5ad(path, backed="r")


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
    check_choice("name", name, tuple(PRESETS))
    adata = simulate(**{**PRESETS[name], **overrides}, random_state=random_state)
    adata.uns["falcon_dataset"]["name"] = f"simulate:{name}"
    return adata
