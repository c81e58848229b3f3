"""``FalconModel``: a fitted FALCON model users keep, apply to new cells, save and share."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import anndata as ad
import numpy as np
import pandas as pd
import torch
from scanpy import logging as logg

from .._names import renamed
from .._validate import check_refine_args, resolve_device
from ..core.distributed import train_falcon_ddp
from ..core.graph_init import graph_clusters
from ..core.labels import fine_class_names, restricted_probs
from ..core.n_fine import estimate_children
from ..core.neighbors import neighbour_vote, within_class_neighbors
from ..core.prior import children_prior as size_prior
from ..core.prior import kmeans_within_relation
from ..core.relation import solve_relation
from ..core.schemes import fill_missing, joint_groups, joint_relation, scheme_relations
from ..core.selection import choose_per_class
from ..core.trainer import FalconConfig, FalconResult, train_falcon
from ..core.training import TrainingDiverged
from ..core.training import predict as predict_probs
from ..pp import FeatureTransform
from ._schemes import CoarseSchemes, as_keys, coarse_schemes
from .mlp import MLPClassifier

Prior = Literal["auto", "uniform", "size", "variance"] | Mapping[str, int]

#: version of the saved-model layout; :meth:`FalconModel.load` refuses any other
FORMAT_VERSION = 1
_FILES = {"settings": "model.json", "weights": "weights.pt", "arrays": "preprocessing.npz"}


@dataclass
class _Fitted:
    """Everything :meth:`FalconModel.fit` learns (what is saved)."""

    transform: FeatureTransform
    coarse_names: list[str]
    fine_names: list[str]  # per network output
    relation: np.ndarray  # fine x coarse, 0/1
    use_warm: np.ndarray  # per coarse class: predictions of the warm-fitted network
    network: MLPClassifier
    warm_network: MLPClassifier | None
    hidden: list[int]
    params: dict[str, Any]
    history: list[dict]
    schemes: dict[str, Any] | None = None  # several coarse schemes: keys, names, relations (``coarse_*`` are joint)


def _progress(show_progress: bool | None) -> bool:
    """Default on: the bar appears after 2 s, so only runs that take a while show it."""
    return True if show_progress is None else bool(show_progress)


class FalconModel:
    """FALCON fine classes inside coarse labels, as a model: fit once, label new cells, save and load.

    The setup arguments say which data the model reads (as in :func:`falcon_sc.tl.refine`, which is a thin wrapper
    over this class). :meth:`fit` keeps the fitted preprocessing (genes, input kind, per-batch scaling, global and
    within-class principal components), the network, the warm-start network and the learned relation, so that
    :meth:`predict` replays the exact transform on new cells.

    Parameters
    ----------
    adata
        Cells x genes to fit on (not modified by the model).
    coarse_key
        Column of ``adata.obs`` with the coarse labels.
    layer, use_rep, input_kind, batch_key, n_top_genes, n_comps, n_comps_within, model_input
        As in :func:`falcon_sc.tl.refine`.

    Examples
    --------
    >>> import falcon_sc as fal
    >>> adata = fal.datasets.pbmc68k()
    >>> model = fal.FalconModel(adata, "coarse").fit(n_fine=10)  # doctest: +SKIP
    >>> model.save("pbmc_model")  # doctest: +SKIP
    >>> fal.FalconModel.load("pbmc_model").predict(new_cells)  # doctest: +SKIP
    """

    def __init__(
        self,
        adata: ad.AnnData,
        coarse_key: str,
        *,
        layer: str | None = None,
        use_rep: str | None = None,
        input_kind: Literal["auto", "counts", "normalized", "lognorm"] = "auto",
        batch_key: str | None = None,
        n_top_genes: int = 2000,
        n_comps: int = 50,
        n_comps_within: int = 10,
        model_input: Literal["pca", "hvg"] = "pca",
    ) -> None:
        if not isinstance(adata, ad.AnnData):
            raise TypeError(f"adata must be an AnnData, got {type(adata).__name__}.")
        if isinstance(coarse_key, list | tuple):  # several coarse schemes (one column: the plain case)
            keys = as_keys(coarse_key)
            coarse_key = keys[0] if len(keys) == 1 else keys
        self.adata = adata
        self.setup = {
            "coarse_key": coarse_key,
            "layer": layer,
            "use_rep": use_rep,
            "input_kind": input_kind,
            "batch_key": batch_key,
            "n_top_genes": n_top_genes,
            "n_comps": n_comps,
            "n_comps_within": n_comps_within,
            "model_input": model_input,
        }
        self._fitted: _Fitted | None = None
        self._fit_output: dict[str, Any] | None = None

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        n_fine: int | Literal["auto"] | Mapping[str, int],
        *,
        n_neighbors: int = 20,
        children_prior: Prior = "auto",
        init: Literal["leiden", "kmeans", "random"] = "leiden",
        hidden: Sequence[int] = (64, 64, 64, 64),
        n_epochs: int | None = None,
        batch_size: int = 1024,
        lr: float = 3e-4,
        optimizer: Literal["adam", "sgd"] = "adam",
        lambda_coarse: float = 0.5,
        lambda_fine: float = 0.5,
        lambda_reg: float = 0.05,
        regulariser: Literal["prior", "global", "within", "both"] = "prior",
        lambda_relation: float = 5e-3,
        temperature: float = 0.9,
        relation_every: int = 30,
        learn_relation: bool = True,
        soft_fraction: float = 0.3,
        guard_warm_start: bool = True,
        accelerator: Literal["auto", "cpu", "cuda"] = "auto",
        devices: int = 1,
        precision: Literal["32-true", "bf16-mixed", "16-mixed"] = "32-true",
        checkpoint_path: str | None = None,
        resume: bool = False,
        random_state: int = 0,
        show_progress: bool | None = None,
    ) -> FalconModel:
        """Train on the setup AnnData. Returns ``self``.

        The arguments are those of :func:`falcon_sc.tl.refine`, plus the training engine's (Lightning Fabric):

        Parameters
        ----------
        devices
            Processes of a distributed data-parallel run (one per GPU with ``accelerator="cuda"``; gloo on CPU),
            started by Lightning's ``ddp_spawn``. Every rank trains on its share of each epoch, rank 0 solves the
            relation and broadcasts it.
        precision
            ``"32-true"`` (default) or ``"bf16-mixed"`` (CUDA with bfloat16).
        checkpoint_path
            File the training state is written to after every epoch.
        resume
            Continue an interrupted run from ``checkpoint_path``.

        Examples
        --------
        >>> import falcon_sc as fal
        >>> adata = fal.datasets.simulate(n_cells=300, n_genes=200, children=(1, 2, 3), random_state=0)
        >>> model = fal.FalconModel(adata, "coarse").fit(n_fine=6, n_epochs=3, show_progress=False)
        >>> model
        FalconModel(coarse_key='coarse', 6 fine classes under 3 coarse classes, input 200 genes)
        >>> model.relations.shape, model.coarse_names
        ((6, 3), ['C0', 'C1', 'C2'])
        """
        s = self.setup
        adata = self.adata
        check_refine_args(
            adata,
            s["coarse_key"],
            n_fine,
            layer=s["layer"],
            use_rep=s["use_rep"],
            batch_key=s["batch_key"],
            key_added=None,
            model_input=s["model_input"],
            children_prior=children_prior,
            n_neighbors=n_neighbors,
            regulariser=regulariser,
            optimizer=optimizer,
            init=init,
            learn_relation=learn_relation,
            input_kind=s["input_kind"],
            n_top_genes=s["n_top_genes"],
            n_comps=s["n_comps"],
            n_comps_within=s["n_comps_within"],
            hidden=hidden,
            n_epochs=n_epochs,
            batch_size=batch_size,
            lr=lr,
            lambda_coarse=lambda_coarse,
            lambda_fine=lambda_fine,
            lambda_reg=lambda_reg,
            lambda_relation=lambda_relation,
            temperature=temperature,
            relation_every=relation_every,
            soft_fraction=soft_fraction,
            guard_warm_start=guard_warm_start,
            random_state=random_state,
            show_progress=show_progress,
        )
        if isinstance(devices, bool) or not isinstance(devices, int | np.integer) or devices < 1:
            raise ValueError(f"devices={devices!r} must be a positive int (processes of a distributed run).")
        if precision not in ("32-true", "bf16-mixed", "16-mixed"):
            raise ValueError(f"precision={precision!r} must be '32-true', 'bf16-mixed' or '16-mixed'.")
        if resume and checkpoint_path is None:
            raise ValueError("resume=True needs checkpoint_path= (the file to resume from).")
        device = resolve_device(accelerator)
        # numpy scalars passed the checks; the steps below (igraph's seed, torch, uns, JSON) get plain Python values
        requested = n_fine if isinstance(n_fine, str | Mapping) else int(n_fine)
        n_neighbors, batch_size, relation_every, random_state, devices = map(
            int, (n_neighbors, batch_size, relation_every, random_state, devices)
        )
        n_epochs = None if n_epochs is None else int(n_epochs)
        hidden = [int(h) for h in hidden]
        lr, lambda_coarse, lambda_fine, lambda_reg, lambda_relation, temperature, soft_fraction = map(
            float, (lr, lambda_coarse, lambda_fine, lambda_reg, lambda_relation, temperature, soft_fraction)
        )
        s.update({k: int(s[k]) for k in ("n_top_genes", "n_comps", "n_comps_within")})
        schemes = None
        if isinstance(s["coarse_key"], list):
            # several schemes: features, neighbours and the warm start work on the joint groups
            schemes = coarse_schemes(adata.obs, s["coarse_key"])
            coarse, coarse_names = schemes.joint, schemes.joint_names
        else:
            coarse_cat = pd.Categorical(adata.obs[s["coarse_key"]]).remove_unused_categories()
            coarse_names = [str(c) for c in coarse_cat.categories]
            coarse = coarse_cat.codes.astype(np.int64)
        n_coarse = len(coarse_names)

        def fit_features(groups: np.ndarray, n_groups: int, n_comps_within: int):
            return FeatureTransform.fit(
                adata,
                groups,
                n_coarse=n_groups,
                layer=s["layer"],
                use_rep=s["use_rep"],
                input_kind=s["input_kind"],
                batch_key=s["batch_key"],
                n_top_genes=s["n_top_genes"],
                n_comps=s["n_comps"],
                n_comps_within=n_comps_within,
                model_input=s["model_input"],
                random_state=random_state,
            )

        groups, group_names = coarse, coarse_names  # features, neighbours and warm start inside these groups
        if schemes is not None:  # fill missing labels on the global components first, so no fine class is cut
            _, first = fit_features(coarse, n_coarse, 0)
            groups, group_names = _filled_groups(schemes, first.neighbour_space, n_fine)
        transform, inputs = fit_features(groups, len(group_names), s["n_comps_within"])
        features, neighbour_space = inputs.features, inputs.neighbour_space
        _warn_small_classes(groups, group_names, n_neighbors)
        neighbors = within_class_neighbors(neighbour_space, groups, n_neighbors, random_state=random_state)
        estimate, known = None, {}
        if isinstance(requested, str | Mapping):  # "auto" or known counts of some classes: estimate the rest
            estimate = _estimate_n_fine(requested, neighbors, groups, group_names, random_state)
            children_prior = dict(zip(group_names, estimate["table"]["used"].tolist(), strict=True))
            if isinstance(requested, Mapping):
                known = {group_names.index(str(k)): int(v) for k, v in requested.items()}
        n_fine = requested if isinstance(requested, int) else int(sum(children_prior.values()))
        shared = None if inputs.prepared is None else inputs.prepared.embedding  # global components
        initial, init_labels, targets = _warm_start(
            neighbour_space,
            neighbors,
            groups,
            group_names,
            n_fine,
            children_prior,
            init,
            random_state,
            shared,
            KMEANS_RESTARTS,
        )
        cfg = FalconConfig(
            n_epochs=n_epochs,
            batch_size=batch_size,
            optimizer=optimizer,
            lr=lr,
            lambda_coarse=lambda_coarse,
            lambda_fine=lambda_fine,
            lambda_reg=lambda_reg,
            regulariser=regulariser,
            lambda_relation=lambda_relation,
            temperature=temperature,
            relation_every=relation_every,
            learn_relation=learn_relation,
            soft_fraction=soft_fraction,
            show_progress=_progress(show_progress),
            precision=precision,
            checkpoint_path=None if checkpoint_path is None else str(checkpoint_path),
            resume=bool(resume),
        )
        torch.manual_seed(random_state)
        network = MLPClassifier(features.shape[1], n_fine, hidden)
        options = dict(relation=initial, target_counts=targets, init_labels=init_labels, seed=random_state)
        if known:  # the children of classes with a known count keep their parent and their number
            options["pinned"] = {int(f): c for c in known for f in np.flatnonzero(initial[:, c])}
            options["fixed_counts"] = known
        data = (features, coarse, neighbors, n_coarse, cfg)
        if schemes is not None:
            options.update(_scheme_start(schemes, init_labels, n_fine))
            data = (features, schemes.codes, neighbors, schemes.n_coarse, cfg)
        result = _train(network, data, device, devices, options)
        use_warm, scores = np.zeros(n_coarse, dtype=bool), None
        if schemes is None:
            relation = result.relation.astype(bool)
            if guard_warm_start and result.warm_probs is not None:
                use_warm, scores = _guard(result, initial.astype(bool), coarse, neighbour_space, random_state)
            labels = restricted_probs(result.probs, relation, coarse).argmax(axis=1)
            fine_names = fine_class_names(relation, labels, coarse_names)
        else:  # a fine class is allowed in a joint group when it is a child there in every labelled scheme
            relation = joint_relation(result.relations, schemes.table).astype(bool)
            labels = restricted_probs(result.probs, relation, coarse).argmax(axis=1)
            fine_names = fine_class_names(result.relations[0], labels, schemes.names[0])
        params = {
            **{k: v for k, v in s.items()},
            "n_fine": n_fine,
            "n_fine_requested": requested if not isinstance(requested, Mapping) else dict(requested),
            "n_neighbors": n_neighbors,
            "children_prior": children_prior if isinstance(children_prior, str) else dict(children_prior),
            "children_prior_counts": np.asarray(targets, dtype=float),
            "init": init,
            "hidden": list(hidden),
            "accelerator": str(device),
            "devices": devices,
            "random_state": random_state,
            "guard_warm_start": guard_warm_start,
            "input_kind_detected": None if inputs.prepared is None else inputs.prepared.input_kind_detected,
            **cfg.to_dict(),
        }
        self._fitted = _Fitted(
            transform=transform,
            coarse_names=coarse_names,
            fine_names=list(fine_names),
            relation=relation.astype(np.int8),
            use_warm=use_warm,
            network=result.model.cpu().eval() if result.model is not None else network,
            warm_network=_warm_network(network, result, hidden, features.shape[1], n_fine),
            hidden=list(hidden),
            params=params,
            history=result.history,
            schemes=None if schemes is None else _scheme_record(schemes, result.relations),
        )
        self._fit_output = {
            "result": result,
            "coarse": coarse,
            "initial": initial,
            "init_labels": init_labels,
            "scores": scores,
            "n_fine_estimate": estimate,
            # coarse label most of each cell's neighbours carry in the label-free global components (one scheme)
            "neighbour_coarse": None
            if schemes is not None
            else neighbour_vote(
                neighbour_space if inputs.prepared is None else inputs.prepared.embedding,
                coarse,
                random_state=random_state,
            ),
        }
        return self

    # ------------------------------------------------------------------ state
    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`fit` has run (or the model was loaded)."""
        return self._fitted is not None

    def _check_fitted(self) -> _Fitted:
        if self._fitted is None:
            raise RuntimeError("this FalconModel is not fitted yet; call model.fit(n_fine=...) first.")
        return self._fitted

    @property
    def coarse_names(self) -> list[str]:
        """Coarse classes, in the order of the relation's columns."""
        return list(self._check_fitted().coarse_names)

    @property
    def relations(self) -> pd.DataFrame:
        """Fine x coarse 0/1 table of the learned relation (rows ordered by parent, then name)."""
        fitted = self._check_fitted()
        order = _order(fitted)
        relation, columns = fitted.relation, fitted.coarse_names
        if fitted.schemes is not None:  # the first scheme's (uns[key]["scheme_relations"] holds every scheme's)
            relation, columns = fitted.schemes["relations"][0], fitted.schemes["names"][0]
        return pd.DataFrame(relation[order], index=[fitted.fine_names[i] for i in order], columns=columns)

    @property
    def history(self) -> pd.DataFrame:
        """Per-epoch training record."""
        return pd.DataFrame([{k: v for k, v in r.items() if k != "children"} for r in self._check_fitted().history])

    def rename(self, mapping: Mapping[str, str]) -> FalconModel:
        """Give fine classes new names (unmapped ones keep theirs); :meth:`predict` and :meth:`save` use them.

        Checked as in :func:`falcon_sc.tl.rename` (which also renames the results written into an AnnData) before
        anything changes. Returns ``self``.

        Examples
        --------
        >>> import falcon_sc as fal
        >>> adata = fal.datasets.simulate(n_cells=300, n_genes=200, children=(1, 2, 3), random_state=0)
        >>> model = fal.FalconModel(adata, "coarse").fit(n_fine=6, n_epochs=3, show_progress=False)
        >>> model.rename({"C0/1": "C0 main"}).relations.head(2)
                 C0  C1  C2
        C0 main   1   0   0
        C0/2      1   0   0
        """
        fitted = self._check_fitted()
        fitted.fine_names = renamed(fitted.fine_names, mapping, what="fine classes of the model")
        return self

    def __repr__(self) -> str:
        if self._fitted is None:
            return f"FalconModel(coarse_key={self.setup['coarse_key']!r}, not fitted)"
        f = self._fitted
        source = f"obsm[{f.transform.use_rep!r}]" if f.transform.use_rep else f"{len(f.transform.genes)} genes"
        return (
            f"FalconModel(coarse_key={self.setup['coarse_key']!r}, {len(f.fine_names)} fine classes under "
            f"{len(f.coarse_names)} coarse classes, input {source})"
        )

    # ------------------------------------------------------------------ writing
    def write_fit_results(self, adata: ad.AnnData, key_added: str = "falcon") -> None:
        """Write the training run's labels and records into ``adata`` (the keys of :func:`falcon_sc.tl.refine`).

        ``adata`` must hold the cells the model was fitted on, in the same order.

        Examples
        --------
        What :func:`falcon_sc.tl.refine` does after fitting:

        >>> import falcon_sc as fal
        >>> adata = fal.datasets.simulate(n_cells=300, n_genes=200, children=(1, 2, 3), random_state=0)
        >>> model = fal.FalconModel(adata, "coarse").fit(n_fine=6, n_epochs=3, show_progress=False)
        >>> model.write_fit_results(adata, key_added="falcon")
        >>> adata.obs["falcon"].dtype.name, adata.uns["falcon"]["relations"].shape
        ('category', (6, 3))
        """
        fitted = self._check_fitted()
        if self._fit_output is None:
            raise RuntimeError("write_fit_results needs the training run of this session; use predict() instead.")
        out = self._fit_output
        if not isinstance(adata, ad.AnnData):
            raise TypeError(f"adata must be an AnnData, got {type(adata).__name__}.")
        if not isinstance(key_added, str) or not key_added:
            raise ValueError(f"key_added={key_added!r} must be a non-empty string.")
        _check_written_keys(key_added, self.setup["coarse_key"], self.setup["batch_key"])
        result: FalconResult = out["result"]
        same_cells = self.adata is None or adata is self.adata or adata.obs_names.equals(self.adata.obs_names)
        if adata.n_obs != len(out["coarse"]) or not same_cells:
            raise ValueError(
                f"write_fit_results: adata ({adata.n_obs} cells) does not hold the {len(out['coarse'])} cells the "
                "model was fitted on (same obs_names, same order); use model.predict(adata) for other cells."
            )
        _write_labels(adata, fitted, result.probs, result.embedding, out["coarse"], key_added)
        if out.get("neighbour_coarse") is not None:  # also flag cells whose neighbours carry another coarse label
            vote = out["neighbour_coarse"]
            adata.obs[f"{key_added}_neighbour_coarse"] = pd.Categorical.from_codes(vote, fitted.coarse_names)
            outside = adata.obs[f"{key_added}_outside_parent"].to_numpy(dtype=bool) | (vote != out["coarse"])
            adata.obs[f"{key_added}_outside_parent"] = outside
        uns = adata.uns[key_added]
        uns["history"] = self.history
        uns["children_history"] = np.array([r["children"] for r in result.history], dtype=np.int64)
        if out["scores"] is not None:
            uns["partition_choice"] = _choice_table(fitted, out["scores"])
            if fitted.use_warm.any():
                kept = ", ".join(np.asarray(fitted.coarse_names)[fitted.use_warm])
                logg.info(f"    warm-start partition kept (better separated than the trained one) in: {kept}")
        if out["init_labels"] is not None:
            names = fine_class_names(out["initial"].astype(bool), out["init_labels"], fitted.coarse_names)
            warm_key = f"{key_added}_warm_start"
            if warm_key in adata.obs:
                logg.warning(f"overwriting adata.obs[{warm_key!r}]")
            adata.obs[warm_key] = pd.Categorical(names[out["init_labels"]])
        if out.get("n_fine_estimate") is not None:
            uns["n_fine_estimate"] = out["n_fine_estimate"]["table"]
            uns["n_fine_evidence"] = out["n_fine_estimate"]["evidence"]
            uns["n_fine_threshold"] = out["n_fine_estimate"]["threshold"]
        uns["params"] = _uns_params(fitted.params)

    # ------------------------------------------------------------------ predict
    def predict(
        self,
        adata: ad.AnnData,
        *,
        coarse_key: str | None = None,
        input_kind: Literal["auto", "counts", "normalized", "lognorm"] = "auto",
        key_added: str = "falcon",
        batch_size: int = 4096,
        copy: bool = False,
    ) -> ad.AnnData | None:
        """Label new cells with the fitted fine classes; writes the keys :func:`~falcon_sc.tl.refine` writes.

        Genes are aligned by ``var_names`` (missing genes are filled with 0 with a warning; fewer than half of the
        model's genes is an error). With ``coarse_key`` (default: the fitted one, when ``adata.obs`` has it) each
        cell's label is chosen among the children of its coarse class; without coarse labels the coarse class is
        predicted too (the coarse class whose children get the highest total probability, with each coarse class's
        own within-class inputs) and written to ``obs[f"{key_added}_coarse"]``. Batches unseen at fit time are
        centred and scaled within themselves, as every batch was at fit time.

        Parameters
        ----------
        adata
            New cells x genes (or with the fitted ``use_rep`` in ``obsm``).
        coarse_key
            Column of coarse labels; ``None`` uses the fitted key when present, else predicts the coarse class.
        input_kind
            What the new expression matrix holds (``"auto"`` detects it).
        key_added
            Prefix of the keys written.
        batch_size
            Cells per forward pass.
        copy
            Return a new AnnData instead of writing into ``adata``.

        Examples
        --------
        Fit on half of the cells, label the other half:

        >>> import falcon_sc as fal
        >>> adata = fal.datasets.simulate(n_cells=300, n_genes=200, children=(1, 2, 3), random_state=0)
        >>> train, new = adata[:150].copy(), adata[150:].copy()
        >>> model = fal.FalconModel(train, "coarse").fit(n_fine=6, n_epochs=3, show_progress=False)
        >>> model.predict(new)  # each cell's label is a child of its coarse label new.obs["coarse"]
        >>> new.obs["falcon"].dtype.name, new.obsm["falcon_probs"].shape
        ('category', (150, 6))
        >>> unlabelled = new.copy()
        >>> del unlabelled.obs["coarse"]
        >>> out = model.predict(unlabelled, copy=True)  # no coarse labels: the coarse class is predicted too
        >>> out.obs["falcon_coarse"].cat.categories.tolist()
        ['C0', 'C1', 'C2']
        """
        fitted = self._check_fitted()
        _single_scheme_only(fitted, "predict")
        if not isinstance(adata, ad.AnnData):
            raise TypeError(f"adata must be an AnnData, got {type(adata).__name__}.")
        if not isinstance(key_added, str) or not key_added:
            raise ValueError(f"key_added={key_added!r} must be a non-empty string.")
        fitted_key = self.setup["coarse_key"]
        key = coarse_key if coarse_key is not None else (fitted_key if fitted_key in adata.obs else None)
        _check_written_keys(key_added, key, self.setup["batch_key"])
        if coarse_key is not None and coarse_key not in adata.obs:
            raise KeyError(f"coarse_key={coarse_key!r} is not a column of adata.obs.")
        adata = adata.copy() if copy else adata
        if key is not None:
            coarse = _coarse_codes(adata.obs[key], fitted.coarse_names, key)
            x = fitted.transform.transform(adata, coarse, input_kind=input_kind)
            probs, emb = self._forward(x, coarse, batch_size)
            predicted_coarse = None
        else:
            probs, emb, coarse = self._predict_coarse(adata, input_kind, batch_size)
            predicted_coarse = coarse
        _write_labels(adata, fitted, probs, emb, coarse, key_added)
        adata.uns[key_added]["params"] = _uns_params(fitted.params)
        if predicted_coarse is not None:
            adata.obs[f"{key_added}_coarse"] = pd.Categorical.from_codes(predicted_coarse, fitted.coarse_names)
        return adata if copy else None

    def _forward(self, x: np.ndarray, coarse: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        fitted = self._check_fitted()
        probs, emb = predict_probs(fitted.network, x, "cpu", batch_size)
        if fitted.warm_network is not None and fitted.use_warm.any():
            rows = fitted.use_warm[coarse]
            if rows.any():
                probs[rows] = predict_probs(fitted.warm_network, x[rows], "cpu", batch_size)[0]
        return probs, emb

    def _predict_coarse(self, adata, input_kind, batch_size) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        fitted = self._check_fitted()
        n_coarse = len(fitted.coarse_names)
        best_score = np.full(adata.n_obs, -np.inf)
        coarse = np.zeros(adata.n_obs, dtype=np.int64)
        probs = emb = None
        for c in range(n_coarse):
            hypothesis = np.full(adata.n_obs, c, dtype=np.int64)
            x = fitted.transform.transform(adata, hypothesis, input_kind=input_kind)
            p, e = self._forward(x, hypothesis, batch_size)
            score = p[:, fitted.relation[:, c].astype(bool)].sum(axis=1)
            better = score > best_score
            if probs is None:
                probs, emb = p.copy(), e.copy()
            probs[better], emb[better] = p[better], e[better]
            coarse[better] = c
            best_score[better] = score[better]
            if fitted.transform.n_comps_within == 0 or fitted.transform.use_rep is not None:
                break  # the inputs do not depend on the coarse class: one pass scores every class
        if fitted.transform.n_comps_within == 0 or fitted.transform.use_rep is not None:
            scores = probs @ fitted.relation.astype(float)
            coarse = scores.argmax(axis=1)
        return probs, emb, coarse

    # ------------------------------------------------------------------ save / load
    def save(self, dir_path: str | Path, *, overwrite: bool = False) -> None:
        """Save the fitted model to a folder: settings (JSON), weights (torch, tensors only), preprocessing (npz).

        Nothing in the folder is a pickle: :meth:`load` reads it with ``torch.load(weights_only=True)`` and
        ``numpy.load(allow_pickle=False)``.

        Examples
        --------
        >>> import os
        >>> import tempfile
        >>> import falcon_sc as fal
        >>> adata = fal.datasets.simulate(n_cells=300, n_genes=200, children=(1, 2, 3), random_state=0)
        >>> model = fal.FalconModel(adata, "coarse").fit(n_fine=6, n_epochs=3, show_progress=False)
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     model.save(os.path.join(tmp, "model"))
        ...     sorted(os.listdir(os.path.join(tmp, "model")))
        ['model.json', 'preprocessing.npz', 'weights.pt']
        """
        from .. import __version__

        fitted = self._check_fitted()
        _single_scheme_only(fitted, "save")
        path = Path(dir_path)
        if path.exists() and any(path.iterdir()) and not overwrite:
            raise FileExistsError(f"{str(path)!r} exists and is not empty; pass overwrite=True to replace it.")
        path.mkdir(parents=True, exist_ok=True)
        transform_settings, arrays = fitted.transform.state()
        settings = {
            "model_class": type(self).__name__,
            "format_version": FORMAT_VERSION,
            "falcon_sc_version": __version__,
            "setup": self.setup,
            "params": _json_ready(fitted.params),
            "coarse_names": fitted.coarse_names,
            "fine_names": fitted.fine_names,
            "relation": fitted.relation.astype(int).tolist(),
            "use_warm": fitted.use_warm.astype(bool).tolist(),
            "hidden": fitted.hidden,
            "n_input": int(fitted.network.body[0].in_features if fitted.hidden else fitted.network.head.in_features),
            "history": _json_ready(fitted.history),
            "transform": transform_settings,
        }
        (path / _FILES["settings"]).write_text(json.dumps(settings, indent=1))
        weights = {f"network.{k}": v for k, v in fitted.network.state_dict().items()}
        if fitted.warm_network is not None:
            weights.update({f"warm.{k}": v for k, v in fitted.warm_network.state_dict().items()})
        torch.save(weights, path / _FILES["weights"])
        np.savez(path / _FILES["arrays"], **arrays)

    @classmethod
    def load(cls, dir_path: str | Path, adata: ad.AnnData | None = None) -> FalconModel:
        """Load a model saved by :meth:`save`; ``adata`` (optional) becomes its setup AnnData.

        Examples
        --------
        >>> import os
        >>> import tempfile
        >>> import falcon_sc as fal
        >>> adata = fal.datasets.simulate(n_cells=300, n_genes=200, children=(1, 2, 3), random_state=0)
        >>> model = fal.FalconModel(adata, "coarse").fit(n_fine=6, n_epochs=3, show_progress=False)
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     model.save(os.path.join(tmp, "model"))
        ...     loaded = fal.FalconModel.load(os.path.join(tmp, "model"))
        >>> loaded
        FalconModel(coarse_key='coarse', 6 fine classes under 3 coarse classes, input 200 genes)
        >>> loaded.predict(adata, key_added="loaded")  # the same labels as the fitted model
        >>> bool((adata.obs["loaded"] == model.predict(adata, copy=True).obs["falcon"]).all())
        True
        """
        path = Path(dir_path)
        missing = [name for name in _FILES.values() if not (path / name).is_file()]
        if missing:
            raise FileNotFoundError(f"{str(path)!r} is not a saved FalconModel: missing {', '.join(missing)}.")
        settings = json.loads((path / _FILES["settings"]).read_text())
        if settings.get("model_class") != cls.__name__:
            raise ValueError(
                f"{str(path)!r} holds a {settings.get('model_class')!r}, not a {cls.__name__}; load it with its class."
            )
        if settings.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{str(path)!r} was saved in model format {settings.get('format_version')} by falcon_sc "
                f"{settings.get('falcon_sc_version')}; this falcon_sc reads format {FORMAT_VERSION}. Load it with "
                "that version and refit, or refit with this one."
            )
        with np.load(path / _FILES["arrays"], allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        weights = torch.load(path / _FILES["weights"], map_location="cpu", weights_only=True)
        n_fine = len(settings["fine_names"])
        network = MLPClassifier(settings["n_input"], n_fine, settings["hidden"])
        network.load_state_dict({k[len("network.") :]: v for k, v in weights.items() if k.startswith("network.")})
        warm = None
        if any(k.startswith("warm.") for k in weights):
            warm = MLPClassifier(settings["n_input"], n_fine, settings["hidden"])
            warm.load_state_dict({k[len("warm.") :]: v for k, v in weights.items() if k.startswith("warm.")})
        model = cls.__new__(cls)
        model.adata = adata
        model.setup = settings["setup"]
        model._fit_output = None
        model._fitted = _Fitted(
            transform=FeatureTransform.from_state(settings["transform"], arrays),
            coarse_names=settings["coarse_names"],
            fine_names=settings["fine_names"],
            relation=np.asarray(settings["relation"], dtype=np.int8),
            use_warm=np.asarray(settings["use_warm"], dtype=bool),
            network=network.eval(),
            warm_network=None if warm is None else warm.eval(),
            hidden=settings["hidden"],
            params=settings["params"],
            history=settings["history"],
        )
        return model


# ---------------------------------------------------------------------- helpers
def _warn_small_classes(coarse: np.ndarray, coarse_names: list[str], n_neighbors: int) -> None:
    counts = np.bincount(coarse, minlength=len(coarse_names))
    small = [f"{coarse_names[c]} ({counts[c]})" for c in np.flatnonzero(counts <= n_neighbors)]
    if small:
        logg.warning(
            f"coarse classes with at most n_neighbors={n_neighbors} cells reuse their few neighbours: "
            + ", ".join(small)
        )


KMEANS_RESTARTS = 10
"""k-means restarts of ``init="kmeans"`` on cells (as :func:`falcon_sc.baselines.kmeans_within`); the image path keeps
the 3 its defaults were measured with."""


def _warm_start(
    space, neighbors, coarse, coarse_names, n_fine, children_prior, init, random_state, shared=None, restarts=3
):
    """Initial relation, warm-start labels (``None`` for ``init="random"``) and children per coarse class.

    ``shared``: the space common to all coarse classes (cells: the global principal components; default ``space``),
    where ``children_prior="variance"`` measures spread and ``init="kmeans"`` clusters. The neighbour space of cells
    holds unit-length within-class components, which make every class look equally spread. ``restarts``: k-means
    restarts of ``init="kmeans"``.
    """
    shared = space if shared is None else shared
    n_coarse = len(coarse_names)
    fixed = (
        None
        if children_prior == "auto"
        else _targets(children_prior, coarse, coarse_names, n_fine, shared, random_state)
    )
    if init == "leiden" or fixed is None:
        graph_labels, graph_relation = graph_clusters(
            space, neighbors, coarse, n_fine, targets=fixed, random_state=random_state
        )
    targets = graph_relation.sum(axis=0).astype(float) if fixed is None else fixed
    logg.info("    children prior: " + ", ".join(f"{n}={t:g}" for n, t in zip(coarse_names, targets, strict=True)))
    if init == "leiden":
        return graph_relation, graph_labels, targets
    rng = np.random.default_rng(random_state)
    initial = solve_relation(rng.uniform(size=(n_fine, n_coarse)) * 1e-3, balance=1.0, target_counts=targets)
    if init != "kmeans":
        return initial, None, targets
    return initial, kmeans_within_relation(shared, coarse, initial, random_state, n_init=restarts), targets


def _train(network, data: tuple, device: torch.device, devices: int, options: dict) -> FalconResult:
    """FALCON training on one device or ``devices`` DDP processes; a diverging run is a clear error."""
    cfg = data[-1]
    advice = f"with lr={cfg.lr:g} and optimizer={cfg.optimizer!r}; nothing was written. Retry with a smaller lr, "
    advice += f"e.g. lr={cfg.lr / 10:g} (default 3e-4)."
    try:
        if devices > 1:
            result = train_falcon_ddp(devices, network, *data, accelerator=device.type, **options)
        else:
            result = train_falcon(network, *data, device=device, **options)
    except TrainingDiverged as err:
        raise RuntimeError(f"FALCON training diverged ({err}) {advice}") from None
    bad_loss = not np.isfinite([float(r.get("loss", 0.0)) for r in result.history]).all()
    if bad_loss or not np.isfinite(result.probs).all():
        raise RuntimeError(f"FALCON training diverged (non-finite {'loss' if bad_loss else 'probabilities'}) {advice}")
    return result


def _estimate_n_fine(requested, neighbors, coarse, coarse_names, random_state: int) -> dict[str, Any]:
    """Children per coarse class: the user's known counts, the others estimated from the neighbour graph."""
    est = estimate_children(neighbors, coarse, random_state=random_state)
    given = {} if isinstance(requested, str) else {str(k): int(v) for k, v in requested.items()}
    used = [given.get(c, int(e)) for c, e in zip(coarse_names, est.counts, strict=True)]
    table = pd.DataFrame(
        {"estimated": est.counts.astype(int), "used": used, "given": [c in given for c in coarse_names]},
        index=pd.Index(coarse_names, name="coarse"),
    )
    evidence = est.evidence.assign(coarse=[coarse_names[g] for g in est.evidence["group"]])
    evidence = evidence[["coarse", "n_children", "seed", "connectivity"]]
    logg.info(
        f"    n_fine estimated: {int(table['used'].sum())} ("
        + ", ".join(f"{c}={u}" for c, u in zip(coarse_names, used, strict=True))
        + ")"
    )
    return {"table": table, "evidence": evidence, "threshold": est.threshold}


def _single_scheme_only(fitted: _Fitted, what: str) -> None:
    if fitted.schemes is not None:
        raise NotImplementedError(
            f"{what} is not available yet for a model fitted on several coarse schemes {fitted.schemes['keys']}: "
            "its labels and relations are written by fit / refine; fit one scheme for a model to save and apply."
        )


def _filled_groups(schemes: CoarseSchemes, space: np.ndarray, n_fine: int) -> tuple[np.ndarray, list[str]]:
    """Joint groups after filling missing labels from neighbours (:func:`~falcon_sc.core.schemes.fill_missing`)."""
    groups, table = joint_groups(fill_missing(space, schemes.codes))
    names = ["|".join(schemes.names[s][c] for s, c in enumerate(row)) for row in table]
    if n_fine < len(names):
        raise ValueError(
            f"n_fine={n_fine} is below the {len(names)} combinations of coarse labels across the schemes "
            f"{schemes.keys} ({names[:6]}...); ask for at least {len(names)} fine classes."
        )
    return groups, names


def _scheme_start(schemes: CoarseSchemes, init_labels: np.ndarray | None, n_fine: int) -> dict[str, Any]:
    """Initial relation and children targets per scheme, from the warm start's fine labels (random without)."""
    if init_labels is None:
        return {"relation": None, "target_counts": None}
    relations = scheme_relations(init_labels, schemes.codes, n_fine, schemes.n_coarse)
    return {"relation": relations, "target_counts": [r.sum(axis=0).astype(float) for r in relations]}


def _scheme_record(schemes: CoarseSchemes, relations: list[np.ndarray]) -> dict[str, Any]:
    return {"keys": schemes.keys, "names": schemes.names, "relations": [r.astype(np.int8) for r in relations]}


def _targets(prior, coarse: np.ndarray, coarse_names: list[str], n_fine: int, space, random_state: int) -> np.ndarray:
    if isinstance(prior, Mapping):
        by_name = {str(k): v for k, v in prior.items()}
        return np.array([float(by_name[c]) for c in coarse_names])
    return size_prior(coarse, n_fine, method=prior, X=space, random_state=random_state)


def _guard(result: FalconResult, initial: np.ndarray, coarse: np.ndarray, space: np.ndarray, random_state: int):
    """Swap in the warm-fitted network's predictions in the coarse classes where they separate the cells better."""
    final = result.relation.astype(bool)
    trained = restricted_probs(result.probs, final, coarse).argmax(axis=1)
    warm_labels = restricted_probs(result.warm_probs, initial, coarse).argmax(axis=1)
    same_children = (final == initial).all(axis=0)
    use_warm, scores = choose_per_class(
        space, coarse, trained, warm_labels, eligible=same_children, random_state=random_state
    )
    rows = use_warm[coarse]
    result.probs[rows] = result.warm_probs[rows]
    return use_warm, scores


def _warm_network(network, result: FalconResult, hidden, n_input: int, n_fine: int) -> MLPClassifier | None:
    if result.warm_state is None:
        return None
    warm = MLPClassifier(n_input, n_fine, hidden)
    warm.load_state_dict(result.warm_state)
    return warm.eval()


def _parents(fitted: _Fitted) -> tuple[np.ndarray, list[str]]:
    """Parent of each fine class and the coarse names it indexes (the first scheme's with several)."""
    if fitted.schemes is None:
        return fitted.relation.argmax(axis=1), fitted.coarse_names
    return fitted.schemes["relations"][0].argmax(axis=1), fitted.schemes["names"][0]


def _order(fitted: _Fitted) -> np.ndarray:
    parent = _parents(fitted)[0]
    return np.lexsort((np.asarray(fitted.fine_names), parent))


def _choice_table(fitted: _Fitted, scores: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "kept": np.where(fitted.use_warm, "warm start", "trained"),
            "silhouette_trained": scores[:, 0],
            "silhouette_warm_start": scores[:, 1],
        },
        index=fitted.coarse_names,
    )


def _check_written_keys(key_added: str, coarse_key: str | list[str] | None, batch_key: str | None) -> None:
    """Refuse a ``key_added`` whose written ``obs`` columns would overwrite the coarse or batch column."""
    suffixes = ("confidence", "outside_parent", "warm_start", "coarse", "neighbour_coarse")
    written = {key_added, *(f"{key_added}_{s}" for s in suffixes)}
    keys = [coarse_key] if not isinstance(coarse_key, list | tuple) else list(coarse_key)
    for name, value in [*(("coarse_key", k) for k in keys), ("batch_key", batch_key)]:
        if value is not None and value in written:
            raise ValueError(
                f"key_added={key_added!r} would overwrite adata.obs[{value!r}] (the {name}); choose another key_added."
            )


def _coarse_codes(col: pd.Series, coarse_names: list[str], key: str) -> np.ndarray:
    if col.isna().any():
        raise ValueError(f"adata.obs[{key!r}] has {int(col.isna().sum())} missing labels; fill or drop them.")
    values = col.astype(str).to_numpy()
    unknown = sorted(set(values) - set(coarse_names))
    if unknown:
        raise ValueError(
            f"adata.obs[{key!r}] has coarse labels the model was not fitted on: {unknown[:10]}; the model knows "
            f"{coarse_names}. Rename them, or pass coarse_key=None to predict the coarse class."
        )
    lookup = {c: i for i, c in enumerate(coarse_names)}
    return np.array([lookup[v] for v in values], dtype=np.int64)


def _json_ready(value: Any) -> Any:
    """Numpy scalars/arrays and tuples as plain JSON values."""
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _uns_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters as ``uns`` stores them, writable to h5ad: ``None`` values left out, lists as arrays, keys str."""
    out: dict[str, Any] = {}
    for k, v in copy.deepcopy(dict(params)).items():
        if v is None:
            continue
        if isinstance(v, Mapping):
            v = {str(kk): vv for kk, vv in v.items()}
        elif isinstance(v, list | tuple):
            v = np.asarray(v)
        out[str(k)] = v
    return out


def _write_labels(
    adata: ad.AnnData, fitted: _Fitted, probs: np.ndarray, embedding: np.ndarray, coarse: np.ndarray, key_added: str
) -> None:
    relation = fitted.relation.astype(bool)
    parent, parent_names = _parents(fitted)
    restricted = restricted_probs(probs, relation, coarse)
    label = restricted.argmax(axis=1)
    finite = np.where(np.isfinite(probs), probs, 0)
    lost = int((~(np.where(relation[:, coarse].T, finite, 0) > 0).any(axis=1)).sum())
    if lost:
        logg.warning(
            f"{lost} cells gave no probability to any child of their coarse class: they get its children with equal "
            "confidence (the first child as label); training may have diverged, try a smaller lr"
        )
    names = np.asarray(fitted.fine_names)
    sizes = np.bincount(label, minlength=relation.shape[0])
    order = _order(fitted)
    ordered_names = [str(n) for n in names[order]]
    for key in (key_added, f"{key_added}_confidence", f"{key_added}_outside_parent"):
        if key in adata.obs:
            logg.warning(f"overwriting adata.obs[{key!r}]")
    adata.obs[key_added] = pd.Categorical(names[label], categories=ordered_names)
    adata.obs[f"{key_added}_confidence"] = restricted[np.arange(len(label)), label].astype(np.float32)
    top = finite.argmax(axis=1)  # the unrestricted prediction falls outside the cell's coarse class
    adata.obs[f"{key_added}_outside_parent"] = ~relation[top, coarse] & (finite.max(axis=1) > 0)
    adata.obsm[f"{key_added}_probs"] = probs[:, order].astype(np.float32)
    adata.obsm[f"{key_added}_embedding"] = embedding.astype(np.float32)
    if fitted.schemes is None:
        relations = pd.DataFrame(relation[order].astype(np.int8), index=ordered_names, columns=fitted.coarse_names)
    else:  # the first scheme's relation, as with one scheme; every scheme's under "scheme_relations"
        tables = [
            pd.DataFrame(r[order].astype(np.int8), index=ordered_names, columns=n)
            for r, n in zip(fitted.schemes["relations"], fitted.schemes["names"], strict=True)
        ]
        relations = tables[0]
    conf = adata.obs[f"{key_added}_confidence"].to_numpy()
    fine_classes = pd.DataFrame(
        {
            "parent": [parent_names[p] for p in parent[order]],
            "n_cells": sizes[order],
            "mean_confidence": [float(conf[label == f].mean()) if sizes[f] else np.nan for f in order],
        },
        index=ordered_names,
    )
    if key_added in adata.uns:
        logg.warning(f"overwriting adata.uns[{key_added!r}]")
    adata.uns[key_added] = {
        "relations": relations,
        "fine_classes": fine_classes,
    }
    if fitted.schemes is not None:
        adata.uns[key_added]["scheme_relations"] = dict(zip(fitted.schemes["keys"], tables, strict=True))
    used = int((sizes > 0).sum())
    if used < relation.shape[0]:
        logg.warning(
            f"only {used} of {relation.shape[0]} fine classes hold cells (partial collapse); see "
            f"uns[{key_added!r}]['history']['fine_in_use']"
        )
