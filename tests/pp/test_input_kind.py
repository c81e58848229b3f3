"""Input kinds: detection of counts, normalised and log-normalised matrices, the ``input_kind`` override, end to end."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
from scipy import sparse

import falcon_sc as fal
from falcon_sc import metrics
from falcon_sc.pp import cell_features, detect_input_kind, prepare
from falcon_sc.pp._input_kind import resolve_input_kind

from ..conftest import FAST, scanpy_log, simulate

FORMATS = pytest.mark.parametrize("fmt", [np.asarray, sparse.csr_matrix], ids=["dense", "csr"])


def _counts(n_cells=300, n_genes=200, seed=0, scale=1.0):
    """Negative-binomial-like counts: gene means spread over orders of magnitude, cell depths varying."""
    rng = np.random.default_rng(seed)
    mean = rng.lognormal(0.0, 1.5, size=n_genes) * scale
    depth = rng.lognormal(0.0, 0.5, size=(n_cells, 1))
    X = rng.poisson(mean * depth * rng.gamma(2.0, 0.5, size=(n_cells, n_genes))).astype(np.float32)
    return X[X.sum(axis=1) > 0]


def _scaled(X, target):
    X = np.asarray(X, dtype=np.float64)
    return X / np.maximum(X.sum(axis=1, keepdims=True), 1e-12) * target


def _tpm(X, seed=0):
    lengths = np.random.default_rng(seed).lognormal(0.0, 0.5, size=X.shape[1])  # relative gene lengths
    return _scaled(np.asarray(X) / lengths, 1e6)


MATRICES = {
    # name: (matrix, expected kind)
    "counts": (lambda: _counts(), "counts"),
    "small counts": (lambda: _counts(scale=0.05), "counts"),
    "tiny counts": (lambda: _counts(n_cells=4, n_genes=6, seed=1), "counts"),
    "cpm": (lambda: _scaled(_counts(), 1e6), "normalized"),
    "tpm": (lambda: _tpm(_counts()), "normalized"),
    "tpm, gene subset": (lambda: _tpm(_counts())[:, :50], "normalized"),
    "normalize_total 1e4": (lambda: _scaled(_counts(), 1e4), "normalized"),
    "normalize_total 1e4, gene subset": (lambda: _scaled(_counts(), 1e4)[:, :50], "normalized"),
    "proportions": (lambda: _scaled(_counts(), 1.0), "normalized"),
    "lognorm": (lambda: np.log1p(_scaled(_counts(), 1e4)), "lognorm"),
    "lognorm, gene subset": (lambda: np.log1p(_scaled(_counts(), 1e4))[:, :50], "lognorm"),
    "lognorm, tiny": (lambda: np.log1p(_scaled(_counts(n_cells=5, n_genes=10), 1e4)), "lognorm"),
    "log cpm": (lambda: np.log1p(_scaled(_counts(), 1e6)), "lognorm"),
    "log2(tpm + 1)": (lambda: np.log2(_tpm(_counts()) + 1), "lognorm"),
}


@FORMATS
@pytest.mark.parametrize("name", list(MATRICES))
def test_detect_input_kind(name, fmt):
    make, expected = MATRICES[name]
    X = make().astype(np.float32)
    assert detect_input_kind(fmt(X)) == expected


@FORMATS
def test_detect_ignores_all_zero_rows(fmt):
    X = _counts()
    X[:20] = 0
    assert detect_input_kind(fmt(X)) == "counts"
    assert detect_input_kind(fmt(_scaled(X, 1e6).astype(np.float32))) == "normalized"
    assert detect_input_kind(fmt(np.log1p(_scaled(X, 1e4)).astype(np.float32))) == "lognorm"


def test_detect_integer_values_with_equal_row_sums_are_normalised():
    # e.g. counts rescaled to integers summing to the same total in every cell
    rng = np.random.default_rng(0)
    X = np.stack([rng.multinomial(1000, np.full(50, 1 / 50)) for _ in range(30)]).astype(np.float32)
    assert detect_input_kind(X) == "normalized"
    assert detect_input_kind(X[:4]) == "counts"  # too few cells to tell equal sums from chance


def test_detect_large_tpm_is_not_logged():
    # the case that crashed scanpy's HVG selection: non-integer values in the tens of thousands, logged before
    X = _tpm(_counts(scale=20.0)).astype(np.float32)
    assert X.max() > 1e4
    assert detect_input_kind(sparse.csr_matrix(X)) == "normalized"


@FORMATS
def test_detect_refuses_negative_and_non_finite_values(fmt):
    X = _counts()
    with pytest.raises(ValueError, match="negative values"):
        detect_input_kind(fmt(X - X.mean(axis=0)))  # scaled/centred data
    X[3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        detect_input_kind(fmt(X))


@pytest.mark.parametrize(
    ("X", "kwargs", "error", "match"),
    [
        (np.ones(5), {}, ValueError, "X must be a 2-d cells x genes matrix.*shape \\(5,\\)"),
        ([[1, 2], [3, 4]], {}, ValueError, "X must be a 2-d cells x genes matrix.*list"),
        (np.ones((3, 3)), {"n_probe": 0}, ValueError, "n_probe=0 must be an int >= 1"),
        (np.ones((3, 3)), {"n_probe": 2.5}, TypeError, "n_probe=2.5 must be an int, got float"),
        (np.ones((3, 3)), {"n_probe": True}, TypeError, "n_probe=True must be an int, got bool"),
    ],
)
def test_detect_refuses_bad_arguments(X, kwargs, error, match):
    """Scalar arguments in the package's style: ``TypeError`` for the wrong type, ``ValueError`` out of range."""
    with pytest.raises(error, match=match):
        detect_input_kind(X, **kwargs)


def test_detect_accepts_a_numpy_int_n_probe():
    assert detect_input_kind(_counts(), n_probe=np.int64(50)) == "counts"


def test_prepare_refuses_a_matrix():
    with pytest.raises(TypeError, match="adata must be an AnnData, got ndarray"):
        prepare(_counts())


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n_top_genes": 1}, ValueError, "n_top_genes=1 must be an int >= 2"),
        ({"n_top_genes": 50.0}, TypeError, "n_top_genes=50.0 must be an int, got float"),
        ({"n_comps": 1}, ValueError, "n_comps=1 must be an int >= 2"),
        ({"n_comps": "5"}, TypeError, "n_comps='5' must be an int, got str"),
        ({"values_checked": 1}, TypeError, "values_checked=1 must be True or False"),
    ],
)
def test_prepare_refuses_bad_scalars(kwargs, error, match):
    with pytest.raises(error, match=match):
        prepare(_adata(_counts()), **kwargs)


# ------------------------------------------------------------------------------------------------ override


def _adata(X):
    adata = ad.AnnData(X=np.asarray(X, dtype=np.float32))
    adata.var_names = [f"g{i}" for i in range(adata.n_vars)]
    return adata


@pytest.mark.parametrize("override", ["counts", "normalized", "lognorm"])
def test_override_is_honoured(override):
    X = np.log1p(_scaled(_counts(), 1e4))  # detected as lognorm
    prep = prepare(_adata(X), n_top_genes=50, n_comps=5, input_kind=override)
    assert prep.input_kind == override
    assert prep.input_kind_detected == "lognorm"
    if override == "lognorm":
        np.testing.assert_allclose(prep.lognorm, _adata(X)[:, prep.genes].X)
    else:  # re-normalised and logged a second time
        assert prep.lognorm.max() < X.max()


def test_auto_records_detected_kind():
    prep = prepare(_adata(_scaled(_counts(), 1e6)), n_top_genes=50, n_comps=5)
    assert prep.input_kind == prep.input_kind_detected == "normalized"


@pytest.mark.parametrize("bad", ["log", "raw", None, 1, "Counts"])
def test_bad_override_value(bad):
    adata = _adata(_counts())
    msg = "input_kind=.*must be one of 'auto', 'counts', 'normalized', 'lognorm'"
    with pytest.raises(ValueError, match=msg):
        prepare(adata, input_kind=bad)
    with pytest.raises(ValueError, match=msg):
        cell_features(adata, np.zeros(adata.n_obs, dtype=np.int64), input_kind=bad)
    adata.obs["coarse"] = np.repeat(["a", "b"], [adata.n_obs // 2, adata.n_obs - adata.n_obs // 2])
    with pytest.raises(ValueError, match=msg):
        fal.tl.refine(adata, "coarse", 3, input_kind=bad, **FAST)


def test_override_with_use_rep_is_refused():
    adata = _adata(_counts())
    adata.obs["coarse"] = np.repeat(["a", "b"], [adata.n_obs // 2, adata.n_obs - adata.n_obs // 2])
    adata.obsm["X_emb"] = np.random.default_rng(0).normal(size=(adata.n_obs, 5))
    with pytest.raises(ValueError, match="input_kind='counts'.*use_rep"):
        fal.tl.refine(adata, "coarse", 3, use_rep="X_emb", input_kind="counts", **FAST)


@pytest.mark.parametrize("override", ["counts", "normalized", "lognorm"])
def test_override_on_negative_values_errors(override):
    X = np.log1p(_scaled(_counts(), 1e4))
    X = X - X.mean(axis=0)
    with pytest.raises(ValueError, match=f"input_kind='{override}'.*negative"):
        prepare(_adata(X), input_kind=override)


def test_lognorm_override_on_large_values_errors():
    with pytest.raises(ValueError, match="input_kind='lognorm'.*input_kind='normalized'"):
        prepare(_adata(_tpm(_counts())), input_kind="lognorm")


def test_values_checked_skips_only_the_full_scan():
    X = np.random.default_rng(0).poisson(2.0, size=(2500, 20)).astype(np.float32)
    probed = np.random.default_rng(0).choice(X.shape[0], size=2000, replace=False)
    X[np.setdiff1d(np.arange(X.shape[0]), probed)[0], 3] = np.nan  # a row the probe does not see
    with pytest.raises(ValueError, match="adata.X holds 1 NaN values"):
        resolve_input_kind(X)
    # the caller says it checked X: the full scan is skipped; the probed rows are still checked
    assert resolve_input_kind(X, values_checked=True)[0] == "counts"
    X[probed[0], 0] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        resolve_input_kind(X, values_checked=True)


def test_lognorm_probe_missing_large_rows_errors():
    X = np.log1p(_scaled(_counts(), 1e4)).astype(np.float32)
    X[-1] = _tpm(_counts())[0]  # one not-logged row the probe may miss
    seed = next(s for s in range(100) if detect_input_kind(X, n_probe=20, random_state=s) == "lognorm")
    with pytest.raises(ValueError, match="other rows.*input_kind='normalized'"):
        resolve_input_kind(X, n_probe=20, random_state=seed)


# ------------------------------------------------------------------------------------------- preprocessing


@pytest.fixture(scope="module")
def sim_kinds():
    """The same simulated cells as counts, TPM (with gene lengths), CPM and log1p-normalised values."""
    counts = simulate()
    X = counts.X.toarray().astype(np.float64)
    out = {"counts": counts}
    for name, values in {
        "tpm": _tpm(X, seed=1),
        "cpm": _scaled(X, 1e6),
        "lognorm": np.log1p(_scaled(X, 1e4)),
    }.items():
        adata = counts.copy()
        adata.X = sparse.csr_matrix(values.astype(np.float32))
        out[name] = adata
    return out


def test_prepare_counts_and_cpm_give_the_same_embedding(sim_kinds):
    a = prepare(sim_kinds["counts"], n_top_genes=200, n_comps=20)
    b = prepare(sim_kinds["cpm"], n_top_genes=200, n_comps=20)
    assert (a.input_kind, b.input_kind) == ("counts", "normalized")
    assert list(a.genes) == list(b.genes)
    np.testing.assert_allclose(b.embedding, a.embedding, atol=1e-3 * np.abs(a.embedding).max())


def test_prepare_logs_kind_and_action(sim_kinds):
    with scanpy_log(verbosity=2) as log:
        prepare(sim_kinds["tpm"], n_top_genes=200, n_comps=20)
    text = log.getvalue()
    assert "normalised, not logged" in text and "row sums ~1e+06" in text and "rescaled to 1e4 per cell" in text


@pytest.fixture(scope="module")
def refined_kinds(sim_kinds):
    """ARI of FALCON's fine labels with the simulated ones, and the stored parameters, for every input kind."""
    out = {}
    for name, adata in sim_kinds.items():
        res = fal.tl.refine(adata, "coarse", 6, copy=True, **FAST)
        out[name] = (metrics.ari(res.obs["fine"], res.obs["falcon"]), res.uns["falcon"]["params"])
    return out


@pytest.mark.parametrize(
    ("name", "kind"), [("counts", "counts"), ("tpm", "normalized"), ("cpm", "normalized"), ("lognorm", "lognorm")]
)
def test_refine_recovers_fine_labels_on_every_kind(refined_kinds, name, kind):
    ari, params = refined_kinds[name]
    assert ari > 0.9
    assert params["input_kind"] == "auto"
    assert params["input_kind_detected"] == kind


def test_refine_on_tpm_as_good_as_on_counts(refined_kinds):
    assert refined_kinds["tpm"][0] >= refined_kinds["counts"][0] - 0.03


def test_refine_stores_override(sim_kinds):
    adata = sim_kinds["lognorm"][:300].copy()
    fal.tl.refine(adata, "coarse", 6, input_kind="lognorm", **{**FAST, "n_epochs": 1})
    params = adata.uns["falcon"]["params"]
    assert (params["input_kind"], params["input_kind_detected"]) == ("lognorm", "lognorm")
