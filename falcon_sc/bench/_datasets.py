"""Benchmark datasets by name: the packaged data sets, the simulation presets, or any ``.h5ad`` file."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from ..datasets import true_relation as stored_relation


@dataclass
class DatasetSpec:
    """How to load a benchmark dataset and where its labels are.

    Attributes
    ----------
    name
        Name used in the result tables.
    loader
        Returns the AnnData (called once per benchmark, shared by all methods and seeds).
    coarse_key, fine_key
        Columns of ``obs`` with the coarse and the true fine labels.
    batch_key
        Column of ``obs`` with batches, passed to the methods, or ``None``.
    description
        One line for ``falcon-bench list``.
    """

    name: str
    loader: Callable[[], AnnData]
    coarse_key: str = "coarse"
    fine_key: str = "fine"
    batch_key: str | None = None
    description: str = ""

    def load(self) -> LoadedDataset:
        """Load the data and derive ``n_fine`` and the true fine -> coarse relation."""
        adata = self.loader()
        for role, key in (("coarse_key", self.coarse_key), ("fine_key", self.fine_key), ("batch_key", self.batch_key)):
            if key is not None and key not in adata.obs.columns:
                raise KeyError(f"dataset {self.name!r}: {role} {key!r} is not a column of obs")
        fine = adata.obs[self.fine_key].astype(str).to_numpy()
        coarse = adata.obs[self.coarse_key].astype(str).to_numpy()
        return LoadedDataset(
            spec=self,
            adata=adata,
            n_fine=int(len(np.unique(fine))),
            relation=true_relation(adata, fine, coarse),
        )


@dataclass
class LoadedDataset:
    """A loaded dataset with its number of true fine classes and true relation."""

    spec: DatasetSpec
    adata: AnnData
    n_fine: int
    relation: dict[str, str]

    @property
    def name(self) -> str:
        """Dataset name."""
        return self.spec.name

    @property
    def children(self) -> dict[str, int]:
        """Number of true fine classes of every coarse class (0 for a class that is no fine class's parent)."""
        coarse = sorted(self.adata.obs[self.spec.coarse_key].astype(str).unique())
        counts = pd.Series(list(self.relation.values()), dtype=object).value_counts()
        return {c: int(counts.get(c, 0)) for c in coarse}


def true_relation(adata: AnnData, fine: np.ndarray, coarse: np.ndarray) -> dict[str, str]:
    """Fine -> coarse relation: ``uns["falcon_dataset"]["relation"]`` if present, else the majority coarse label.

    Only fine classes present in ``fine`` are kept.
    """
    present = set(fine)
    try:
        stored = stored_relation(adata)
    except KeyError:
        stored = {}
    rel = {k: v for k, v in stored.items() if k in present}
    if rel and len(rel) == len(present):
        return rel
    table = pd.crosstab(pd.Series(fine, name="fine"), pd.Series(coarse, name="coarse"))
    return {
        str(f): str(table.columns[int(np.argmax(row))]) for f, row in zip(table.index, table.to_numpy(), strict=True)
    }


def _packaged(name: str) -> Callable[[], AnnData]:
    def load() -> AnnData:
        from falcon_sc import datasets

        return getattr(datasets, name)()

    return load


def _simulated(preset: str, random_state: int = 0, **overrides: Any) -> Callable[[], AnnData]:
    def load() -> AnnData:
        from falcon_sc import datasets

        return datasets.simulate_preset(preset, random_state=random_state, **overrides)

    return load


def simulated(
    preset: str,
    *,
    random_state: int = 0,
    name: str | None = None,
    description: str | None = None,
    **overrides: Any,
) -> DatasetSpec:
    """A benchmark dataset simulated with a preset of :func:`falcon_sc.datasets.simulate_preset`.

    New simulator seeds give new data sets of the same design, e.g. held-out data for tuning. On the command line,
    ``--dataset sim_rare@7`` is ``simulated("rare", random_state=7)``.

    Parameters
    ----------
    preset
        A key of :data:`falcon_sc.datasets.PRESETS`.
    random_state
        Simulator seed (the registered ``sim_<preset>`` datasets use 0).
    name
        Name in the result tables; default ``sim_<preset>``, ``sim_<preset>@<seed>`` for a seed other than 0, with
        ``+key=value,...`` appended when there are overrides.
    description
        One line for ``falcon-bench list``.
    **overrides
        Further :func:`falcon_sc.datasets.simulate` arguments, replacing the preset's.

    Returns
    -------
    DatasetSpec
        With ``batch_key="batch"`` when the simulation has more than one batch.
    """
    from falcon_sc.datasets import PRESETS

    if preset not in PRESETS:
        raise ValueError(f"unknown simulator preset {preset!r}: use one of {sorted(PRESETS)}")
    if isinstance(random_state, bool) or not isinstance(random_state, int | np.integer) or random_state < 0:
        raise ValueError(f"simulator seed must be a non-negative integer, got {random_state!r}")
    random_state = int(random_state)
    if name is None:
        name = f"sim_{preset}" + (f"@{random_state}" if random_state or overrides else "")
        if overrides:
            name += "+" + ",".join(f"{k}={v}" for k, v in sorted(overrides.items()))
    n_batches = {**PRESETS[preset], **overrides}.get("n_batches", 1)
    if description is None:
        description = f"simulated counts, preset {preset!r}" + (
            f", simulator seed {random_state}" if random_state else ""
        )
    return DatasetSpec(
        name,
        _simulated(preset, random_state, **overrides),
        batch_key="batch" if n_batches > 1 else None,
        description=description,
    )


_SIMULATED: dict[str, str] = {
    "sim_balanced": "balanced",
    "sim_imbalanced": "imbalanced",
    "sim_batches": "batches",
    "sim_rare": "rare",
    "sim_rare_batches": "rare_batches",
}
"""Registered simulated datasets -> their simulator preset (``<name>@<seed>`` draws a new seed)."""

DATASETS: dict[str, DatasetSpec] = {
    "pbmc68k": DatasetSpec("pbmc68k", _packaged("pbmc68k"), description="Zheng 2017 PBMC 68k (log-normalised X)"),
    "pbmc3k": DatasetSpec("pbmc3k", _packaged("pbmc3k"), description="10x PBMC 3k, Seurat tutorial labels"),
    "zeisel": DatasetSpec("zeisel", _packaged("zeisel"), description="Zeisel 2015 mouse cortex, level 1 / level 2"),
    "moncada": DatasetSpec(
        "moncada", _packaged("moncada"), description="Moncada 2020 pancreatic tumour (PDAC-A), 10 coarse / 20 fine"
    ),
    "kang": DatasetSpec(
        "kang",
        _packaged("kang"),
        description="Kang 2018 PBMC counts, 2 coarse / 5 fine; ctrl/IFN-beta stimulation in obs['group_id'], "
        "not used as batch_key",
    ),
    "sim_balanced": simulated("balanced", description="simulated counts, balanced"),
    "sim_imbalanced": simulated("imbalanced", description="simulated counts, rare fine classes"),
    "sim_batches": simulated("batches", description="simulated counts with batch effects"),
    "sim_rare": simulated(
        "rare", description="simulated counts, log-normal subtype sizes, 3 rare subtypes (2% of their class)"
    ),
    "sim_rare_batches": simulated(
        "rare_batches", description="simulated, 5 coarse / 16 fine, log-normal sizes, 3 rare subtypes, 2 batches"
    ),
}


DEFAULT_DATASETS: tuple[str, ...] = ("pbmc68k", "pbmc3k", "zeisel", "sim_balanced", "sim_imbalanced", "sim_batches")
"""The default suite (``--dataset default``): the three real datasets and the three simulation presets."""


def get_dataset(
    name: str | DatasetSpec,
    *,
    coarse_key: str | None = None,
    fine_key: str | None = None,
    batch_key: str | None = None,
) -> DatasetSpec:
    """Resolve a dataset preset name, or an ``.h5ad`` path, to a :class:`DatasetSpec`.

    Parameters
    ----------
    name
        A key of :data:`DATASETS`; a simulated one with ``@<seed>`` appended (``"sim_rare@7"``: the same preset
        simulated with seed 7, see :func:`simulated`); a path to an ``.h5ad`` file; or a :class:`DatasetSpec`
        (returned as is).
    coarse_key, fine_key, batch_key
        ``obs`` columns of an ``.h5ad`` file (defaults ``"coarse"``, ``"fine"``, none).
    """
    if isinstance(name, DatasetSpec):
        return name
    if name in DATASETS:
        return DATASETS[name]
    base, at, seed = name.rpartition("@")
    if at and not name.endswith(".h5ad"):
        if base not in _SIMULATED:
            raise ValueError(
                f"dataset {name!r}: '@<seed>' draws a new simulator seed and needs a simulated dataset, one of "
                f"{sorted(_SIMULATED)}"
            )
        if not seed.isdigit():
            raise ValueError(f"dataset {name!r}: the simulator seed after '@' must be a non-negative integer")
        spec = DATASETS[base]
        return simulated(
            _SIMULATED[base],
            random_state=int(seed),
            name=f"{base}@{int(seed)}",
            description=f"{spec.description}, simulator seed {int(seed)}",
        )
    path = Path(name).expanduser()
    if path.suffix == ".h5ad":
        if not path.exists():
            raise FileNotFoundError(f"dataset file {str(path)!r} does not exist")

        def load() -> AnnData:
            import anndata as ad

            return ad.read_h5ad(path)

        return DatasetSpec(
            name=path.stem,
            loader=load,
            coarse_key=coarse_key or "coarse",
            fine_key=fine_key or "fine",
            batch_key=batch_key,
            description=str(path),
        )
    raise ValueError(
        f"unknown dataset {name!r}: use one of {sorted(DATASETS)} (simulated ones with '@<seed>'), or a path to an "
        ".h5ad file"
    )
