"""FeatureTransform: the fitted preprocessing replays the exact inputs, on the fitted and on new cells."""

from __future__ import annotations

import numpy as np
import pytest

import falcon_sc.pp._input_kind as input_kind_module
import falcon_sc.pp._transform as transform_module
from falcon_sc.pp import (
    FeatureTransform,
    ScaledPCA,
    batch_scaled_pca,
    cell_features,
    prepare,
    unit_rows,
    within_class_pca,
)

from ..conftest import simulate


@pytest.fixture(scope="module")
def batched():
    adata = simulate(n_cells=800, n_batches=2)
    coarse = adata.obs["coarse"].cat.codes.to_numpy().astype(np.int64)
    return adata, coarse


@pytest.mark.parametrize("model_input", ["pca", "hvg"])
def test_transform_of_the_fitted_cells_equals_the_fitted_inputs(batched, model_input):
    adata, coarse = batched
    kwargs = dict(batch_key="batch", n_top_genes=100, n_comps=10, n_comps_within=5, model_input=model_input)
    transform, feats = FeatureTransform.fit(adata, coarse, **kwargs)
    again = transform.transform(adata, coarse)
    expected = feats.features.toarray() if hasattr(feats.features, "toarray") else feats.features
    got = again.toarray() if hasattr(again, "toarray") else again
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # cell_features is the same fit
    np.testing.assert_array_equal(
        np.asarray(cell_features(adata, coarse, **kwargs).neighbour_space), feats.neighbour_space
    )


def test_state_round_trip_and_gene_order(batched):
    adata, coarse = batched
    transform, feats = FeatureTransform.fit(adata, coarse, batch_key="batch", n_top_genes=100, n_comps=10)
    settings, arrays = transform.state()
    rebuilt = FeatureTransform.from_state(settings, arrays)
    shuffled = adata[:, np.random.default_rng(0).permutation(adata.n_vars)].copy()  # genes matched by name
    np.testing.assert_allclose(rebuilt.transform(shuffled, coarse), feats.features, rtol=1e-4, atol=1e-4)


def test_unseen_batch_is_standardised_within_itself(batched):
    adata, coarse = batched
    transform, feats = FeatureTransform.fit(adata, coarse, batch_key="batch", n_top_genes=100, n_comps=10)
    renamed = adata.copy()
    renamed.obs["batch"] = "new_" + renamed.obs["batch"].astype(str)
    # each renamed batch holds the same cells, so its own statistics are the fitted ones
    np.testing.assert_allclose(transform.transform(renamed, coarse), feats.features, rtol=1e-4, atol=1e-4)


def test_scaled_pca_replays_on_new_rows():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 30)) + np.repeat([[0.0], [3.0]], 250, axis=0)
    batches = np.repeat([0, 1], 250)
    pca = ScaledPCA.fit(X, batches, 5)
    full = pca.transform(X, batches)
    np.testing.assert_allclose(pca.transform(X[::7], batches[::7]), full[::7], rtol=1e-6)
    assert pca.n_comps == 5 and pca.loadings.shape == (30, 5)


# ------------------------------------------------------------------------------------------------ bad inputs

X_SMALL = np.random.default_rng(0).poisson(2.0, size=(30, 8)).astype(np.float32)
ZEROS = np.zeros(30, dtype=np.int64)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: batch_scaled_pca(X_SMALL, ZEROS[:5], 2), "batches must hold one code per row of X \\(30\\)"),
        (lambda: batch_scaled_pca(X_SMALL, ZEROS.astype(float), 2), "batches must hold non-negative integer codes"),
        (lambda: batch_scaled_pca(X_SMALL, ZEROS - 1, 2), "batches .* minimum -1"),
        (lambda: batch_scaled_pca(X_SMALL, ZEROS, 0), "n_comps=0 must be an int >= 1"),
        (lambda: batch_scaled_pca(X_SMALL[0], ZEROS, 2), "X must be a 2-d cells x genes matrix"),
        (lambda: ScaledPCA.fit(X_SMALL, ZEROS[:3], 2), "batches must hold one code per row of X"),
        (lambda: within_class_pca(X_SMALL, ZEROS[:5], ZEROS, 2), "groups must hold one code per row of X"),
        (lambda: within_class_pca(X_SMALL, ZEROS, ZEROS[:3], 2), "batches must hold one code per row of X"),
        (lambda: within_class_pca(X_SMALL, ZEROS.astype(str), ZEROS, 2), "groups must hold non-negative integer"),
        (lambda: within_class_pca(X_SMALL, ZEROS, ZEROS, 0), "n_comps=0 must be an int >= 1"),
        (lambda: unit_rows(np.ones(3)), "X must be a 2-d array"),
    ],
)
def test_matrix_functions_refuse_bad_inputs(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: batch_scaled_pca(X_SMALL, ZEROS, 2.0), "n_comps=2.0 must be an int, got float"),
        (lambda: ScaledPCA.fit(X_SMALL, ZEROS, True), "n_comps=True must be an int, got bool"),
        (lambda: within_class_pca(X_SMALL, ZEROS, ZEROS, "3"), "n_comps='3' must be an int, got str"),
    ],
)
def test_matrix_functions_refuse_non_int_n_comps_with_a_type_error(call, match):
    with pytest.raises(TypeError, match=match):
        call()


def test_numpy_int_n_comps_is_accepted():
    np.testing.assert_array_equal(batch_scaled_pca(X_SMALL, ZEROS, np.int64(3)), batch_scaled_pca(X_SMALL, ZEROS, 3))


def test_feature_fit_refuses_bad_inputs(batched):
    adata, coarse = batched
    for fit in (FeatureTransform.fit, cell_features):
        with pytest.raises(ValueError, match="coarse must hold one code per cell of adata \\(800\\)"):
            fit(adata, coarse[:10])
        with pytest.raises(KeyError, match="use_rep='X_nope' is not a key of adata.obsm"):
            fit(adata, coarse, use_rep="X_nope")
        with pytest.raises(ValueError, match="model_input='raw' must be one of 'pca', 'hvg'"):
            fit(adata, coarse, model_input="raw")
        with pytest.raises(TypeError, match="adata must be an AnnData"):
            fit(adata.X, coarse)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n_comps_within": -1}, ValueError, "n_comps_within=-1 must be an int >= 0"),
        ({"n_comps_within": 2.5}, TypeError, "n_comps_within=2.5 must be an int, got float"),
        ({"n_coarse": 0}, ValueError, "n_coarse=0 must be an int >= 1"),
        ({"values_checked": "yes"}, TypeError, "values_checked='yes' must be True or False"),
        ({"prepared": "p"}, TypeError, "prepared must be the Prepared output of falcon_sc.pp.prepare, got str"),
    ],
)
def test_feature_fit_refuses_bad_scalars(batched, kwargs, error, match):
    adata, coarse = batched
    with pytest.raises(error, match=match):
        FeatureTransform.fit(adata, coarse, **kwargs)


def _count_value_scans(monkeypatch):
    """Count the full scans of the expression matrix for bad values (``check_values`` as ``prepare`` reaches it)."""
    calls = []
    original = input_kind_module.check_values

    def counted(*args, **kwargs):
        calls.append(args[1] if len(args) > 1 else kwargs.get("source"))
        return original(*args, **kwargs)

    monkeypatch.setattr(input_kind_module, "check_values", counted)
    return calls


def test_values_checked_skips_the_scan_and_changes_nothing_else(batched, monkeypatch):
    adata, coarse = batched
    kwargs = dict(batch_key="batch", n_top_genes=100, n_comps=10, n_comps_within=5)
    calls = _count_value_scans(monkeypatch)
    _, scanned = FeatureTransform.fit(adata, coarse, **kwargs)
    assert calls == ["X"]  # one full scan per fit
    _, trusted = FeatureTransform.fit(adata, coarse, values_checked=True, **kwargs)
    assert calls == ["X"]  # none more
    np.testing.assert_array_equal(trusted.features, scanned.features)
    np.testing.assert_array_equal(trusted.neighbour_space, scanned.neighbour_space)
    prepare(adata, n_top_genes=100, n_comps=10, values_checked=True)
    assert calls == ["X"]


def test_prepared_is_reused_instead_of_preparing_again(batched, monkeypatch):
    adata, coarse = batched
    kwargs = dict(batch_key="batch", n_top_genes=100, n_comps=10)
    first_t, first = FeatureTransform.fit(adata, coarse, n_comps_within=0, **kwargs)
    fresh_t, fresh = FeatureTransform.fit(adata, coarse, n_comps_within=5, **kwargs)

    def no_prepare(*args, **kwargs):
        raise AssertionError("prepare must not run when prepared= is given")

    monkeypatch.setattr(transform_module, "prepare", no_prepare)
    reused_t, reused = FeatureTransform.fit(adata, coarse, n_comps_within=5, prepared=first.prepared, **kwargs)
    assert reused.prepared is first.prepared
    np.testing.assert_array_equal(reused.features, fresh.features)
    np.testing.assert_array_equal(reused.neighbour_space, fresh.neighbour_space)
    assert reused_t.state()[0] == fresh_t.state()[0]
    with pytest.raises(ValueError, match="prepared must come from falcon_sc.pp.prepare on this adata \\(10 cells\\)"):
        FeatureTransform.fit(adata[:10], coarse[:10], prepared=first.prepared, **kwargs)
    adata = adata.copy()
    adata.obsm["X_emb"] = first.prepared.embedding
    with pytest.raises(ValueError, match="prepared= .* cannot be combined with use_rep="):
        FeatureTransform.fit(adata, coarse, use_rep="X_emb", prepared=first.prepared)


def test_unfitted_transform_is_a_clear_error(batched):
    adata, coarse = batched
    with pytest.raises(RuntimeError, match="not fitted"):
        FeatureTransform().transform(adata, coarse)
