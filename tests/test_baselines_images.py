"""The baselines on images: ResNet-18 on random views, neighbours and k-means on the initial features."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData

import falcon_sc as fal
from falcon_sc.baselines import BASELINES, IMAGE_BASELINES, BaselineResult
from falcon_sc.baselines._neural import ImageViews, ResNetNetworks, image_neural_data
from falcon_sc.core.views import ViewConfig

N_FINE = 10
CROPS = ViewConfig(scale=(0.5, 1.0), flip=0.0)  # digits are not flip-invariant
#: a narrow ResNet and a few dozen steps: the whole file runs in about 20 s on 2 CPU cores
FAST = {"width": 8, "view": CROPS, "n_steps": 30, "accelerator": "cpu"}
NEURAL = ["erm", "scan_c", "sela", "ancor", "gml", "wcl"]


@pytest.fixture(scope="module")
def digits() -> AnnData:
    adata = fal.datasets.digits()
    return adata[np.random.default_rng(0).choice(adata.n_obs, 300, replace=False)].copy()


def run(name: str, adata: AnnData, **kwargs) -> BaselineResult:
    """A baseline on the images with the fast settings (``kmeans_within``: no training options; ``erm``: the truth)."""
    kwargs = {**FAST, **kwargs}
    if name == "kmeans_within":
        kwargs = {k: v for k, v in kwargs.items() if k not in ("view", "n_steps")}
    if name == "erm":
        kwargs.setdefault("fine_key", "fine")
    return BASELINES[name](adata, "coarse", N_FINE, random_state=0, **kwargs)


@pytest.fixture(scope="module")
def results(digits: AnnData) -> dict[str, BaselineResult]:
    before = digits.copy()
    out = {name: run(name, digits) for name in IMAGE_BASELINES}
    # adata untouched by every method
    np.testing.assert_array_equal(digits.X, before.X)
    pd.testing.assert_frame_equal(digits.obs, before.obs)
    assert list(digits.obsm) == [] and list(digits.layers) == [] and digits.uns.keys() == before.uns.keys()
    return out


def test_image_baselines_listed() -> None:
    assert set(IMAGE_BASELINES) == {"kmeans_within", *NEURAL}


@pytest.mark.parametrize("name", sorted(IMAGE_BASELINES))
def test_labels_respect_coarse_classes(results: dict[str, BaselineResult], digits: AnnData, name: str) -> None:
    res = results[name]
    assert res.labels.shape == (digits.n_obs,)
    # a head may leave a child empty (SeLa on 30 steps): never more classes than asked
    assert 3 < res.n_fine <= N_FINE
    coarse = digits.obs["coarse"].astype(str).to_numpy()
    assert set(res.relation) == set(res.labels)
    for fine, parent in res.relation.items():
        assert set(coarse[res.labels == fine]) == {parent}
        assert name == "erm" or fine.startswith(parent + "/")


@pytest.mark.parametrize("name", ["kmeans_within", "ancor", "gml", "wcl"])
def test_kmeans_read_outs_give_every_class(results: dict[str, BaselineResult], name: str) -> None:
    assert results[name].n_fine == N_FINE


def test_erm_clearly_beats_chance(results: dict[str, BaselineResult], digits: AnnData) -> None:
    # chance inside the coarse class is 1/3 or 1/4; 30 steps a fold reach 0.76 (measured), asserted with margin
    scores = fal.metrics.evaluate(digits.obs["fine"].astype(str), results["erm"].labels, coarse=digits.obs["coarse"])
    assert scores["accuracy"] > 0.6


def test_kmeans_within_on_images_is_the_bench_recipe(results: dict[str, BaselineResult], digits: AnnData) -> None:
    from falcon_sc.baselines import allot_clusters
    from falcon_sc.baselines.kmeans_within import kmeans_per_class
    from falcon_sc.models._images import image_array, initial_features

    space = initial_features(image_array(digits, None), None, "resnet18", 8, "cpu", 0)
    codes = digits.obs["coarse"].cat.codes.to_numpy()
    alloc = allot_clusters(np.bincount(codes), N_FINE)
    expected = kmeans_per_class(space, codes, list(digits.obs["coarse"].cat.categories), alloc, 0)
    np.testing.assert_array_equal(results["kmeans_within"].labels, expected.labels)


def test_deterministic(results: dict[str, BaselineResult], digits: AnnData) -> None:
    np.testing.assert_array_equal(run("scan_c", digits).labels, results["scan_c"].labels)


def test_image_data_and_views(digits: AnnData) -> None:
    data = image_neural_data(digits, "coarse", N_FINE, width=8, view=CROPS, accelerator="cpu")
    assert data.images and data.image_shape == (1, 8, 8)
    assert isinstance(data.networks, ResNetNetworks) and data.body_width == 64
    idx = np.arange(5)
    x = data.features.rows(idx)
    assert tuple(x.shape) == (5, 1, 8, 8) and float(x.min()) >= 0 and float(x.max()) <= 1
    assert tuple(data.body()(x).shape) == (5, 64) and tuple(data.network(7)(x).shape) == (5, 7)
    views = data.views()
    assert isinstance(views, ImageViews)
    a, b = views.pair(idx, x)
    assert a.shape == b.shape == x.shape and not np.allclose(a.numpy(), b.numpy())
    # neighbours from the initial features, inside the coarse class
    coarse = data.coarse
    assert (coarse[views.neighbour(np.arange(data.n_obs))] == coarse).all()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"image_shape": (1, 8, 9)}, ValueError, r"image_shape=\(1, 8, 9\) does not match the 64 values"),
        ({"image_shape": (8, 8)}, ValueError, "image_shape=.*three positive ints"),
        ({"width": 0}, ValueError, "width"),
        ({"width": 8.0}, TypeError, "width"),
        ({"checkpoint": "no/such/file.pth"}, FileNotFoundError, "checkpoint 'no/such/file.pth'"),
        ({"batch_key": "coarse"}, ValueError, "batch_key='coarse' applies to cells only"),
    ],
)
@pytest.mark.parametrize("name", sorted(IMAGE_BASELINES))
def test_bad_image_options(digits: AnnData, name: str, kwargs: dict, error: type, match: str, monkeypatch) -> None:
    import falcon_sc.baselines._images as images

    def boom(*args, **kw):
        raise AssertionError("reached the initial features: the option should have been refused first")

    monkeypatch.setattr(images, "initial_features", boom)
    with pytest.raises(error, match=match):
        run(name, digits, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"view": "strong"}, TypeError, "view must be a falcon_sc.core.views.ViewConfig"),
        ({"n_steps": 0}, ValueError, "n_steps"),
    ],
)
@pytest.mark.parametrize("name", NEURAL)
def test_bad_training_options(digits: AnnData, name: str, kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        run(name, digits, **kwargs)


def test_image_shape_unknown(digits: AnnData) -> None:
    bare = AnnData(digits.X.copy(), obs=digits.obs.copy())
    with pytest.raises(ValueError, match="image_shape is unknown"):
        run("sela", bare)
    run("kmeans_within", bare, image_shape=(1, 8, 8))  # given explicitly: fine
