"""``FalconModel``: a fitted FALCON model users keep, apply to new cells, save and share."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Literal

import anndata as ad
import numpy as np
import pandas as pd

from .._checks import check_bool, check_choice, check_int, folder_path
from .._coarse import as_keys
from .._layout import check_key_added, history_table, relations_table
from .._names import renamed
from .._validate import check_adata, check_data, check_fit, check_setup, resolve_device
from ..core.launch import active_launch
from ..core.neighbors import neighbour_vote
from ..core.progress import phase, progress_shown
from ..core.trainer import FalconConfig
from ..core.training import predict as predict_probs
from ..pp import INPUT_KINDS
from ._cells import cell_problem, describe_inputs
from ._inference import Inference, coarse_codes_of, scheme_columns, scheme_inference, scheme_labels
from ._io import load_model, save_model
from ._newcells import check_layer, check_new_cells
from ._params import FitParams, Prior, SetupParams
from ._pipeline import KMEANS_RESTARTS, Engine, Outcome, fit_falcon
from ._state import FittedState, input_digests, warm_copy
from ._write import write_fit, write_prediction
from .mlp import MLPClassifier

__all__ = ["FalconModel", "Prior"]


class FalconModel:
    """FALCON fine classes inside coarse labels, as a model: fit once, label new cells, save and load.

    The setup arguments say which data the model reads (as in :func:`falcon_sc.tl.refine`, which is a thin wrapper
    over this class). :meth:`fit` keeps the fitted preprocessing (genes, input kind, per-batch scaling, global and
    within-class principal components), the network, the warm-start network and the learned relation, so that
    :meth:`predict` replays the exact transform on new cells.

    Parameters
    ----------
    adata
        Cells x genes to fit on (not modified by the model); may be backed (``backed="r"``) or hold a dask matrix,
        read in chunks as in :func:`falcon_sc.tl.refine`.
    coarse_key
        Column of ``adata.obs`` with the coarse labels, or a list of columns: several coarse schemes (labels may be
        missing in some schemes; see :doc:`/schemes`). A model fitted on several schemes saves, loads and labels
        new cells that carry any subset of them (:meth:`predict`).
    layer, use_rep, input_kind, batch_key, n_top_genes, n_comps, n_comps_within, model_input
        As in :func:`falcon_sc.tl.refine`.

    Examples
    --------
    >>> import falcon_sc as fal
    >>> adata = fal.datasets.pbmc68k()
    >>> model = fal.FalconModel(adata, "coarse").fit(n_fine=10)  # doctest: +SKIP
    >>> model.save("pbmc_model")  # doctest: +SKIP
    >>> fal.FalconModel.load("pbmc_model", adata=new_cells).predict(new_cells)  # doctest: +SKIP
    >>> latent = model.get_latent_representation(new_cells)  # doctest: +SKIP
    """

    def __init__(
        self,
        adata: ad.AnnData,
        coarse_key: str | Sequence[str],
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
        check_adata(adata, out_of_core=True)
        if isinstance(coarse_key, list | tuple):  # several coarse schemes (one column: the plain case)
            keys = as_keys(coarse_key)
            coarse_key = keys[0] if len(keys) == 1 else keys
        self.adata = adata
        self.setup = SetupParams(
            coarse_key=coarse_key,
            layer=layer,
            use_rep=use_rep,
            input_kind=input_kind,
            batch_key=batch_key,
            n_top_genes=n_top_genes,
            n_comps=n_comps,
            n_comps_within=n_comps_within,
            model_input=model_input,
        )
        check_setup(adata, self.setup)  # the keys exist and the batches are sound: said now, not at fit time
        self._fitted: FittedState | None = None
        self._outcome: Outcome | None = None
        self._neighbour_coarse: np.ndarray | None = None
        self._coarse = np.zeros(0, dtype=np.int64)  # coarse class (joint group) of each fitted cell

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
            File the training state is written to after every epoch, atomically (a file beside it, then a rename),
            with a fingerprint of the run and a digest of its content. Without ``resume`` an existing file is
            overwritten.
        resume
            Continue an interrupted run from ``checkpoint_path`` (when the file does not exist, the fit starts
            afresh). Before any training the file is read with ``weights_only=True`` (tensors and plain values only:
            nothing in it is unpickled as code) and checked: its digest; its fingerprint against this fit's (the
            network inputs' shape and hash, the coarse labels, their names per scheme, ``n_fine``, the network's
            layer shapes, the neighbours, the warm start's relation and prior, every training setting that changes
            the result and the random state); its structure. A checkpoint that fails, or one written by an older
            falcon_sc without a fingerprint, raises :class:`~falcon_sc.errors.CheckpointError` naming the file and
            what differs or is wrong.

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
        fit = FitParams(
            n_neighbors=n_neighbors,
            children_prior=children_prior,
            init=init,
            hidden=hidden,
            guard_warm_start=guard_warm_start,
            accelerator=accelerator,
            devices=devices,
            random_state=random_state,
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
            show_progress=True if show_progress is None else show_progress,  # the bar waits 2 s: short runs are quiet
            precision=precision,
            checkpoint_path=os.fspath(checkpoint_path) if isinstance(checkpoint_path, os.PathLike) else checkpoint_path,
            resume=resume,
        )
        return self._fit(n_fine, fit, cfg)

    def _fit(self, n_fine: int | str | Mapping[str, int], fit: FitParams, cfg: FalconConfig) -> FalconModel:
        """Check the data, run the pipeline on the setup AnnData and keep what it learned."""
        with phase("input checked") as found:
            keys = check_setup(self.adata, self.setup)
            check_fit(self.adata, keys, n_fine, fit.children_prior, cfg.regulariser)
            check_data(self.adata, self.setup.layer, self.setup.use_rep)
            device = resolve_device(fit.accelerator)
            found.append(f"{self.adata.n_obs:,} cells x {self.adata.n_vars:,} genes, on {device}")
        requested = n_fine if isinstance(n_fine, str | Mapping) else int(n_fine)
        with progress_shown(cfg.show_progress):
            with phase("preprocessed") as found:
                problem, transform, inputs = cell_problem(self.adata, self.setup, keys, requested, fit.random_state)
                found.append(describe_inputs(transform, inputs.features.shape[1]))
            make_network = partial(MLPClassifier, inputs.features.shape[1], hidden=list(fit.hidden))
            engine = Engine(make_network, device, devices=fit.devices, kmeans_restarts=KMEANS_RESTARTS)
            outcome = fit_falcon(problem, requested, fit, cfg, engine)
        launch = active_launch()  # under torchrun the processes it started trained
        result = outcome.result
        params = {
            **self.setup.as_dict(),
            "n_fine": outcome.n_fine,
            "n_fine_requested": requested if not isinstance(requested, Mapping) else dict(requested),
            "n_neighbors": fit.n_neighbors,
            "children_prior": outcome.children_prior,
            "children_prior_counts": np.asarray(outcome.targets, dtype=float),
            "init": fit.init,
            "hidden": list(fit.hidden),
            "accelerator": str(device),
            "devices": fit.devices if launch is None else launch.world_size,
            "random_state": fit.random_state,
            "guard_warm_start": fit.guard_warm_start,
            "input_kind_detected": None if inputs.prepared is None else inputs.prepared.input_kind_detected,
            **cfg.to_dict(),
        }
        self._fitted = FittedState(
            transform=transform,
            coarse_names=problem.coarse_names,
            fine_names=outcome.fine_names,
            relation=outcome.relation.astype(np.int8),
            use_warm=outcome.use_warm,
            network=result.model.cpu().eval() if result.model is not None else outcome.network,
            warm_network=warm_copy(make_network, result.warm_state, outcome.n_fine),
            hidden=list(fit.hidden),
            params=params,
            history=result.history,
            schemes=outcome.scheme_record,
        )
        self._outcome, self._coarse = outcome, problem.coarse
        # coarse label most of each cell's neighbours carry in the label-free global components (one scheme)
        self._neighbour_coarse = None
        problem.features = None  # the network inputs are not needed any more (1M cells x 60: 240 MB)
        del inputs
        if problem.schemes is None:
            with phase("coarse labels checked against neighbours") as found:
                space = problem.space if problem.shared is None else problem.shared
                self._neighbour_coarse = neighbour_vote(space, problem.coarse, random_state=fit.random_state)
                found.append(f"{int((self._neighbour_coarse != problem.coarse).sum()):,} cells' neighbours disagree")
        return self

    # ------------------------------------------------------------------ state
    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`fit` has run (or the model was loaded)."""
        return self._fitted is not None

    def _check_fitted(self) -> FittedState:
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
        fitted = self._check_fitted()  # with several schemes the first scheme's (``uns[key]["scheme_relations"]``)
        return relations_table(fitted.relation, fitted.fine_names, fitted.coarse_names, fitted.schemes)

    @property
    def history(self) -> pd.DataFrame:
        """Per-epoch training record."""
        return history_table(self._check_fitted().history)

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
            return f"FalconModel(coarse_key={self.setup.coarse_key!r}, not fitted)"
        f = self._fitted
        source = f"obsm[{f.transform.use_rep!r}]" if f.transform.use_rep else f"{len(f.transform.genes)} genes"
        if f.schemes is not None:  # several schemes: the classes of each, not the joint groups
            counts = " + ".join(str(len(n)) for n in f.schemes["names"])
            under = f"{counts} coarse classes of {len(f.schemes['keys'])} schemes"
            key = list(f.schemes["keys"])
        else:
            under, key = f"{len(f.coarse_names)} coarse classes", self.setup.coarse_key
        return f"FalconModel(coarse_key={key!r}, {len(f.fine_names)} fine classes under {under}, input {source})"

    # ------------------------------------------------------------------ writing
    def write_fit_results(self, adata: ad.AnnData, key_added: str = "falcon") -> None:
        """Write the training run's labels and records into ``adata`` (the keys of :func:`falcon_sc.tl.refine`).

        ``adata`` must hold the cells the model was fitted on, in the same order: the setup AnnData itself, or one
        with the same ``obs_names``, the same values of the input matrix (``X``, the layer or the embedding; dense
        or sparse alike) and the same coarse and batch columns. Anything else is refused: use :meth:`predict`.

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
        if self._outcome is None:
            raise RuntimeError("write_fit_results needs the training run of this session; use predict() instead.")
        outcome = self._outcome
        if not isinstance(adata, ad.AnnData):
            raise TypeError(f"adata must be an AnnData, got {type(adata).__name__}.")
        check_key_added(key_added, coarse_keys=as_keys(self.setup.coarse_key), batch_key=self.setup.batch_key)
        n_cells = len(outcome.labels)
        same_cells = adata is self.adata or adata.obs_names.equals(self.adata.obs_names)
        if adata.n_obs != n_cells or not same_cells:
            raise ValueError(
                f"write_fit_results: adata ({adata.n_obs} cells) does not hold the {n_cells} cells the "
                "model was fitted on (same obs_names, same order); use model.predict(adata) for other cells."
            )
        if adata is not self.adata:
            fitted_on, given = input_digests(self.adata, self.setup), input_digests(adata, self.setup)
            differ = [part for part, digest in fitted_on.items() if given.get(part) != digest]
            if differ:
                raise ValueError(
                    "write_fit_results: adata has the fitted obs_names, but not the data the model was fitted on "
                    f"({', '.join(differ)} differ): these are other cells (or changed data), and the training run's "
                    "labels would land on the wrong cells. Use model.predict(adata) to label them."
                )
        write_fit(adata, key_added, fitted, outcome, self._coarse, self._neighbour_coarse)

    # ------------------------------------------------------------------ predict
    def predict(
        self,
        adata: ad.AnnData,
        *,
        coarse_key: str | Sequence[str | None] | None = None,
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

        The soft output is ``obsm[f"{key_added}_probs"]``: per-class probabilities, one column per fine class in the
        order of ``uns[key_added]["fine_classes"].index``; ``obsm[f"{key_added}_embedding"]`` holds the network's
        embedding (as :meth:`get_latent_representation` returns it).

        A model fitted on several coarse schemes reads each fitted column ``adata.obs`` has (a missing column or
        value: no label in that scheme). A cell's fine class is chosen among the classes that are a child of its
        label in every scheme that labels it, as at fit time; where it lacks labels, its within-class inputs are
        those of the label combination (completed joint group) whose allowed classes get the highest total
        probability, written to ``obs[f"{key_added}_coarse"]`` (``"A0|B1"``); a cell with no label at all is
        restricted to that combination, as a cell without its coarse label with one scheme. See :doc:`/schemes`.

        Parameters
        ----------
        adata
            New cells x genes (or with the fitted ``use_rep`` in ``obsm``). Checked before any work: at least one
            cell; the fitted embedding with its width and finite values, or unique ``var_names`` and finite,
            non-negative expression values.
        coarse_key
            Column of coarse labels; ``None`` uses the fitted key when present, else predicts the coarse class.
            With several schemes: a list of one column (or ``None``) per fitted scheme, in the fitted order.
        input_kind
            What the new expression matrix holds (``"auto"`` detects it).
        key_added
            Prefix of the keys written.
        batch_size
            Cells per forward pass (an int >= 1).
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

        Several coarse schemes: a second scheme ``"half"`` splits each coarse class's fine classes; new cells carry
        labels in both schemes, in one, or in none:

        >>> adata = fal.datasets.simulate(n_cells=300, n_genes=200, children=(2, 2), random_state=0)
        >>> adata.obs["half"] = adata.obs["fine"].astype(str).str[-1].map({"0": "first", "1": "second"})
        >>> train, new = adata[:200].copy(), adata[200:].copy()
        >>> model = fal.FalconModel(train, ["coarse", "half"]).fit(n_fine=4, n_epochs=3, show_progress=False)
        >>> out = model.predict(new, copy=True)  # both schemes: each label is a child of both of the cell's labels
        >>> sorted(out.uns["falcon"]["scheme_relations"])
        ['coarse', 'half']
        >>> del new.obs["half"]
        >>> out = model.predict(new, copy=True)  # one scheme: the missing label is completed
        >>> out.obs["falcon_coarse"].cat.categories.tolist()
        ['C0|first', 'C0|second', 'C1|first', 'C1|second']
        """
        fitted = self._check_fitted()
        check_bool("copy", copy)
        inference, keys = self._infer(adata, coarse_key, input_kind, batch_size, key_added=key_added)
        adata = adata.copy() if copy else adata
        write_prediction(adata, key_added, fitted, inference)
        return adata if copy else None

    def get_latent_representation(
        self,
        adata: ad.AnnData,
        *,
        coarse_key: str | Sequence[str | None] | None = None,
        input_kind: Literal["auto", "counts", "normalized", "lognorm"] = "auto",
        batch_size: int = 4096,
    ) -> np.ndarray:
        """The network's embedding (its penultimate layer) of the cells of ``adata``, as scvi-tools models give it.

        The cells are read exactly as :meth:`predict` reads them (genes, input kind, batches, coarse labels or their
        prediction); nothing is written into ``adata``. The rows are the cells, the columns the last hidden layer
        (``hidden[-1]`` wide); the same values :meth:`predict` writes to ``obsm[f"{key_added}_embedding"]``.

        Parameters
        ----------
        adata, coarse_key, input_kind, batch_size
            As in :meth:`predict`.

        Returns
        -------
        Cells x embedding dimensions, float32.

        Examples
        --------
        >>> import falcon_sc as fal
        >>> adata = fal.datasets.simulate(n_cells=300, n_genes=200, children=(1, 2, 3), random_state=0)
        >>> model = fal.FalconModel(adata, "coarse").fit(n_fine=6, n_epochs=3, show_progress=False, hidden=(32, 16))
        >>> model.get_latent_representation(adata).shape
        (300, 16)
        """
        inference, _ = self._infer(adata, coarse_key, input_kind, batch_size)
        return np.asarray(inference.embedding, dtype=np.float32)

    def _infer(
        self,
        adata: ad.AnnData,
        coarse_key: Any,
        input_kind: str,
        batch_size: int,
        key_added: str | None = None,
    ) -> tuple[Inference, list[str | None]]:
        """Check the arguments and the cells, then compute probabilities, embedding and coarse groups."""
        fitted = self._check_fitted()
        check_int("batch_size", batch_size, 1)
        check_choice("input_kind", input_kind, INPUT_KINDS)
        network = fitted.network
        assert isinstance(network, MLPClassifier)
        if fitted.schemes is None and coarse_key is not None and not isinstance(coarse_key, str):
            raise TypeError(f"coarse_key={coarse_key!r} must be a column name of adata.obs (a string) or None.")
        check_new_cells(adata, fitted.transform, network.n_input)
        if fitted.schemes is not None:
            keys = scheme_columns(adata.obs, fitted.schemes["keys"], coarse_key)
        else:
            fitted_key = self.setup.coarse_key
            keys = [coarse_key if coarse_key is not None else (fitted_key if fitted_key in adata.obs else None)]
        if key_added is not None:
            check_key_added(key_added, coarse_keys=keys, batch_key=self.setup.batch_key)
        if fitted.schemes is None and coarse_key is not None and coarse_key not in adata.obs:
            raise KeyError(f"coarse_key={coarse_key!r} is not a column of adata.obs.")
        if fitted.schemes is not None:
            codes = scheme_labels(adata.obs, keys, fitted.schemes["names"])
            forward = partial(self._forward, batch_size=batch_size, warm=False)
            return scheme_inference(adata, fitted.schemes, codes, fitted.transform, forward, input_kind), keys
        key = keys[0]
        names, relation = list(fitted.coarse_names), fitted.relation
        if key is None:
            probs, emb, coarse = self._predict_coarse(adata, input_kind, batch_size)
            predicted = pd.Categorical.from_codes(coarse, categories=pd.Index(names))
            return Inference(probs, emb, coarse, names, relation, predicted), keys
        coarse = coarse_codes_of(adata.obs[key], fitted.coarse_names, key)
        x = fitted.transform.transform(adata, coarse, input_kind=input_kind)
        probs, emb = self._forward(x, coarse, batch_size)
        return Inference(probs, emb, coarse, names, relation), keys

    def _forward(
        self, x: np.ndarray, coarse: np.ndarray, batch_size: int, warm: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        fitted = self._check_fitted()
        probs, emb = predict_probs(fitted.network, x, "cpu", batch_size)
        if warm and fitted.warm_network is not None and fitted.use_warm.any():
            rows = fitted.use_warm[coarse]
            if rows.any():
                probs[rows] = predict_probs(fitted.warm_network, x[rows], "cpu", batch_size)[0]
        return probs, emb

    def _predict_coarse(self, adata, input_kind, batch_size) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        fitted = self._check_fitted()
        n_coarse = len(fitted.coarse_names)
        best_score = np.full(adata.n_obs, -np.inf)
        coarse = np.zeros(adata.n_obs, dtype=np.int64)
        probs: np.ndarray | None = None
        emb: np.ndarray | None = None
        for c in range(n_coarse):
            hypothesis = np.full(adata.n_obs, c, dtype=np.int64)
            x = fitted.transform.transform(adata, hypothesis, input_kind=input_kind)
            p, e = self._forward(x, hypothesis, batch_size)
            score = p[:, fitted.relation[:, c].astype(bool)].sum(axis=1)
            better = score > best_score
            if probs is None or emb is None:
                probs, emb = p.copy(), e.copy()
            probs[better], emb[better] = p[better], e[better]
            coarse[better] = c
            best_score[better] = score[better]
            if fitted.transform.n_comps_within == 0 or fitted.transform.use_rep is not None:
                break  # the inputs do not depend on the coarse class: one pass scores every class
        if fitted.transform.n_comps_within == 0 or fitted.transform.use_rep is not None:
            scores = probs @ fitted.relation.astype(float)
            coarse = scores.argmax(axis=1)
        assert probs is not None and emb is not None  # a model has at least one coarse class
        return probs, emb, coarse

    # ------------------------------------------------------------------ save / load
    def save(self, dir_path: str | Path, *, overwrite: bool = False) -> None:
        """Save the fitted model to a folder: settings (JSON), weights (torch, tensors only), preprocessing (npz).

        The save is atomic: the files are written into a new hidden folder beside ``dir_path`` and renamed into
        place at the end, so a save that fails (full disk, interrupt, error) leaves no partial folder behind and
        whatever was at ``dir_path`` unchanged. A folder that is not empty is refused without ``overwrite=True``;
        with it, only a folder holding a saved model (``model.json`` and nothing but the model's three files) is
        replaced (the old one is renamed aside, the new one renamed in, then the old one deleted). Any other
        folder is refused even with ``overwrite=True``: nothing else is ever deleted.

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
        fitted = self._check_fitted()
        save_model(folder_path("dir_path", dir_path), type(self).__name__, self.setup, fitted, overwrite=overwrite)

    @classmethod
    def load(cls, dir_path: str | Path, adata: ad.AnnData | None = None) -> FalconModel:
        """Load a model saved by :meth:`save`; ``adata`` (optional) becomes its setup AnnData.

        As in scvi-tools, an ``adata`` given here is checked against the model first: it must hold every gene the
        model reads (its ``var_names``; the error names the missing ones), or the fitted embedding ``obsm[use_rep]``
        with its width. To label cells that lack some genes, load without ``adata`` and call :meth:`predict`, which
        fills missing genes with 0 and warns.

        Nothing is trusted or built before it is checked. ``model.json`` is checked against the saved-model schema:
        every field present, with its type and range, and the fields consistent with each other (the relation gives
        every fine class exactly one coarse class and every coarse class a child, the preprocessing agrees with the
        setup, ...). ``preprocessing.npz`` must hold exactly the arrays the settings imply, with their dtypes and
        shapes, finite, and is read without pickles; ``weights.pt`` exactly the tensors of the network's shapes,
        float and finite, read with ``torch.load(weights_only=True)``. No code in the folder ever runs.

        Raises
        ------
        FileNotFoundError
            ``dir_path`` does not exist.
        ValueError, KeyError
            ``adata`` lacks genes, the fitted layer (``KeyError``) or the embedding the model reads.
        falcon_sc.errors.SavedModelError
            Anything else that is not a complete, consistent model of this class (a missing, truncated, edited,
            swapped or foreign file, another format version): one error naming the file and the field, entry or
            tensor, and what to do.

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
        setup, fitted = load_model(folder_path("dir_path", dir_path), cls.__name__)
        if adata is not None:
            check_setup_adata(adata, fitted.transform, fitted.network)
        model = cls.__new__(cls)
        model.adata = adata
        model.setup = setup
        model._fitted = fitted
        model._outcome = None
        model._neighbour_coarse = None
        model._coarse = np.zeros(0, dtype=np.int64)
        return model


def check_setup_adata(adata: Any, transform: Any, network: Any) -> None:
    """The AnnData given to :meth:`FalconModel.load` holds what the model reads: every gene, or the embedding."""
    if not isinstance(adata, ad.AnnData):
        raise TypeError(f"load(adata=...) must be an AnnData or None, got {type(adata).__name__}.")
    if transform.use_rep is not None:
        check_new_cells(adata, transform, network.n_input)
        return
    check_layer(adata, transform.layer)
    genes = pd.Index(adata.var_names.astype(str))
    missing = [str(g) for g in transform.genes if g not in genes]
    if missing:
        raise ValueError(
            f"load(adata=...): adata.var_names lacks {len(missing)} of the model's {len(transform.genes)} genes, e.g. "
            f"{missing[:10]}. Give an AnnData with every gene the model was fitted on, or load without adata and "
            "call model.predict(adata), which fills missing genes with 0 (with a warning)."
        )
