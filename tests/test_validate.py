"""Bad input to ``fal.tl.refine``: clear errors before any heavy work, and the input AnnData left untouched."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import falcon_sc as fal
import falcon_sc.models._pipeline as refine_module
from falcon_sc.core.labels import restricted_probs

from .conftest import FAST, N_FINE, scanpy_log
from .tl import test_refine as refine_tests
from .tl.test_refine import _check_valid_output, _snapshot

# the fixtures of the refine tests: ``small`` (200 cells of the shared simulation); ``no_training`` and
# ``no_prepare`` make training / preprocessing fail loudly, so that argument errors must come before them
small = refine_tests.small
no_training = refine_tests.no_training
no_prepare = refine_tests.no_prepare

#: what ``no_prepare`` raises once every argument check has passed
PASSED_CHECKS = "reached preprocessing"


def _dense(X):
    return X.toarray() if sparse.issparse(X) else np.asarray(X)


def _assert_untouched(adata, before) -> None:
    pd.testing.assert_frame_equal(adata.obs, before.obs)
    pd.testing.assert_frame_equal(adata.var, before.var)
    if adata.X is None or before.X is None:
        assert adata.X is None and before.X is None
    else:
        assert sparse.issparse(adata.X) == sparse.issparse(before.X) and adata.X.dtype == before.X.dtype
        same_nan = adata.X.dtype.kind == "f"  # NaN values are the same value here
        assert np.array_equal(_dense(adata.X), _dense(before.X), equal_nan=same_nan)
    assert set(adata.obsm) == before.obsm and set(adata.uns) == before.uns and set(adata.layers) == before.layers
    assert adata.shape == before.shape


def _refuse(adata, exc, match, *args, **kwargs):
    """``refine`` raises ``exc`` matching ``match`` and leaves ``adata`` as it was; returns the error."""
    before = _snapshot(adata)
    with pytest.raises(exc, match=match) as info:
        fal.tl.refine(adata, *(args or ("coarse", N_FINE)), **kwargs)
    _assert_untouched(adata, before)
    return info.value


def _passes_checks(adata, *args, **kwargs) -> None:
    """Every check passes: ``refine`` reaches the preprocessing (which ``no_prepare`` replaces by an error)."""
    with pytest.raises(AssertionError, match=PASSED_CHECKS):
        fal.tl.refine(adata, *(args or ("coarse", N_FINE)), **kwargs)


def _counts_adata(n_cells: int, n_genes: int = 20, seed: int = 0) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    adata = ad.AnnData(X=rng.poisson(2.0, size=(n_cells, n_genes)).astype(np.float32))
    adata.obs["coarse"] = pd.Categorical(np.array(["C0", "C1", "C2"])[np.arange(n_cells) % 3])
    return adata


def _unprobed_row(n_cells: int, n_probe: int = 2000, random_state: int = 0) -> int:
    """A row that :func:`falcon_sc.pp.detect_input_kind` does not probe (same draw as ``_probe``)."""
    probed = np.random.default_rng(random_state).choice(n_cells, size=n_probe, replace=False)
    return int(np.setdiff1d(np.arange(n_cells), probed)[0])


# ----------------------------------------------------------------------------------------------- 1. values


@pytest.mark.parametrize("fmt", [np.asarray, sparse.csr_matrix], ids=["dense", "csr"])
@pytest.mark.parametrize(("bad", "what"), [(np.nan, "1 NaN"), (np.inf, "1 infinite"), (-1.0, "1 negative")])
def test_bad_value_outside_the_probed_rows_is_found(no_prepare, fmt, bad, what):
    adata = _counts_adata(2500)
    row = _unprobed_row(adata.n_obs)
    X = adata.X.copy()
    X[row, 3] = bad
    adata.X = fmt(X)
    assert fal.pp.detect_input_kind(adata.X) == "counts"  # the probe alone misses it
    err = _refuse(adata, ValueError, f"adata.X holds {what} values")
    assert "layer=" in str(err)  # says what to do


def test_prepare_finds_a_bad_value_outside_the_probed_rows():
    adata = _counts_adata(2500)
    adata.X[_unprobed_row(adata.n_obs), 0] = np.nan
    with pytest.raises(ValueError, match="adata.X holds 1 NaN values"):
        fal.pp.prepare(adata)


def test_bad_values_in_a_layer_are_counted_and_named(small, no_prepare):
    adata = small.copy()
    layer = adata.X.toarray()
    layer[[0, 5, 7], 2] = np.nan
    layer[9, 1] = np.inf
    layer[11, 0] = -2.0
    adata.layers["counts"] = sparse.csr_matrix(layer)
    _refuse(
        adata,
        ValueError,
        r"adata.layers\['counts'\] holds 3 NaN and 1 infinite values \(and 1 negative\)",
        layer="counts",
    )
    adata.layers["counts"] = sparse.csr_matrix(np.abs(np.nan_to_num(layer, posinf=0)))
    _passes_checks(adata, layer="counts")


def test_negative_integers_are_refused(small, no_prepare):
    adata = small.copy()
    X = adata.X.toarray().astype(np.int64)
    X[4, 4] = -3
    adata.X = X
    _refuse(adata, ValueError, "adata.X holds 1 negative values")


def test_non_numeric_or_missing_matrix(small, no_prepare):
    adata = small.copy()
    adata.X = adata.X.toarray().astype(str)
    _refuse(adata, ValueError, "adata.X holds <U.* values; the expression matrix must be numeric")
    empty = ad.AnnData(obs=small.obs.copy(), var=small.var.copy())
    with pytest.raises(ValueError, match="adata.X is None"):
        fal.tl.refine(empty, "coarse", N_FINE)
    assert set(empty.obs.columns) == set(small.obs.columns)


@pytest.mark.parametrize(("bad", "what"), [(np.nan, "2 NaN"), (np.inf, "2 infinite")])
def test_use_rep_with_nan_or_inf(small, no_prepare, bad, what):
    adata = small.copy()
    rep = np.random.default_rng(0).normal(size=(adata.n_obs, 5))
    rep[[1, 2], 0] = bad
    adata.obsm["X_emb"] = rep
    _refuse(adata, ValueError, f"use_rep='X_emb': adata.obsm\\['X_emb'\\] holds {what} values", use_rep="X_emb")
    adata.obsm["X_emb"] = np.nan_to_num(rep, nan=0.0, posinf=0.0)
    _passes_checks(adata, use_rep="X_emb")


def test_use_rep_sparse_or_non_numeric(small, no_prepare):
    adata = small.copy()
    adata.obsm["X_sp"] = sparse.csr_matrix(np.ones((adata.n_obs, 3)))
    _refuse(adata, ValueError, "X_sp.*sparse", use_rep="X_sp")
    adata.obsm["X_str"] = np.full((adata.n_obs, 2), "a")
    _refuse(adata, ValueError, "X_str.*numeric", use_rep="X_str")


# ----------------------------------------------------------------------------------------------- 2. numpy integers

INT_ARGS = {
    "n_neighbors": 10,
    "n_top_genes": 100,
    "n_comps": 10,
    "n_comps_within": 5,
    "n_epochs": 2,
    "batch_size": 64,
    "relation_every": 5,
    "random_state": 3,
}


def test_numpy_integers_work_end_to_end(small, tmp_path):
    common = dict(copy=True, accelerator="cpu", show_progress=False)
    plain = fal.tl.refine(small, "coarse", N_FINE, hidden=(16, 16), **INT_ARGS, **common)
    numpy_ints = {k: np.int64(v) for k, v in INT_ARGS.items()}
    hidden = np.array([16, 16], dtype=np.int32)
    out = fal.tl.refine(small, "coarse", np.int64(N_FINE), hidden=hidden, **numpy_ints, **common)
    _check_valid_output(out, n_fine=N_FINE)
    assert out.obs["falcon"].astype(str).tolist() == plain.obs["falcon"].astype(str).tolist()
    np.testing.assert_array_equal(out.obsm["falcon_probs"], plain.obsm["falcon_probs"])
    out.write_h5ad(tmp_path / "out.h5ad")  # numpy ints in uns params are writable
    assert ad.read_h5ad(tmp_path / "out.h5ad").uns["falcon"]["params"]["n_epochs"] == 2


@pytest.mark.parametrize("name", ["n_fine", *INT_ARGS, "hidden"])
def test_bools_are_not_ints(small, no_prepare, name):
    if name == "n_fine":
        _refuse(small.copy(), TypeError, "n_fine", "coarse", True)
    elif name == "hidden":
        _refuse(small.copy(), ValueError, "hidden", hidden=(64, True))
    else:
        _refuse(small.copy(), TypeError, f"^{name}=True must be an int", **{name: True})


# ----------------------------------------------------------------------------------------------- 3. written keys


@pytest.mark.parametrize("suffix", ["", "_confidence", "_outside_parent", "_warm_start", "_coarse"])
@pytest.mark.parametrize("key_added", ["falcon", "sub"])
def test_coarse_or_batch_key_that_refine_would_overwrite(small, no_prepare, suffix, key_added):
    adata = small.copy()
    written = f"{key_added}{suffix}"
    adata.obs[written] = adata.obs["coarse"]
    _refuse(
        adata,
        ValueError,
        f"key_added='{key_added}' would overwrite the coarse labels",
        written,
        N_FINE,
        key_added=key_added,
    )
    adata.obs[written] = np.repeat(["b1", "b2"], adata.n_obs // 2)
    _refuse(adata, ValueError, f"batch_key='{written}' is one of them", batch_key=written, key_added=key_added)


def test_keys_of_another_key_added_are_fine(small, no_prepare):
    adata = small.copy()
    adata.obs["falcon_confidence"] = adata.obs["coarse"]
    adata.obs["falcon_warm_start"] = np.repeat(["b1", "b2"], adata.n_obs // 2)
    _passes_checks(adata, "falcon_confidence", N_FINE, batch_key="falcon_warm_start", key_added="sub")
    # FalconModel.fit writes nothing: any column names are fine
    with pytest.raises(AssertionError, match=PASSED_CHECKS):
        fal.FalconModel(adata, "falcon_confidence", batch_key="falcon_warm_start").fit(N_FINE)


# ----------------------------------------------------------------------------------------------- 4./5. coarse labels


def test_children_prior_int_keys_on_int_labels(small, no_prepare):
    adata = small.copy()
    adata.obs["c_int"] = adata.obs["coarse"].cat.codes.astype(int)
    _passes_checks(adata, "c_int", N_FINE, children_prior={0: 1, 1: 2, 2: 3})
    _passes_checks(adata, "c_int", N_FINE, children_prior={np.int64(0): 1, 1: np.int64(2), "2": 3})


@pytest.mark.parametrize(
    ("prior", "match"),
    [
        ({"C0": 1, "C1": 2, "C2": 2, "C7": 1}, r"not coarse classes .*\['C7'\]"),
        ({"C0": 1, "C1": 2, "c2": 3}, r"not coarse classes .*\['c2'\]"),
        ({"C0": 1, "C1": 2, "C2": "3"}, "whole numbers"),
        ({"C0": 1, "C1": 2, "C2": None}, "whole numbers"),
        ({"C0": 1.5, "C1": 1.5, "C2": 3}, "whole numbers"),
    ],
    ids=["unknown", "case", "str-count", "none-count", "fraction"],
)
def test_children_prior_bad_keys_and_counts(small, no_prepare, prior, match):
    _refuse(small.copy(), ValueError, f"children_prior.*{match}|{match}", children_prior=prior)


def test_children_prior_key_twice(small, no_prepare):
    adata = small.copy()
    adata.obs["c_int"] = adata.obs["coarse"].cat.codes.astype(int)
    _refuse(
        adata,
        ValueError,
        "children_prior has the key '0' twice",
        "c_int",
        N_FINE,
        children_prior={0: 1, "0": 1, 1: 2, 2: 2},
    )


def test_coarse_labels_mixing_int_and_str(small, no_prepare):
    adata = small.copy()
    mixed = np.array([1, "1", 2], dtype=object)[np.arange(adata.n_obs) % 3]
    adata.obs["mixed"] = pd.Series(mixed, index=adata.obs_names, dtype=object)
    _refuse(
        adata, ValueError, r"adata.obs\['mixed'\] mixes labels .*(1 and '1'|'1' and 1).*astype\(str\)", "mixed", N_FINE
    )


# ----------------------------------------------------------------------------------------------- 6. other arguments


def test_backed_anndata(small, no_prepare, tmp_path):
    """A backed AnnData is read in chunks; what cannot work on it is refused with the fix (tests/pp/test_streamed)."""
    path = tmp_path / "small.h5ad"
    small.write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    try:
        with pytest.raises(ValueError, match=r"copy=True with a backed adata.*adata.to_memory\(\)"):
            fal.tl.refine(backed, "coarse", N_FINE, copy=True)
        with pytest.raises(ValueError, match=r"model_input='hvg'.*backed.*model_input='pca'"):
            fal.tl.refine(backed, "coarse", N_FINE, model_input="hvg")
        assert "falcon" not in backed.obs
    finally:
        backed.file.close()


def test_one_gene(small, no_prepare):
    adata = small[:, :1].copy()
    _refuse(adata, ValueError, "1 gene.*at least 2 genes")
    adata.obsm["X_emb"] = np.random.default_rng(0).normal(size=(adata.n_obs, 4))
    _passes_checks(adata, use_rep="X_emb")  # genes do not matter with an embedding


BAD = [
    ("random_state", None, TypeError),
    ("random_state", -1, ValueError),
    ("random_state", 1.0, TypeError),
    ("hidden", (64, 0), ValueError),
    ("hidden", (64, -1), ValueError),
    ("hidden", (64, 2.5), ValueError),
    ("hidden", "64", TypeError),
    ("hidden", 64, TypeError),
    ("temperature", 0, ValueError),
    ("temperature", -0.5, ValueError),
    ("temperature", float("nan"), ValueError),
    ("n_epochs", 2.5, TypeError),
    ("n_epochs", 0, ValueError),
    ("relation_every", 0, ValueError),
    ("soft_fraction", -0.1, ValueError),
    ("soft_fraction", 1.5, ValueError),
    ("n_comps_within", -1, ValueError),
    ("n_comps", 1, ValueError),
    ("n_top_genes", 1, ValueError),
    ("copy", "no", TypeError),
    ("copy", 0, TypeError),
    ("guard_warm_start", "yes", TypeError),
    ("learn_relation", 1, TypeError),
    ("return_model", None, TypeError),
    ("show_progress", "yes", TypeError),
    ("lr", 0, ValueError),
    ("lr", -1e-3, ValueError),
    ("lr", float("inf"), ValueError),
    ("lr", "fast", TypeError),
    ("batch_size", 0, ValueError),
    ("batch_size", 64.0, TypeError),
    ("lambda_coarse", -1, ValueError),
    ("lambda_fine", -0.1, ValueError),
    ("lambda_reg", float("nan"), ValueError),
    ("lambda_relation", -1e-3, ValueError),
    ("children_prior", ["a"], ValueError),
    ("layer", ["a"], TypeError),
]


@pytest.mark.parametrize(("name", "value", "exc"), BAD, ids=[f"{n}={v!r}" for n, v, _ in BAD])
def test_bad_argument(small, no_prepare, name, value, exc):
    err = _refuse(small.copy(), exc, f"^{name}=", **{name: value})
    assert isinstance(err, exc)


GOOD = [
    ("lr", 1),
    ("lr", np.float32(1e-3)),
    ("soft_fraction", 0),
    ("soft_fraction", 1.0),
    ("n_comps_within", 0),
    ("n_epochs", None),
    ("lambda_reg", 0),
    ("copy", np.bool_(True)),
    ("hidden", []),
    ("show_progress", False),
]


@pytest.mark.parametrize(("name", "value"), GOOD, ids=[f"{n}={v!r}" for n, v in GOOD])
def test_edge_values_accepted(small, no_prepare, name, value):
    _passes_checks(small.copy(), **{name: value})


# ----------------------------------------------------------------------------------------------- 7. divergence


def test_restricted_probs_always_picks_an_own_child():
    relation = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], dtype=bool)  # fine x coarse
    coarse = np.array([0, 0, 0, 1])
    probs = np.array(
        [
            [0.1, 0.2, 0.3, 0.4],  # ordinary
            [0.0, 0.0, 1.0, 0.0],  # all mass on a foreign class
            [np.nan, np.nan, np.nan, np.nan],  # diverged
            [0.3, 0.5, np.nan, 0.2],  # NaN among its own children
        ],
        dtype=np.float32,
    )
    r = restricted_probs(probs, relation, coarse)
    assert np.all(np.isfinite(r))
    np.testing.assert_allclose(r.sum(axis=1), 1.0, rtol=1e-6)
    own = relation[:, coarse].T
    assert own[np.arange(4), r.argmax(axis=1)].all()
    assert (r[~own] == 0).all()
    np.testing.assert_allclose(r[0], [1 / 3, 2 / 3, 0, 0], rtol=1e-6)  # unchanged for ordinary rows
    np.testing.assert_array_equal(r[1], [0.5, 0.5, 0, 0])  # uniform over the own children
    np.testing.assert_array_equal(r[2], [0.5, 0.5, 0, 0])
    np.testing.assert_array_equal(r[3], [0, 0, 0, 1])  # NaN counts as 0: the own child with mass wins


def _patched_training(monkeypatch, change):
    real = refine_module.train_falcon

    def patched(model, X, coarse, *args, **kwargs):
        result = real(model, X, coarse, *args, **kwargs)
        change(result, coarse)
        return result

    monkeypatch.setattr(refine_module, "train_falcon", patched)


def test_foreign_mass_still_gives_own_children(small, monkeypatch):
    def foreign(result, coarse):
        rows = np.flatnonzero(coarse == 0)
        foreign_child = np.flatnonzero(result.relation[:, 1])[0]
        result.probs[rows] = 0
        result.probs[rows, foreign_child] = 1

    _patched_training(monkeypatch, foreign)
    with scanpy_log() as log:
        out = fal.tl.refine(small, "coarse", N_FINE, copy=True, guard_warm_start=False, **{**FAST, "n_epochs": 2})
    _check_valid_output(out, n_fine=N_FINE)
    in_c0 = (out.obs["coarse"] == "C0").to_numpy()
    assert out.obs.loc[in_c0, "falcon_outside_parent"].all()
    assert "gave no probability to any child" in log.getvalue() and "smaller lr" in log.getvalue()


@pytest.mark.parametrize(("where", "word"), [("probs", "probabilities"), ("loss", "loss")])
def test_non_finite_training_raises_and_writes_nothing(small, monkeypatch, where, word):
    def poison(result, coarse):
        if where == "probs":
            result.probs[:5] = np.nan
        else:
            result.history[-1]["loss"] = float("inf")

    _patched_training(monkeypatch, poison)
    adata = small.copy()
    err = _refuse(
        adata, RuntimeError, f"diverged \\(non-finite {word}\\).*smaller lr", lr=0.5, **{**FAST, "n_epochs": 2}
    )
    assert "lr=0.05" in str(err)


@pytest.mark.parametrize("lr", [10.0, 1e3])
def test_large_lr_never_writes_foreign_labels(small, lr):
    try:
        out = fal.tl.refine(small, "coarse", N_FINE, copy=True, lr=lr, **{**FAST, "n_epochs": 3})
    except RuntimeError as err:
        assert "smaller lr" in str(err)
    else:
        _check_valid_output(out, n_fine=N_FINE)
