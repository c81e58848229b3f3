"""Readers of local image datasets (CIFAR-100 pickles, BREEDS, tieredImageNet, the user's folders), on tiny files."""

from __future__ import annotations

import json
import pickle
import shutil

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from PIL import Image

import falcon_sc as fal
from falcon_sc.data import ImageFiles
from falcon_sc.datasets import CIFAR68_REMOVED, CIFAR_SI_FRACTIONS, breeds, cifar100, image_folder, tiered_imagenet
from falcon_sc.errors import DatasetFileError


def _check_labelled(adata, name):
    info = adata.uns["falcon_dataset"]
    assert info["name"] == name and {"relation", "source", "image_shape"} <= set(info)
    for key in ("coarse", "fine", "split"):
        assert isinstance(adata.obs[key].dtype, pd.CategoricalDtype) and not adata.obs[key].isna().any()
    pairs = adata.obs[["fine", "coarse"]].astype(str).drop_duplicates()
    assert not pairs["fine"].duplicated().any()
    assert fal.datasets.true_relation(adata) == dict(zip(pairs["fine"], pairs["coarse"], strict=True))


# ---------------------------------------------------------------- CIFAR-100

N_TRAIN, N_TEST = 20, 4  # images per fine class in the tiny train / test files


def _write_cifar(root, bytes_keys=False):
    """CIFAR-100-format pickles; fine label i of coarse class i // 5; classes interleaved in file order."""
    root.mkdir(exist_ok=True)
    key = (lambda k: k.encode()) if bytes_keys else (lambda k: k)
    meta = {
        key("fine_label_names"): [f"f{i:02d}" for i in range(100)],
        key("coarse_label_names"): [f"c{i:02d}" for i in range(20)],
    }
    with open(root / "meta", "wb") as f:
        pickle.dump(meta, f)
    rng = np.random.default_rng(0)
    for name, per in (("train", N_TRAIN), ("test", N_TEST)):
        fine = np.tile(np.arange(100), per)
        data = {
            key("data"): rng.integers(0, 256, size=(len(fine), 3072), dtype=np.uint8),
            key("fine_labels"): fine.tolist(),
            key("coarse_labels"): (fine // 5).tolist(),
        }
        with open(root / name, "wb") as f:
            pickle.dump(data, f)
    return root


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    return _write_cifar(tmp_path_factory.mktemp("cifar") / "cifar-100-python")


def test_cifar100_split_labels_and_pixels(cifar_root):
    train = cifar100(cifar_root)
    _check_labelled(train, "cifar100")
    assert train.shape == (100 * 18, 3072) and train.X.dtype == np.uint8
    assert list(train.uns["falcon_dataset"]["image_shape"]) == [3, 32, 32]
    assert (train.obs["split"] == "train").all() and (train.obs["fine"].value_counts() == 18).all()
    assert fal.datasets.true_relation(train)["f07"] == "c01"
    with open(cifar_root / "train", "rb") as f:
        raw = pickle.load(f)
    row = int(train.obs_names[5].removeprefix("train"))
    np.testing.assert_array_equal(train.X[5], raw["data"][row])  # channel-major pixels, as in the file
    assert train.obs["label"].iloc[5] == raw["fine_labels"][row]
    # the reference's split: the last 10% of each class in file order is "val"
    val = cifar100(cifar_root, split="val")
    assert val.n_obs == 200 and set(val.obs_names) == {f"train{i}" for i in range(1800, 2000)}
    test = cifar100(cifar_root, split="test")
    assert test.n_obs == 400 and set(test.obs["split"]) == {"test"}
    everything = cifar100(cifar_root, split="all")
    assert everything.obs["split"].value_counts().to_dict() == {"train": 1800, "val": 200, "test": 400}
    assert list(everything.obs["split"].cat.categories) == ["train", "val", "test"]


def test_cifar100_seeded_split_and_bytes_keys(cifar_root, tmp_path):
    seeded = cifar100(cifar_root, split="val", random_state=3)
    assert (seeded.obs["fine"].value_counts() == 2).all()
    assert set(seeded.obs_names) != {f"train{i}" for i in range(1800, 2000)}
    assert seeded.obs_names.equals(cifar100(cifar_root, split="val", random_state=3).obs_names)
    half = cifar100(cifar_root, split="val", val_fraction=0.5)
    assert half.n_obs == 1000
    as_bytes = cifar100(_write_cifar(tmp_path / "b", bytes_keys=True), split="all")
    reference = cifar100(cifar_root, split="all")
    np.testing.assert_array_equal(as_bytes.X, reference.X)
    pd.testing.assert_frame_equal(as_bytes.obs, reference.obs)


def test_cifar68_leaves_out_the_reference_classes(cifar_root):
    assert len(CIFAR68_REMOVED) == len(set(CIFAR68_REMOVED)) == 32
    adata = cifar100(cifar_root, split="all", variant="cifar68")
    _check_labelled(adata, "cifar68")
    assert set(adata.obs["label"]) == set(range(100)) - set(CIFAR68_REMOVED)
    assert adata.obs["fine"].nunique() == 68 and adata.obs["coarse"].nunique() == 20
    children = adata.obs[["fine", "coarse"]].drop_duplicates()["coarse"].value_counts()
    assert children.min() >= 1 and children.max() == 5
    assert adata.n_obs == 68 * (N_TRAIN + N_TEST)


def test_cifar_si_keeps_the_reference_fractions(cifar_root):
    assert len(CIFAR_SI_FRACTIONS) == 100 and 0.3 < min(CIFAR_SI_FRACTIONS) < max(CIFAR_SI_FRACTIONS) < 1
    adata = cifar100(cifar_root, split="all", variant="cifar_si")
    _check_labelled(adata, "cifar_si")
    counts = adata.obs.groupby(["label", "split"], observed=True).size().unstack(fill_value=0)
    kept = np.array([int(N_TRAIN * f) for f in CIFAR_SI_FRACTIONS])
    np.testing.assert_array_equal(counts["train"] + counts["val"], kept)
    np.testing.assert_array_equal(counts["train"], (kept * 0.9).astype(int))
    np.testing.assert_array_equal(counts["test"], [int(N_TEST * f) for f in CIFAR_SI_FRACTIONS])
    # the first images of each class in file order are the ones kept
    train_rows = adata.obs_names[adata.obs["split"] != "test"].str.removeprefix("train").astype(int)
    assert set(train_rows) == {k * 100 + c for c in range(100) for k in range(kept[c])}


def test_cifar_errors_name_the_file_and_the_source(cifar_root, tmp_path):
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(cifar_root / "test", partial / "test")
    with pytest.raises(FileNotFoundError, match=r"partial/meta.*cs\.toronto\.edu/~kriz/cifar\.html"):
        cifar100(partial, split="test")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        cifar100(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="variant"):
        cifar100(cifar_root, variant="cifar10")
    with pytest.raises(ValueError, match="split"):
        cifar100(cifar_root, split="validation")
    with pytest.raises(ValueError, match="val_fraction"):
        cifar100(cifar_root, val_fraction=1.0)
    with open(partial / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"f{i}" for i in range(100)]}, f)
    with pytest.raises(DatasetFileError, match="partial/meta has no entry 'coarse_label_names'"):
        cifar100(partial, split="test")


# ---------------------------------------------------------------- ImageNet-style folders: BREEDS and tieredImageNet

S1, S2, S3, S_NONLIVING = "n01000001", "n01000002", "n01000003", "n01000009"
LEAVES = {
    S1: [f"n0200000{i}" for i in range(1, 6)],  # 5 classes: 4 are drawn
    S2: [f"n020000{i:02d}" for i in range(6, 10)],  # 4 classes, one level deeper
    S3: ["n02000010", "n02000011"],  # too few for living17
    S_NONLIVING: [f"n020000{i}" for i in range(20, 24)],
}
ALL_LEAVES = sorted(w for leaves in LEAVES.values() for w in leaves)


def _image(path, shade):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (6, 4), (shade, 0, 0)).save(path)


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory):
    """An ImageNet-style folder (3 train and 1 val image per class, one class unknown to the hierarchies) and the
    BREEDS hierarchy files: living17's level 5 under n00004258 holds S1, S2 and S3; S_NONLIVING is at level 5 under
    n00021939 (nonliving26)."""
    base = tmp_path_factory.mktemp("imagenet")
    root = base / "imagenet"
    for k, wnid in enumerate([*ALL_LEAVES, "n09999999"]):
        for i in range(3):
            _image(root / "train" / wnid / f"{wnid}_{i}.JPEG", k)
        _image(root / "val" / wnid / f"ILSVRC2012_val_{k:08d}.JPEG", k)
    (root / "train" / ALL_LEAVES[0] / "notes.txt").write_text("not an image")
    edges = [
        ("n00001740", "n00004258"),
        ("n00004258", "n00000002"),
        ("n00000002", "n00000003"),
        ("n00000003", "n00000004"),
        ("n00000004", S1),
        ("n00000004", S2),
        ("n00000004", S3),
        ("n00000002", S2),  # a shorter second path: the level is the longest path (5)
        (S2, "n01500000"),
        ("n00001740", "n00021939"),
        ("n00021939", "n00000012"),
        ("n00000012", "n00000013"),
        ("n00000013", "n00000014"),
        ("n00000014", S_NONLIVING),
        ("n00000014", "n01999999"),  # no ImageNet class below: not a superclass
    ]
    edges += [("n01500000" if s == S2 else s, w) for s, leaves in LEAVES.items() for w in leaves]
    hierarchy = base / "breeds_hierarchy"
    hierarchy.mkdir()
    (hierarchy / "class_hierarchy.txt").write_text("".join(f"{p} {c}\n" for p, c in sorted(set(edges))))
    info = [[k, w, f"class {w}"] for k, w in enumerate([*ALL_LEAVES, "n09999999"])]
    (hierarchy / "dataset_class_info.json").write_text(json.dumps(info))
    names = {S1: "salamander", S2: "turtle", S3: "lizard", S_NONLIVING: "bus", **{w: f"name {w}" for w in ALL_LEAVES}}
    (hierarchy / "node_names.txt").write_text("".join(f"{w}\t{n}\n" for w, n in names.items()))
    return root, hierarchy


def test_breeds_classes_follow_the_robustness_construction(imagenet):
    _, hierarchy = imagenet
    rng = np.random.RandomState(2)  # robustness: get_superclasses(random_seed=2), superclasses in sorted order
    expected = {s: list(rng.choice(LEAVES[s], 4, replace=False)) for s in (S1, S2)}
    assert fal.datasets.breeds_classes(hierarchy, "living17") == expected
    nonliving = fal.datasets.breeds_classes(hierarchy, "nonliving26")
    assert list(nonliving) == [S_NONLIVING] and sorted(nonliving[S_NONLIVING]) == LEAVES[S_NONLIVING]


def test_breeds_reader_paths_labels_and_reference_split(imagenet):
    from sklearn.utils import shuffle

    root, hierarchy = imagenet
    classes = fal.datasets.breeds_classes(hierarchy, "living17")
    fine = sorted(w for members in classes.values() for w in members)
    adata = breeds(root, "living17", hierarchy_dir=hierarchy, split="all", size=64)
    _check_labelled(adata, "living17")
    assert adata.n_vars == 0 and list(adata.uns["falcon_dataset"]["image_shape"]) == [3, 64, 64]
    assert sorted(adata.obs["fine"].cat.categories) == fine
    assert fal.datasets.true_relation(adata) == {w: s for s, members in classes.items() for w in members}
    assert set(adata.obs["coarse_name"]) == {"salamander", "turtle"} and adata.obs["fine_name"].iloc[0].startswith(
        "name "
    )
    assert all(p.startswith(str(root.resolve())) and p.endswith(".JPEG") for p in adata.obs["path"])
    # the reference's split: sklearn.utils.shuffle(random_state=1000) of the sorted train files, 90% train
    train_files = [str((root / "train" / w / f"{w}_{i}.JPEG").resolve()) for w in fine for i in range(3)]
    shuffled = shuffle(train_files, random_state=1000)
    n_train = int(len(shuffled) * 0.9)
    for split, files in (("train", shuffled[:n_train]), ("val", shuffled[n_train:])):
        part = breeds(root, "living17", hierarchy_dir=hierarchy, split=split)
        assert set(part.obs["path"]) == set(files) and set(part.obs["split"]) == {split}
    test = breeds(root, "living17", hierarchy_dir=hierarchy, split="test")
    assert test.n_obs == len(fine) and all("/val/" in p for p in test.obs["path"])
    images = ImageFiles.from_anndata(test, size=4)
    assert images.load(np.arange(2)).shape == (2, 3, 4, 4)


def test_breeds_errors(imagenet, tmp_path):
    root, hierarchy = imagenet
    partial = tmp_path / "hierarchy"
    shutil.copytree(hierarchy, partial)
    (partial / "node_names.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"node_names\.txt.*BREEDS-Benchmarks"):
        breeds(root, "living17", hierarchy_dir=partial)
    with pytest.raises(ValueError, match="name"):
        breeds(root, "living18", hierarchy_dir=hierarchy)
    missing = tmp_path / "imagenet"
    shutil.copytree(root, missing)
    drop = fal.datasets.breeds_classes(hierarchy, "living17")[S2][0]
    shutil.rmtree(missing / "val" / drop)
    with pytest.raises(FileNotFoundError, match=rf"val/{drop}.*image-net\.org"):
        breeds(missing, "living17", hierarchy_dir=hierarchy, split="test")
    assert breeds(missing, "living17", hierarchy_dir=hierarchy).n_obs > 0  # train split: val folder not read


def _write_tiered(folder, *, test_rows=f"n02000020,{S_NONLIVING}\n"):
    folder.mkdir(exist_ok=True)
    (folder / "train.csv").write_text(f"n02000001,{S1}\nn02000002,{S1}\n")
    (folder / "val.csv").write_text(f"synset,category\nn02000006,{S2}\n")
    (folder / "test.csv").write_text(test_rows)
    return folder


def test_tiered_imagenet_pools_the_three_class_splits(imagenet, tmp_path):
    root, _ = imagenet
    hierarchy = _write_tiered(tmp_path / "tiered")
    names = tmp_path / "LOC_synset_mapping.txt"
    names.write_text(f"n02000001 goldfish, Carassius auratus\n{S1} fish\n")
    adata = tiered_imagenet(root, hierarchy_dir=hierarchy, split="all", node_names=names)
    _check_labelled(adata, "tiered_imagenet")
    assert fal.datasets.true_relation(adata) == {
        "n02000001": S1,
        "n02000002": S1,
        "n02000006": S2,
        "n02000020": S_NONLIVING,
    }
    assert adata.obs["split"].value_counts().to_dict() == {"train": 12, "test": 4}
    assert adata.obs.loc[adata.obs["fine"] == "n02000001", "fine_name"].iloc[0] == "goldfish, Carassius auratus"
    assert adata.obs.loc[adata.obs["fine"] == "n02000006", "fine_name"].iloc[0] == "n02000006"  # no name: the id
    train = tiered_imagenet(root, hierarchy_dir=hierarchy)
    assert train.n_obs == 12 and list(train.uns["falcon_dataset"]["image_shape"]) == [3, 224, 224]
    assert "fine_name" not in train.obs


def test_tiered_imagenet_errors(imagenet, tmp_path):
    root, _ = imagenet
    hierarchy = _write_tiered(tmp_path / "tiered")
    with pytest.raises(ValueError, match="no validation split"):
        tiered_imagenet(root, hierarchy_dir=hierarchy, split="val")
    (hierarchy / "test.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"test\.csv.*tieredImageNet"):
        tiered_imagenet(root, hierarchy_dir=hierarchy)
    _write_tiered(hierarchy, test_rows=f"n02000020,{S_NONLIVING}\nn02000001,{S2}\n")
    with pytest.raises(ValueError, match="two coarse classes"):
        tiered_imagenet(root, hierarchy_dir=hierarchy)
    _write_tiered(hierarchy, test_rows="n02000020\n")
    with pytest.raises(ValueError, match="row 1"):
        tiered_imagenet(root, hierarchy_dir=hierarchy)
    _write_tiered(hierarchy, test_rows=f"n02999999,{S_NONLIVING}\n")
    with pytest.raises(FileNotFoundError, match="n02999999"):
        tiered_imagenet(root, hierarchy_dir=hierarchy)


# ---------------------------------------------------------------- the user's own folders


@pytest.fixture
def own_images(tmp_path):
    root = tmp_path / "flowers"
    for fine, n in (("rose", 4), ("tulip", 3), ("oak", 5)):
        for i in range(n):
            _image(root / fine / f"{i}.{'png' if i % 2 else 'jpg'}", 10 * i)
    _image(root / "oak" / "autumn" / "leaf.PNG", 200)  # nested folders are read too
    (root / "rose" / "README").write_text("not an image")
    csv = tmp_path / "coarse.csv"
    csv.write_text("fine,coarse,comment\nrose,flower,\ntulip,flower,spring\noak,tree,\n")
    return root, csv


def test_image_folder(own_images):
    root, csv = own_images
    adata = image_folder(root, csv, size=32)
    _check_labelled(adata, "flowers")
    assert adata.obs["fine"].value_counts().to_dict() == {"oak": 6, "rose": 4, "tulip": 3}
    assert fal.datasets.true_relation(adata) == {"oak": "tree", "rose": "flower", "tulip": "flower"}
    assert list(adata.uns["falcon_dataset"]["image_shape"]) == [3, 32, 32] and set(adata.obs["split"]) == {"train"}
    assert "oak/autumn/leaf.PNG" in adata.obs_names
    held_out = image_folder(root, csv, val_fraction=0.5, random_state=1)
    assert held_out.obs.groupby("fine", observed=True)["split"].apply(lambda s: (s == "val").sum()).to_dict() == {
        "oak": 3,
        "rose": 2,
        "tulip": 2,
    }
    assert ImageFiles.from_anndata(adata).load(np.arange(3)).shape == (3, 3, 32, 32)
    adata.write_h5ad(root.parent / "flowers.h5ad")
    back = ad.read_h5ad(root.parent / "flowers.h5ad")
    assert back.obs["path"].tolist() == adata.obs["path"].tolist()
    assert fal.datasets.true_relation(back) == fal.datasets.true_relation(adata)


@pytest.mark.parametrize(
    ("csv_text", "match"),
    [
        ("fine,parent\nrose,flower\n", "columns 'fine'"),
        ("fine,coarse\nrose,flower\ntulip,flower\n", r"fine folders missing from the CSV: \['oak'\]"),
        (
            "fine,coarse\nrose,flower\ntulip,flower\noak,tree\npine,tree\n",
            r"CSV rows with no folder under root: \['pine'\]",
        ),
        ("fine,coarse\nrose,flower\nrose,tree\ntulip,flower\noak,tree\n", r"more than one coarse class: \['rose'\]"),
        ("fine,coarse\nrose,\ntulip,flower\noak,tree\n", "empty entry"),
    ],
)
def test_image_folder_csv_errors(own_images, csv_text, match):
    root, csv = own_images
    csv.write_text(csv_text)
    with pytest.raises(ValueError, match=match):
        image_folder(root, csv)


def test_image_folder_missing_paths_and_empty_folders(own_images, tmp_path):
    root, csv = own_images
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        image_folder(root, tmp_path / "missing.csv")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        image_folder(tmp_path / "nowhere", csv)
    (root / "birch").mkdir()
    csv.write_text("fine,coarse\nrose,flower\ntulip,flower\noak,tree\nbirch,tree\n")
    with pytest.raises(ValueError, match="birch holds no image files"):
        image_folder(root, csv)
