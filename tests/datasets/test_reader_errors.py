"""Damaged, empty, unsafe and odd dataset files: every reader gives a correct read or one ``DatasetFileError`` that
names the file (and line or entry), never a foreign traceback, never zero images, and no pickle runs code."""

from __future__ import annotations

import builtins
import json
import os
import pickle
import subprocess

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from falcon_sc.datasets import breeds, breeds_classes, cifar100, image_folder, tiered_imagenet
from falcon_sc.errors import DatasetFileError

# ---------------------------------------------------------------- CIFAR-100 pickles

PER_CLASS = {"train": 2, "test": 1}  # images per fine class in the tiny files


def _cifar_files(per_class: dict[str, int] = PER_CLASS, protocol: int = pickle.DEFAULT_PROTOCOL) -> dict[str, bytes]:
    """The bytes of tiny CIFAR-100-format pickles ``meta``, ``train`` and ``test`` (fine i of coarse i // 5)."""
    meta = {"fine_label_names": [f"f{i:02d}" for i in range(100)], "coarse_label_names": [f"c{i}" for i in range(20)]}
    files = {"meta": pickle.dumps(meta, protocol=protocol)}
    rng = np.random.default_rng(0)
    for name, per in per_class.items():
        fine = np.tile(np.arange(100), per)
        data = {
            "data": rng.integers(0, 256, size=(len(fine), 3072), dtype=np.uint8),
            "fine_labels": fine.tolist(),
            "coarse_labels": (fine // 5).tolist(),
        }
        files[name] = pickle.dumps(data, protocol=protocol)
    return files


def _write(folder, files: dict[str, bytes]):
    folder.mkdir(parents=True, exist_ok=True)
    for name, raw in files.items():
        (folder / name).write_bytes(raw)
    return folder


@pytest.fixture(scope="module")
def cifar_files():
    return _cifar_files()


@pytest.fixture
def cifar_root(tmp_path, cifar_files):
    return _write(tmp_path / "cifar", cifar_files)


class _Payload:
    """A pickle that calls ``func(*args)`` when loaded by a plain ``pickle.load``."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _payloads(proof) -> list[bytes]:
    """Code-running pickles, each of which creates ``proof`` when loaded by ``pickle.load``."""
    return [
        pickle.dumps({"fine_label_names": _Payload(os.system, f"touch {proof}")}),
        pickle.dumps(_Payload(builtins.exec, f"open({str(proof)!r}, 'w').close()")),
        pickle.dumps({"data": _Payload(subprocess.call, ["touch", str(proof)])}, protocol=2),
        pickle.dumps(_Payload(builtins.eval, f"open({str(proof)!r}, 'w')"), protocol=0),
        # the allowed _codecs.encode with another codec than latin1 is refused too
        b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x05\x00\x00\x00rot13\x86R.",
    ]


def test_cifar_variants_of_pickling_read_alike(tmp_path):
    reference = cifar100(_write(tmp_path / "ref", _cifar_files()), split="all")
    for protocol in (0, 2, 5):  # py2-style pickles (_codecs.encode for bytes) and out-of-band-ready protocol 5
        again = cifar100(_write(tmp_path / f"p{protocol}", _cifar_files(protocol=protocol)), split="all")
        np.testing.assert_array_equal(again.X, reference.X)
        assert again.obs.equals(reference.obs)
    # numpy 1 pickles name numpy.core.multiarray: allowed too
    old = {k: v.replace(b"numpy._core", b"numpy.core") for k, v in _cifar_files(protocol=2).items()}
    np.testing.assert_array_equal(cifar100(_write(tmp_path / "np1", old), split="all").X, reference.X)


@pytest.mark.parametrize("target", ["meta", "train", "test"])
def test_cifar_malicious_pickle_never_runs(cifar_root, tmp_path, target):
    proof = tmp_path / "proof"
    for payload in _payloads(proof):
        (cifar_root / target).write_bytes(payload)
        with pytest.raises(DatasetFileError, match=rf"cifar/{target}.*(refused|codec)"):
            cifar100(cifar_root, split="all")
        assert not proof.exists()


def _damage(root, name, raw: bytes) -> None:
    (root / name).write_bytes(raw)


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("train", "truncated", r"cifar/train is not a readable CIFAR-100 python pickle.*truncated"),
        ("meta", b"fine_label_names: apple, aquarium_fish\n", r"cifar/meta is not a readable"),
        ("meta", b"", r"cifar/meta is empty"),
        ("meta", pickle.dumps([f"f{i}" for i in range(100)]), r"cifar/meta holds a list, not the dict"),
        ("meta", pickle.dumps({"fine_label_names": [f"f{i}" for i in range(100)]}), "no entry 'coarse_label_names'"),
        ("meta", pickle.dumps({"fine_label_names": ["a"] * 100, "coarse_label_names": list("abcdefghijklmnopqrst")}),
         r"'fine_label_names' holds 100 names \(1 distinct\)"),
        ("train", pickle.dumps({"data": np.zeros((3, 3072), np.uint8), "fine_labels": [0, 1, 2]}),
         "no entry 'coarse_labels'"),
        ("train", pickle.dumps({"data": np.zeros((3, 1024), np.uint8), "fine_labels": [0] * 3,
                                "coarse_labels": [0] * 3}), r"'data' is \(3, 1024\); expected an N x 3072"),
        ("train", pickle.dumps({"data": np.full((3, 3072), 300), "fine_labels": [0] * 3, "coarse_labels": [0] * 3}),
         "dtype int64; expected uint8"),
        ("train", pickle.dumps({"data": np.zeros((3, 3072), np.uint8), "fine_labels": [0, 1],
                                "coarse_labels": [0] * 3}), "3 images with 2 fine and 3 coarse labels"),
        ("train", pickle.dumps({"data": np.zeros((3, 3072), np.uint8), "fine_labels": [0, 100, 1],
                                "coarse_labels": [0] * 3}), r"'fine_labels', image 1: label 100 is out of range"),
        ("train", pickle.dumps({"data": np.zeros((3, 3072), np.uint8), "fine_labels": [0, 1, "2"],
                                "coarse_labels": [0] * 3}), "not a flat list of integer labels"),
        ("train", pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "fine_labels": [7, 7],
                                "coarse_labels": [1, 2]}), r"cifar/train, image 1: fine label 7 has the coarse label"),
    ],
)  # fmt: skip
def test_cifar_damaged_files_name_file_and_entry(cifar_root, cifar_files, name, content, match):
    _damage(cifar_root, name, cifar_files[name][: len(cifar_files[name]) // 2] if content == "truncated" else content)
    with pytest.raises(DatasetFileError, match=match):
        cifar100(cifar_root, split="all")


def test_cifar_inconsistent_across_files(cifar_root):
    data = {"data": np.zeros((1, 3072), np.uint8), "fine_labels": [0], "coarse_labels": [3]}  # train says 0 -> 0
    _damage(cifar_root, "test", pickle.dumps(data))
    with pytest.raises(DatasetFileError, match="cifar/test, image 0: fine label 0 has the coarse label 3, but 0"):
        cifar100(cifar_root, split="all")


def test_cifar_empty_split_is_an_error(tmp_path):
    # one image per class (a tiny or damaged download): the reference's 90% keeps none for "train"
    root = _write(tmp_path / "tiny", _cifar_files({"train": 1, "test": 1}))
    with pytest.raises(DatasetFileError, match=r"no images found in .*tiny for split='train'.*100 images, 0 kept"):
        cifar100(root)
    assert cifar100(root, split="val").n_obs == 100  # the other splits still read
    with pytest.raises(DatasetFileError, match="split='val'"):
        cifar100(_write(tmp_path / "small", _cifar_files()), split="val", val_fraction=0.0)


_MUTATIONS = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0.0, 1.0)),
    st.tuples(st.just("flip"), st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(1, 255)), min_size=1, max_size=4)),
    st.tuples(st.just("random"), st.binary(min_size=0, max_size=200)),
    st.tuples(st.just("evil"), st.integers(0, 4)),
)


@settings(derandomize=True, max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(target=st.sampled_from(["meta", "train", "test"]), mutation=_MUTATIONS)
def test_cifar_fuzz_reads_correctly_or_refuses(tmp_path, cifar_files, target, mutation):
    """A mutated pickle is either read (a consistent AnnData) or refused with DatasetFileError; no code runs."""
    kind, arg = mutation
    raw = bytearray(cifar_files[target])
    proof = tmp_path / "proof"
    if kind == "truncate":
        raw = raw[: int(len(raw) * arg)]
    elif kind == "flip":
        for where, mask in arg:
            raw[min(int(where * len(raw)), len(raw) - 1)] ^= mask
    elif kind == "random":
        raw = bytearray(arg)
    else:
        raw = bytearray(_payloads(proof)[arg])
    root = _write(tmp_path / "fuzz", {**cifar_files, target: bytes(raw)})
    try:
        adata = cifar100(root, split="all")
    except DatasetFileError as err:
        assert str(root) in str(err)  # names the file (a label clash may name the other data file)
    else:
        assert adata.n_obs > 0 and adata.X.shape[1] == 3072 and adata.X.dtype == np.uint8
        assert not adata.obs["fine"].isna().any() and not adata.obs["coarse"].isna().any()
    assert not proof.exists()


# ---------------------------------------------------------------- BREEDS and tieredImageNet files

LEAVES = [f"n0200000{i}" for i in range(1, 5)]  # 4 ImageNet classes under one level-5 superclass of living17
SUPER = "n01000001"


def _image(path, shade=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (shade, 0, 0)).save(path)


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory):
    """A tiny ImageNet-style folder and valid BREEDS hierarchy files giving living17 one superclass."""
    base = tmp_path_factory.mktemp("imagenet")
    root = base / "imagenet"
    for k, wnid in enumerate(LEAVES):
        for i in range(2):
            _image(root / "train" / wnid / f"{wnid}_{i}.JPEG", k)
        _image(root / "val" / wnid / f"v{k}.JPEG", k)
    chain = ["n00001740", "n00004258", "n00000002", "n00000003", "n00000004", SUPER]
    edges = list(zip(chain[:-1], chain[1:], strict=True)) + [(SUPER, w) for w in LEAVES]
    hierarchy = base / "breeds"
    hierarchy.mkdir()
    (hierarchy / "class_hierarchy.txt").write_text("".join(f"{p} {c}\n" for p, c in edges))
    (hierarchy / "dataset_class_info.json").write_text(json.dumps([[k, w, f"c{w}"] for k, w in enumerate(LEAVES)]))
    (hierarchy / "node_names.txt").write_text("".join(f"{w}\tname {w}\n" for w in [SUPER, *LEAVES]))
    return root, hierarchy


@pytest.fixture
def breeds_dir(imagenet, tmp_path):
    _, hierarchy = imagenet
    copy = tmp_path / "breeds"
    copy.mkdir()
    for path in hierarchy.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    return copy


def test_breeds_valid_files_read(imagenet):
    root, hierarchy = imagenet
    classes = breeds_classes(hierarchy, "living17")
    assert list(classes) == [SUPER] and sorted(classes[SUPER]) == LEAVES
    assert breeds(root, "living17", hierarchy_dir=hierarchy, split="all").n_obs == 12


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("dataset_class_info.json", b'[[0, "n02000001", "a"],\n [1, "n02000002" "b"]]',
         r"dataset_class_info\.json, line 2, column \d+: not valid JSON"),
        ("dataset_class_info.json", b"", r"dataset_class_info\.json is empty"),
        ("dataset_class_info.json", b"[]", r"dataset_class_info\.json holds list '\[\]', not a non-empty list"),
        ("dataset_class_info.json", b'{"n02000001": 0}', "holds dict"),
        ("dataset_class_info.json", b'[[0, "n02000001", "a"], [1]]', r"dataset_class_info\.json, entry 1"),
        ("class_hierarchy.txt", b"n00001740 n00004258\nn00004258 n00000002 n00000003\n",
         r"class_hierarchy\.txt, line 2: .* has 3 tokens"),
        ("class_hierarchy.txt", b"", r"class_hierarchy\.txt is empty"),
        ("class_hierarchy.txt", b"\x89PNG\r\n\x1a\n\x00\x00", r"class_hierarchy\.txt, line 3: a NUL byte"),
        ("class_hierarchy.txt", b"n00001740 n09999999\n", "give living17 no superclass"),
        ("node_names.txt", b"", r"node_names\.txt is empty"),
        ("node_names.txt", b"n01000001\n", r"node_names\.txt holds no 'wnid name' line"),
        ("node_names.txt", "n01000001 caf\u00e9\n".encode("latin1"),
         r"node_names\.txt, line 1: the byte at offset 13 is not UTF-8"),
    ],
)  # fmt: skip
def test_breeds_damaged_hierarchy_files(imagenet, breeds_dir, name, content, match):
    root, _ = imagenet
    (breeds_dir / name).write_bytes(content)
    with pytest.raises(DatasetFileError, match=match):
        breeds(root, "living17", hierarchy_dir=breeds_dir)


def test_breeds_no_images_for_split(imagenet):
    root, hierarchy = imagenet
    with pytest.raises(DatasetFileError, match=r"no images found in .*imagenet for split='val'.*val_fraction=0\.0"):
        breeds(root, "living17", hierarchy_dir=hierarchy, split="val", val_fraction=0.0)


def _tiered(folder, train="n02000001,n01000001\n", val="n02000002,n01000001\n", test="n02000003,n01000002\n"):
    folder.mkdir(exist_ok=True)
    for name, text in (("train.csv", train), ("val.csv", val), ("test.csv", test)):
        (folder / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    return folder


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"test": ""}, r"test\.csv is empty"),
        ({"val": "synset,category\n"}, r"val\.csv holds no 'fine wnid,coarse wnid' rows \(only a header\)"),
        ({"train": "n02000001,n01000001\n\nn01440764,\n"}, r"train\.csv, line 3 \(row 2\).*non-empty coarse class"),
        ({"train": "n02000001, \n"}, r"train\.csv, line 1 \(row 1\)"),
        ({"test": b"\x00\x01\x02binary"}, r"test\.csv, line 1: a NUL byte"),
        ({"test": b"n02000003,\xff\xfe\n"}, r"test\.csv, line 1: the byte at offset 10 is not UTF-8"),
        ({"test": "n02000001,n01000002\n"}, r"test\.csv, line 1: fine class n02000001 has two coarse classes"),
    ],
)
def test_tiered_damaged_csvs(imagenet, tmp_path, kwargs, match):
    root, _ = imagenet
    with pytest.raises(DatasetFileError, match=match):
        tiered_imagenet(root, hierarchy_dir=_tiered(tmp_path / "tiered", **kwargs))


def test_tiered_valid_and_empty_names_file(imagenet, tmp_path):
    root, _ = imagenet
    hierarchy = _tiered(tmp_path / "tiered", train="fine,coarse\r\nn02000001, n01000001 \r\n")
    adata = tiered_imagenet(root, hierarchy_dir=hierarchy, split="all")
    assert adata.n_obs == 9 and set(adata.obs["coarse"]) == {"n01000001", "n01000002"}
    (tmp_path / "names.txt").write_text("\n\n")
    with pytest.raises(DatasetFileError, match=r"names\.txt is empty"):
        tiered_imagenet(root, hierarchy_dir=hierarchy, node_names=tmp_path / "names.txt")


# ---------------------------------------------------------------- the user's own folders


@pytest.fixture
def own(tmp_path):
    root = tmp_path / "pets"
    for fine in ("cat ", "dog"):  # a folder name with a trailing space
        for i in range(2):
            _image(root / fine / f"{i}.png", i)
    csv = tmp_path / "coarse.csv"
    csv.write_text("fine,coarse\ncat ,animal\ndog,animal\n")
    return root, csv


def test_image_folder_white_space_matches_on_both_sides(own):
    root, csv = own
    adata = image_folder(root, csv)
    assert adata.obs["fine"].value_counts().to_dict() == {"cat": 2, "dog": 2}
    assert all(os.path.isfile(p) for p in adata.obs["path"])
    csv.write_text("fine,coarse\n cat,animal\ndog ,animal\n")  # stripped on both sides: the same classes
    assert image_folder(root, csv).obs["fine"].value_counts().to_dict() == {"cat": 2, "dog": 2}
    _image(root / "cat" / "x.png")
    with pytest.raises(DatasetFileError, match=r"the folders \['cat', 'cat '\] differ only by white space"):
        image_folder(root, csv)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", r"coarse\.csv is empty"),
        (b"fine,coarse\n", r"no images found: .*coarse\.csv holds only a header"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", r"coarse\.csv, line 3: a NUL byte"),
        (b"fine,coarse\ncat,anim\xe9l\n", r"coarse\.csv, line 2: the byte at offset \d+ is not UTF-8"),
        (b'fine,coarse\n"cat,animal\n', r"coarse\.csv: not a readable CSV file \(.*EOF inside string"),
    ],
)
def test_image_folder_damaged_csv(own, content, match):
    root, csv = own
    csv.write_bytes(content)
    with pytest.raises(DatasetFileError, match=match):
        image_folder(root, csv)


def test_image_folder_empty_root(tmp_path, own):
    _, csv = own
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".hidden").mkdir()
    with pytest.raises(DatasetFileError, match=r"no images found in .*empty: it holds no class subfolder"):
        image_folder(tmp_path / "empty", csv)
