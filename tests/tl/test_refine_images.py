"""refine_images: FALCON on images through random views, written like refine; bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import falcon_sc as fal
from falcon_sc import metrics
from falcon_sc.bench.__main__ import main as bench_main
from falcon_sc.core.views import ViewConfig


@pytest.fixture(scope="module")
def digits():
    adata = fal.datasets.digits()
    keep = np.random.default_rng(0).permutation(adata.n_obs)[:600]
    return adata[np.sort(keep)].copy()


def test_digits_are_split_inside_their_coarse_class(digits):
    out = fal.tl.refine_images(
        digits,
        "coarse",
        10,
        width=8,
        n_epochs=3,
        view=ViewConfig(scale=(0.5, 1.0), flip=0.0),
        copy=True,
        accelerator="cpu",
        show_progress=False,
    )
    assert "falcon" not in digits.obs  # copy=True
    labels = out.obs["falcon"].astype(str)
    assert (labels.str.split("/").str[0] == out.obs["coarse"].astype(str)).all()
    assert metrics.within_coarse_ari(out.obs["fine"], labels, out.obs["coarse"]) > 0.6
    assert out.obsm["falcon_probs"].shape == (600, 10)
    assert {"relations", "fine_classes", "history", "params"} <= set(out.uns["falcon"])
    assert out.uns["falcon"]["params"]["backbone"] == "resnet18"


def test_bad_image_input(digits):
    bad = digits.copy()
    del bad.uns["falcon_dataset"]
    with pytest.raises(ValueError, match="image_shape is unknown"):
        fal.tl.refine_images(bad, "coarse", 10)
    with pytest.raises(ValueError, match="does not match the 64 values"):
        fal.tl.refine_images(digits, "coarse", 10, image_shape=(3, 8, 8))
    with pytest.raises(ValueError, match="three positive sizes"):  # the product matches the 64 values
        fal.tl.refine_images(digits, "coarse", 10, image_shape=(-1, 8, -8))
    with pytest.raises(ValueError, match="above the number of coarse classes"):
        fal.tl.refine_images(digits, "coarse", 3)
    with pytest.raises(ValueError, match="backbone"):
        fal.tl.refine_images(digits, "coarse", 10, backbone="vgg")
    with pytest.raises(KeyError, match="coarse_key"):
        fal.tl.refine_images(digits, "label", 10)


def test_bench_images_rejects_unknown_names_and_missing_paths(capsys):
    assert bench_main(["images", "--dataset", "cifar1000", "--seeds", "1"]) == 2
    assert "unknown image dataset 'cifar1000'" in capsys.readouterr().err
    assert bench_main(["images", "--dataset", "cifar100", "--seeds", "1"]) == 2
    assert "give --root PATH" in capsys.readouterr().err
    assert bench_main(["images", "--dataset", "living17", "--root", ".", "--seeds", "1"]) == 2
    assert "--hierarchy PATH" in capsys.readouterr().err
    assert bench_main(["images", "--methods", "selaa", "--seeds", "1"]) == 2
    assert "unknown image method(s) ['selaa']" in capsys.readouterr().err


def test_bench_images_runs_a_cifar_folder_and_writes_the_report(tmp_path, capsys):
    from ..datasets.test_image_readers import _write_cifar

    root = _write_cifar(tmp_path / "cifar-100-python")
    out = tmp_path / "report"
    argv = [
        "images",
        "--dataset",
        "cifar68",
        "--root",
        str(root),
        "--split",
        "test",
        "--methods",
        "falcon,kmeans_within",
    ]
    argv += ["--seeds", "1", "--width", "4", "--epochs", "1", "--out", str(out), "--no-plots", "--accelerator", "cpu"]
    assert bench_main(argv) == 0
    runs = pd.read_csv(out / "runs.csv").fillna({"error": ""})
    assert runs["method"].tolist() == ["falcon", "kmeans_within"]
    assert (runs["error"] == "").all()
    assert (runs["n_fine_true"] == 68).all()  # CIFAR68: 32 fine classes left out
    assert runs["warm_accuracy"].notna().iloc[0]
    assert "## cifar68" in (out / "summary.md").read_text()


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"width": 0}, ValueError, "width"),
        ({"n_epochs": 2.5}, TypeError, "n_epochs"),
        ({"lr": -1.0}, ValueError, "lr"),
        ({"random_state": None}, TypeError, "random_state"),
        ({"copy": "no"}, TypeError, "copy"),
        ({"view": (0.5, 1.0)}, TypeError, "ViewConfig"),
        ({"checkpoint": "/no/such/file.pth"}, FileNotFoundError, "does not exist"),
    ],
)
def test_bad_arguments_fail_before_any_work(digits, monkeypatch, kwargs, error, match):
    import falcon_sc.models._pipeline as module

    def boom(*args, **kw):
        raise AssertionError("reached the neighbour search; the argument error should come first")

    monkeypatch.setattr(module, "within_class_neighbors", boom)
    with pytest.raises(error, match=match):
        fal.tl.refine_images(digits, "coarse", 10, **kwargs)
    assert "falcon" not in digits.obs


def test_refine_images_reads_an_image_folder(tmp_path):
    """End to end from files: digits written as PNG folders + a coarse CSV, read lazily, split inside coarse classes."""
    from PIL import Image
    from sklearn.datasets import load_digits

    raw = load_digits()
    coarse_of = {0: "loop", 6: "loop", 1: "stroke", 7: "stroke"}
    for digit in coarse_of:
        folder = tmp_path / "images" / f"d{digit}"
        folder.mkdir(parents=True)
        for i, img in enumerate(raw.images[raw.target == digit][:40]):
            pixels = (img / 16 * 255).astype(np.uint8)
            Image.fromarray(pixels).resize((16, 16), Image.NEAREST).save(folder / f"{i}.png")
    (tmp_path / "coarse.csv").write_text("fine,coarse\n" + "".join(f"d{d},{c}\n" for d, c in coarse_of.items()))
    adata = fal.datasets.image_folder(tmp_path / "images", tmp_path / "coarse.csv", size=16)
    adata.uns["falcon_dataset"]["image_shape"] = np.array([1, 16, 16])  # grey digits
    assert adata.n_vars == 0
    out = fal.tl.refine_images(
        adata,
        "coarse",
        4,
        width=4,
        n_epochs=3,
        view=ViewConfig(scale=(0.5, 1.0), flip=0.0),
        show_progress=False,
        copy=True,
    )
    scores = metrics.evaluate(adata.obs["fine"].astype(str).to_numpy(), out.obs["falcon"].astype(str).to_numpy())
    assert scores["accuracy"] > 0.85
    parents = out.uns["falcon"]["fine_classes"]["parent"]
    assert (parents.loc[out.obs["falcon"].astype(str)].to_numpy() == adata.obs["coarse"].astype(str).to_numpy()).all()
