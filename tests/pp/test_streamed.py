"""Out-of-core input (backed ``.h5ad``): the chunked preprocessing equals the in-memory one, refine's labels too."""

from __future__ import annotations

import hashlib

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
from scipy import sparse

import falcon_sc as fal
from falcon_sc.pp import _chunks, _streamed
from falcon_sc.pp._hvg import seurat_hvg
from falcon_sc.pp._streamed import GeneStats

from ..conftest import FAST, simulate

#: small chunks, so that every pass reads several of them (and chunk borders cut through classes and batches)
CHUNK = 170


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of :data:`CHUNK` cells, and at most 4 second moments per pass (several passes with batches)."""
    monkeypatch.setattr(_chunks, "CHUNK_CELLS", CHUNK)
    monkeypatch.setattr(_chunks.row_blocks, "__defaults__", (CHUNK,))
    monkeypatch.setattr(_streamed, "MAX_COVARIANCES", 4)


def _backed(adata, tmp_path, name="cells.h5ad"):
    path = tmp_path / name
    adata.write_h5ad(path)
    return ad.read_h5ad(path, backed="r"), path


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("n_batches", [1, 3])
def test_chunked_statistics_equal_in_memory(small_chunks, tmp_path, n_batches):
    adata = simulate(n_batches=n_batches, n_cells=900, random_state=1)
    backed, _ = _backed(adata, tmp_path)
    try:
        coarse = adata.obs["coarse"].cat.codes.to_numpy().astype(np.int64)
        kw = dict(n_top_genes=120, n_comps=12, n_comps_within=6, batch_key="batch" if n_batches > 1 else None)
        mem_t, mem_f = fal.pp.FeatureTransform.fit(adata, coarse, **kw)
        out_t, out_f = fal.pp.FeatureTransform.fit(backed, coarse, **kw)
        np.testing.assert_array_equal(mem_t.genes, out_t.genes)  # the same HVGs
        np.testing.assert_allclose(out_t.pca.mean, mem_t.pca.mean, rtol=0, atol=1e-5)
        np.testing.assert_allclose(out_t.pca.scale, mem_t.pca.scale, rtol=1e-4)
        np.testing.assert_allclose(out_t.pca.loadings, mem_t.pca.loadings, rtol=0, atol=1e-4)
        for a, b in zip(mem_t.within, out_t.within, strict=True):
            np.testing.assert_array_equal(a.batches, b.batches)
            np.testing.assert_allclose(b.pca.loadings, a.pca.loadings, rtol=0, atol=1e-4)
        # the in-memory batch means are float32 sums (scipy), the chunked ones float64: 1e-4 of the scale apart
        top = np.abs(mem_f.features).max()
        np.testing.assert_allclose(out_f.features, mem_f.features, rtol=0, atol=2e-4 * top)
        np.testing.assert_allclose(out_f.neighbour_space, mem_f.neighbour_space, rtol=0, atol=1e-3)
        assert out_f.prepared.input_kind == mem_f.prepared.input_kind == "counts"
    finally:
        backed.file.close()


@pytest.mark.parametrize("batched", [False, True])
def test_hvg_from_chunk_sums_equals_scanpy(small_chunks, batched):
    adata = simulate(n_batches=3, n_cells=600, random_state=2)
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    batches = adata.obs["batch"].cat.codes.to_numpy().astype(np.int64) if batched else np.zeros(600, dtype=np.int64)
    stats = GeneStats.gather(_Lazy(adata.X), "lognorm", batches, int(batches.max()) + 1)
    got = seurat_hvg(stats.expm1_sum, stats.expm1_sq, stats.n_cells, stats.expressed, 100, batched, adata.var_names)
    ref = sc.pp.highly_variable_genes(
        adata, n_top_genes=100, flavor="seurat", batch_key="batch" if batched else None, inplace=False
    )
    np.testing.assert_array_equal(got, ref["highly_variable"].to_numpy())


class _Lazy:
    """A matrix read only by row slices (as a backed one is)."""

    def __init__(self, X):
        self.X, self.shape = X, X.shape

    def __getitem__(self, key):
        assert isinstance(key, slice)
        return self.X[key]


def test_backed_refine_same_labels_and_file_untouched(small_chunks, tmp_path):
    adata = simulate(n_cells=800, random_state=3)
    backed, path = _backed(adata, tmp_path)
    before = _digest(path)
    try:
        fal.tl.refine(adata, "coarse", 6, **FAST)
        fal.tl.refine(backed, "coarse", 6, **FAST)
        assert backed.isbacked
        np.testing.assert_array_equal(backed.obs["falcon"].astype(str), adata.obs["falcon"].astype(str))
        assert backed.obsm["falcon_probs"].shape == (800, 6)
        assert set(backed.uns["falcon"]) >= {"params", "relations"}
    finally:
        backed.file.close()
    assert _digest(path) == before  # nothing is written into the file


def test_out_of_core_refusals(small_chunks, tmp_path):
    adata = simulate(n_cells=400, random_state=4)
    backed, path = _backed(adata, tmp_path)
    before = _digest(path)
    try:
        with pytest.raises(ValueError, match=r"copy=True with a backed adata.*to_memory"):
            fal.tl.refine(backed, "coarse", 6, copy=True, **FAST)
        with pytest.raises(ValueError, match=r"model_input='hvg'.*not kept in memory.*model_input='pca'"):
            fal.tl.refine(backed, "coarse", 6, model_input="hvg", **FAST)
        with pytest.raises(ValueError, match=r"backed.*refine_images needs it in memory.*to_memory"):
            fal.tl.refine_images(backed, "coarse", 6)
        model = fal.FalconModel(adata, "coarse", n_top_genes=200, n_comps=20).fit(6, n_epochs=2, show_progress=False)
        with pytest.raises(ValueError, match=r"out of core.*to_memory"):
            model.predict(backed)
        assert "falcon" not in backed.obs
    finally:
        backed.file.close()
    assert _digest(path) == before


def test_out_of_core_checks_read_chunks(small_chunks, tmp_path):
    """Bad values anywhere in a backed matrix are found by the chunked scan, with the in-memory messages."""
    adata = simulate(n_cells=400, random_state=5)
    X = adata.X.toarray()
    X[350, 3] = -1.0  # in the last chunk
    adata.X = sparse.csr_matrix(X)
    backed, _ = _backed(adata, tmp_path)
    try:
        with pytest.raises(ValueError, match="1 negative values"):
            fal.tl.refine(backed, "coarse", 6, **FAST)
    finally:
        backed.file.close()
    zero = ad.AnnData(X=np.zeros((400, 20), dtype=np.float32), obs=adata.obs[["coarse"]])
    backed, _ = _backed(zero, tmp_path, "zero.h5ad")  # dense storage: an h5py dataset
    try:
        with pytest.raises(fal.errors.DegenerateInputError, match="all zero"):
            fal.tl.refine(backed, "coarse", 6, **FAST)
    finally:
        backed.file.close()


def test_dask_matrix_same_as_in_memory(small_chunks):
    """A dask ``X`` is read through the same chunk reader; its (in-memory) chunks are never modified."""
    da = pytest.importorskip("dask.array")
    adata = simulate(n_cells=800, random_state=6)
    dense = adata.X.toarray()
    lazy = ad.AnnData(X=da.from_array(dense, chunks=(100, dense.shape[1])), obs=adata.obs.copy(), var=adata.var)
    fal.tl.refine(adata, "coarse", 6, **FAST)
    fal.tl.refine(lazy, "coarse", 6, **FAST)
    np.testing.assert_array_equal(lazy.obs["falcon"].astype(str), adata.obs["falcon"].astype(str))
    np.testing.assert_array_equal(dense, adata.X.toarray())  # the array behind the dask matrix is untouched
    with pytest.raises(ValueError, match=r"model_input='hvg'.*X is a dask array"):
        fal.tl.refine(lazy, "coarse", 6, model_input="hvg", **FAST)
