"""The fitted preprocessing of the network inputs, replayable on new cells (genes aligned by name)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import anndata as ad
import numpy as np
import pandas as pd
from scanpy import logging as logg
from scipy import sparse

from .._checks import check_bool, check_choice, check_int
from ._checks import (
    batch_categories,
    check_codes,
    check_input_kind,
    expression_matrix,
    matrix_source,
    obs_batch_codes,
)
from ._features import CellFeatures, unit_rows
from ._input_kind import resolve_input_kind
from ._normalise import Prepared, prepare
from ._pca import ScaledPCA, WithinClassPCA, batch_stats_table, fit_within_class_pca, within_class_scores
from ._streamed import Moments, StreamedLognorm, fit_grouped_pca, streamed_scores

#: fewest genes of the fitted gene list that new cells must have (share)
MIN_SHARED_GENES = 0.5
#: allowed values of ``model_input``
MODEL_INPUTS = ("pca", "hvg")


def _check_prepared(prepared: Any, n_obs: int) -> Prepared:
    """``prepared`` as a :class:`Prepared` of ``n_obs`` cells with its fitted components; an error otherwise."""
    if not isinstance(prepared, Prepared):
        raise TypeError(f"prepared must be the Prepared output of falcon_sc.pp.prepare, got {type(prepared).__name__}.")
    if prepared.pca is None or prepared.embedding.shape[0] != n_obs:
        raise ValueError(
            f"prepared must come from falcon_sc.pp.prepare on this adata ({n_obs} cells), got one of "
            f"{prepared.embedding.shape[0]} cells{'' if prepared.pca is not None else ' without fitted components'}."
        )
    return prepared


@dataclass
class FeatureTransform:
    """What :func:`cell_features` fitted: replays the same inputs on new cells.

    Attributes
    ----------
    use_rep
        ``obsm`` key used as the input (then nothing else is fitted).
    layer, batch_key, model_input, n_comps_within
        Settings of the fit.
    input_kind
        The kind the fitted matrix was processed as.
    genes
        The selected (highly variable) genes, in the model's input order.
    batch_names
        Batches seen at fit time (code order).
    pca
        Global components of the scaled genes.
    within
        Per coarse class (code order), the components fitted inside it.

    Examples
    --------
    >>> import falcon_sc as fal
    >>> adata = fal.datasets.simulate(n_cells=300, n_genes=200, children=(1, 2, 3), random_state=0)
    >>> coarse = adata.obs["coarse"].cat.codes.to_numpy()
    >>> transform, feats = fal.pp.FeatureTransform.fit(adata, coarse, n_top_genes=100, n_comps=10, n_comps_within=5)
    >>> transform.genes.shape, transform.input_kind, feats.features.shape
    ((100,), 'counts', (300, 15))
    >>> new = fal.datasets.simulate(n_cells=300, n_genes=200, children=(1, 2, 3), random_state=1)
    >>> transform.transform(new, new.obs["coarse"].cat.codes.to_numpy()).shape  # same inputs for new cells
    (300, 15)
    """

    use_rep: str | None = None
    layer: str | None = None
    batch_key: str | None = None
    model_input: str = "pca"
    n_comps_within: int = 0
    input_kind: str | None = None
    genes: np.ndarray = field(default_factory=lambda: np.array([], dtype=str))
    batch_names: list[str] = field(default_factory=list)
    pca: ScaledPCA | None = None
    within: list[WithinClassPCA | None] = field(default_factory=list)

    @classmethod
    def fit(
        cls,
        adata: ad.AnnData,
        coarse: np.ndarray,
        *,
        n_coarse: int | None = None,
        layer: str | None = None,
        use_rep: str | None = None,
        input_kind: Literal["auto", "counts", "normalized", "lognorm"] = "auto",
        batch_key: str | None = None,
        n_top_genes: int = 2000,
        n_comps: int = 50,
        n_comps_within: int = 10,
        model_input: Literal["pca", "hvg"] = "pca",
        random_state: int = 0,
        values_checked: bool = False,
        prepared: Prepared | None = None,
    ) -> tuple[FeatureTransform, CellFeatures]:
        """Fit on ``adata`` (never modified) and return the transform with the inputs of the fitted cells.

        Parameters
        ----------
        adata
            Cells x genes.
        coarse
            Integer coarse class code per cell.
        n_coarse
            Number of coarse classes (default: the largest code + 1); one within-class PCA is fitted per class.
        layer, use_rep, input_kind, batch_key, n_top_genes, n_comps, n_comps_within, model_input, random_state
            As in :func:`falcon_sc.tl.refine`.
        values_checked
            ``True`` when the caller has already run :func:`~falcon_sc.pp.check_values` on the expression matrix
            (``adata.X`` or ``layer``): :func:`prepare` then skips its full scan for NaN, infinite and negative
            values, so the matrix is scanned once per call of ``refine``.
        prepared
            The output of :func:`prepare` on this ``adata`` with the same ``layer``, ``batch_key``,
            ``n_top_genes``, ``n_comps``, ``input_kind`` and ``random_state``, to reuse instead of preparing the
            matrix again (e.g. ``CellFeatures.prepared`` of an earlier fit that differed only in ``n_comps_within``
            or ``coarse``). The caller answers for the settings being the same.

        Returns
        -------
        The fitted transform and the :class:`CellFeatures` of the cells of ``adata``.
        """
        if not isinstance(adata, ad.AnnData):
            raise TypeError(f"adata must be an AnnData, got {type(adata).__name__}.")
        coarse = check_codes("coarse", coarse, adata.n_obs, "cell of adata")
        check_choice("model_input", model_input, MODEL_INPUTS)
        if use_rep is not None and use_rep not in adata.obsm:
            raise KeyError(f"use_rep={use_rep!r} is not a key of adata.obsm (keys: {list(adata.obsm)}).")
        check_input_kind(input_kind)
        check_int("n_comps_within", n_comps_within, 0)
        check_int("n_coarse", n_coarse, 1, allow_none=True)
        check_bool("values_checked", values_checked)
        if use_rep is not None and input_kind != "auto":
            raise ValueError(
                f"input_kind={input_kind!r} describes the expression matrix; it cannot be combined with use_rep= "
                "(leave input_kind='auto')."
            )
        if use_rep is not None:
            if prepared is not None:
                raise ValueError(
                    "prepared= holds a preprocessed expression matrix; it cannot be combined with use_rep=."
                )
            rep = np.asarray(adata.obsm[use_rep], dtype=np.float32)
            logg.info(f"    using adata.obsm[{use_rep!r}] ({rep.shape[1]} dimensions)")
            return cls(use_rep=use_rep), CellFeatures(features=rep, neighbour_space=rep)
        if prepared is None:
            prepared = prepare(
                adata,
                layer=layer,
                batch_key=batch_key,
                n_top_genes=n_top_genes,
                n_comps=n_comps,
                input_kind=input_kind,
                random_state=random_state,
                values_checked=values_checked,
                groups=coarse if n_comps_within > 0 else None,  # out-of-core input: one pass for both PCAs
                n_comps_within=n_comps_within,
            )
        else:
            prepared = _check_prepared(prepared, adata.n_obs)
        batch_names = (
            [str(b) for b in batch_categories(adata.obs[batch_key]).categories] if batch_key is not None else ["all"]
        )
        transform = cls(
            layer=layer,
            batch_key=batch_key,
            model_input=model_input,
            n_comps_within=n_comps_within,
            input_kind=prepared.input_kind,
            genes=np.asarray(prepared.genes, dtype=str),
            batch_names=batch_names,
            pca=prepared.pca,
        )
        return transform, transform._fit_within(prepared, coarse, n_coarse)

    def _fit_within(self, prepared: Prepared, coarse: np.ndarray, n_coarse: int | None) -> CellFeatures:
        """Fit the within-class components (``n_comps_within > 0``) and assemble the inputs of the fitted cells."""
        features = prepared.embedding if self.model_input == "pca" else prepared.lognorm
        neighbour_space = prepared.embedding
        if self.n_comps_within > 0:
            n_coarse = int(coarse.max()) + 1 if n_coarse is None else n_coarse
            within = self._within(prepared, coarse, n_coarse)
            neighbour_space = np.hstack([unit_rows(prepared.embedding), unit_rows(within)])
            if self.model_input == "pca":
                features = np.hstack([prepared.embedding, within])
        return CellFeatures(features=features, neighbour_space=neighbour_space, prepared=prepared)

    def _within(self, prepared: Prepared, coarse: np.ndarray, n_coarse: int) -> np.ndarray:
        """Fit the within-class components and return every fitted cell's scores (streamed for out-of-core input)."""
        lognorm, batches, k = prepared.lognorm, prepared.batches, self.n_comps_within
        if not isinstance(lognorm, StreamedLognorm):
            self.within = fit_within_class_pca(lognorm, coarse, batches, k, n_coarse)
            return within_class_scores(self.within, lognorm, coarse, batches, k)
        done = lognorm.within  # fitted and scored by prepare, in the same passes as the global components
        if done is not None and done.n_comps == k and np.array_equal(done.groups, coarse):
            self.within = done.fits + [None] * (n_coarse - len(done.fits))
            return done.scores
        moments = lognorm.moments
        if moments is None or not np.array_equal(moments.groups, coarse):  # other classes than prepare saw
            moments = Moments.gather(lognorm, coarse, batches)
        self.within = fit_grouped_pca(moments, k, n_coarse)
        return streamed_scores(
            lognorm,
            k,
            lambda start, stop, rows: within_class_scores(
                self.within, rows, coarse[start:stop], batches[start:stop], k
            ),
        )

    def expression(self, adata: ad.AnnData, *, input_kind: str = "auto", layer: str | None = None) -> Any:
        """Log-normalised values of the fitted genes for new cells (missing genes are 0, with a warning).

        The input kind is detected on the new cells (or given); counts and normalised values are scaled to 1e4 per
        cell over all their genes and ``log1p``-transformed, as at fit time. Returns a float32 CSR matrix for sparse
        input, a float32 array otherwise.
        """
        layer = self.layer if layer is None else layer
        check_input_kind(input_kind)
        X = expression_matrix(adata, layer)
        present = self._gene_columns(adata)
        source = matrix_source(layer)
        kind, _, why = resolve_input_kind(X, input_kind, source=source)
        cols = np.where(present >= 0, present, 0)
        keep = (present >= 0).astype(np.float32)
        out: Any = X[:, cols]  # only the model's genes are copied (the totals below read every gene in place)
        out = sparse.csr_matrix(out, dtype=np.float32) if sparse.issparse(out) else np.asarray(out, dtype=np.float32)
        if kind in ("counts", "normalized"):
            logg.info(f"    {source} of the new cells holds {kind} ({why}): normalize_total(1e4) + log1p")
            totals = np.asarray(X.sum(axis=1), dtype=np.float32).ravel()
            scale = (1e4 / np.where(totals > 0, totals, 1.0)).astype(np.float32)  # empty cells stay 0, as scanpy
            if sparse.issparse(out):
                out = sparse.csr_matrix(out.multiply(scale[:, None]))
                out.data = np.log1p(out.data)
            else:
                out = np.log1p(out * scale[:, None])
        if sparse.issparse(out):
            out = sparse.csr_matrix(out.multiply(keep[None, :]))
        else:
            out = out * keep[None, :]
        return out.astype(np.float32)

    def _gene_columns(self, adata: ad.AnnData) -> np.ndarray:
        """Column of each fitted gene in ``adata`` (-1 when missing); an error when fewer than half are present."""
        names = pd.Index(adata.var_names.astype(str))
        present = names.get_indexer(self.genes)
        n_shared = int((present >= 0).sum())
        if n_shared < MIN_SHARED_GENES * len(self.genes):
            raise ValueError(
                f"only {n_shared} of the model's {len(self.genes)} genes are in adata.var_names; the new cells must "
                "be measured on (mostly) the same genes, named the same way (e.g. both gene symbols)."
            )
        if n_shared < len(self.genes):
            logg.warning(
                f"{len(self.genes) - n_shared} of the model's {len(self.genes)} genes are missing from the new "
                "cells; they are filled with 0"
            )
        return present

    def batch_codes(self, adata: ad.AnnData) -> np.ndarray:
        """Fitted batch code per new cell; unseen batches get -1, -2, ... (one per new batch name)."""
        if self.batch_key is None:
            return np.zeros(adata.n_obs, dtype=np.int64)
        if self.batch_key not in adata.obs:
            raise KeyError(
                f"the model was fitted with batch_key={self.batch_key!r}; the new cells need that column in obs."
            )
        obs_batch_codes(adata, self.batch_key)  # same checks as at fit time (missing values)
        values = adata.obs[self.batch_key].astype(str).to_numpy()
        lookup = {b: i for i, b in enumerate(self.batch_names)}
        unseen = sorted(set(values) - set(lookup))
        if unseen:
            logg.warning(
                f"batches not seen at fit time are standardised within themselves: {', '.join(unseen[:10])}"
                + (" ..." if len(unseen) > 10 else "")
            )
        lookup.update({b: -1 - j for j, b in enumerate(unseen)})
        return np.array([lookup[v] for v in values], dtype=np.int64)

    def transform(
        self, adata: ad.AnnData, coarse: np.ndarray, *, input_kind: str = "auto", layer: str | None = None
    ) -> Any:
        """Network inputs of new cells, given each cell's coarse class code (as fitted).

        A float32 array, or a float32 CSR matrix for ``model_input="hvg"`` on sparse input.
        """
        if self.use_rep is not None:
            if self.use_rep not in adata.obsm:
                raise KeyError(f"the model was fitted on obsm[{self.use_rep!r}]; the new cells need it too.")
            return np.asarray(adata.obsm[self.use_rep], dtype=np.float32)
        if self.pca is None:
            raise RuntimeError("this FeatureTransform is not fitted: build it with FeatureTransform.fit(adata, ...).")
        X = self.expression(adata, input_kind=input_kind, layer=layer)
        batches = self.batch_codes(adata)
        local, mean, scale = batch_stats_table(self.pca, X, batches)
        embedding = self.pca.transform(X, local, mean, scale)
        if self.model_input == "hvg":
            return X
        if self.n_comps_within == 0:
            return embedding
        return np.hstack([embedding, within_class_scores(self.within, X, coarse, batches, self.n_comps_within)])

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Plain settings (JSON) and arrays (``.npz``) that :meth:`from_state` rebuilds the transform from."""
        settings = {
            "use_rep": self.use_rep,
            "layer": self.layer,
            "batch_key": self.batch_key,
            "model_input": self.model_input,
            "n_comps_within": self.n_comps_within,
            "input_kind": self.input_kind,
            "batch_names": list(self.batch_names),
            "within": [w is not None for w in self.within],
        }
        arrays: dict[str, np.ndarray] = {"genes": np.asarray(self.genes, dtype=str)}
        if self.pca is not None:
            arrays.update(pca_mean=self.pca.mean, pca_scale=self.pca.scale, pca_loadings=self.pca.loadings)
        for g, w in enumerate(self.within):
            if w is not None:
                arrays.update(
                    {
                        f"within{g}_mean": w.pca.mean,
                        f"within{g}_scale": w.pca.scale,
                        f"within{g}_loadings": w.pca.loadings,
                        f"within{g}_batches": w.batches,
                    }
                )
        return settings, arrays

    @classmethod
    def from_state(cls, settings: dict[str, Any], arrays: dict[str, np.ndarray]) -> FeatureTransform:
        """Inverse of :meth:`state`."""
        pca = None
        if "pca_loadings" in arrays:
            pca = ScaledPCA(arrays["pca_mean"], arrays["pca_scale"], arrays["pca_loadings"])
        within = [
            WithinClassPCA(
                ScaledPCA(arrays[f"within{g}_mean"], arrays[f"within{g}_scale"], arrays[f"within{g}_loadings"]),
                arrays[f"within{g}_batches"],
            )
            if has
            else None
            for g, has in enumerate(settings["within"])
        ]
        keys = ("use_rep", "layer", "batch_key", "model_input", "n_comps_within", "input_kind", "batch_names")
        return cls(genes=arrays["genes"], pca=pca, within=within, **{k: settings[k] for k in keys})


def cell_features(
    adata: ad.AnnData,
    coarse: np.ndarray,
    *,
    layer: str | None = None,
    use_rep: str | None = None,
    input_kind: Literal["auto", "counts", "normalized", "lognorm"] = "auto",
    batch_key: str | None = None,
    n_top_genes: int = 2000,
    n_comps: int = 50,
    n_comps_within: int = 10,
    model_input: Literal["pca", "hvg"] = "pca",
    random_state: int = 0,
) -> CellFeatures:
    """Network inputs and neighbour space of every cell; ``adata`` is not modified.

    With ``use_rep`` both are ``adata.obsm[use_rep]``. Otherwise :func:`prepare` gives global principal components
    of the scaled HVGs; with ``n_comps_within > 0`` components computed inside each coarse class are appended to the
    network input (``model_input="pca"``) and the neighbour space is the concatenation of the unit-length global and
    within-class components (cosine = mean of the two cosines). :meth:`FeatureTransform.fit` also returns the
    fitted transform, to compute the same inputs for new cells.

    Parameters
    ----------
    adata
        Cells x genes.
    coarse
        Integer coarse class per cell.
    layer, use_rep, input_kind, batch_key, n_top_genes, n_comps, n_comps_within, model_input, random_state
        As in :func:`falcon_sc.tl.refine`.

    Returns
    -------
    :class:`CellFeatures`: network inputs, neighbour space and the :class:`Prepared` preprocessing.

    Examples
    --------
    >>> import falcon_sc as fal
    >>> adata = fal.datasets.simulate(n_cells=300, n_genes=200, children=(1, 2, 3), random_state=0)
    >>> coarse = adata.obs["coarse"].cat.codes.to_numpy()
    >>> feats = fal.pp.cell_features(adata, coarse, n_top_genes=100, n_comps=10, n_comps_within=5)
    >>> feats.features.shape  # 10 global + 5 within-class components
    (300, 15)
    """
    return FeatureTransform.fit(
        adata,
        coarse,
        layer=layer,
        use_rep=use_rep,
        input_kind=input_kind,
        batch_key=batch_key,
        n_top_genes=n_top_genes,
        n_comps=n_comps,
        n_comps_within=n_comps_within,
        model_input=model_input,
        random_state=random_state,
    )[1]
