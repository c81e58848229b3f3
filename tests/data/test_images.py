"""ImageFiles: lazy decoding, resize + centre crop, errors naming the file; Features over a sample source."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from falcon_sc.core.training import Features, map_rows
from falcon_sc.data import ImageFiles


def _solid(path, colour, size=(40, 30), mode="RGB"):
    Image.new(mode, size, colour).save(path)
    return str(path)


@pytest.fixture
def solids(tmp_path):
    colours = [(255, 0, 51), (0, 128, 255), (10, 20, 30)]
    paths = [_solid(tmp_path / f"img{i}.png", c) for i, c in enumerate(colours)]
    paths.append(_solid(tmp_path / "img3.jpg", (200, 200, 200), size=(17, 50)))  # portrait JPEG
    paths.append(_solid(tmp_path / "img4.png", 77, mode="L"))  # grey PNG, read as RGB
    expected = np.array([*colours, (200, 200, 200), (77, 77, 77)], dtype=np.float32) / 255
    return paths, expected


def test_load_solid_colours_in_the_requested_order(solids):
    paths, expected = solids
    source = ImageFiles(paths, size=16)
    assert len(source) == 5 and source.shape == (5, 3, 16, 16)
    idx = np.array([4, 0, 2, 3])
    out = source.load(idx)
    assert out.dtype == np.float32 and out.shape == (4, 3, 16, 16)
    # JPEG is lossy: a solid colour comes back within a couple of grey levels
    np.testing.assert_allclose(out, np.broadcast_to(expected[idx][:, :, None, None], out.shape), atol=3 / 255)
    serial = ImageFiles(paths, size=16, n_workers=1).load(idx)
    np.testing.assert_array_equal(out, serial)


def test_grey_channel_and_subset(solids):
    paths, expected = solids
    grey = ImageFiles(paths, size=8, channels=1)
    out = grey.load(np.array([0, 4]))
    assert out.shape == (2, 1, 8, 8)
    luma = 0.299 * expected[0, 0] + 0.587 * expected[0, 1] + 0.114 * expected[0, 2]
    np.testing.assert_allclose(out[0], luma, atol=1 / 255)
    np.testing.assert_allclose(out[1], 77 / 255, atol=1e-6)
    sub = grey.subset(np.array([4, 0]))
    assert isinstance(sub, ImageFiles) and sub.shape == (2, 1, 8, 8) and list(sub.paths) == [paths[4], paths[0]]
    np.testing.assert_array_equal(sub.load(np.array([1, 0])), out)


def test_shorter_side_resized_then_centre_cropped(tmp_path):
    # 40 x 20 image, left half red, right half blue: shorter side 20 -> 10 gives 20 x 10; the centre 10 x 10 crop
    # shows original columns 10-30, half red and half blue
    img = np.zeros((20, 40, 3), dtype=np.uint8)
    img[:, :20, 0] = 255
    img[:, 20:, 2] = 255
    Image.fromarray(img).save(tmp_path / "wide.png")
    Image.fromarray(img.transpose(1, 0, 2).copy()).save(tmp_path / "tall.png")  # 20 wide x 40 high
    out = ImageFiles([tmp_path / "wide.png", tmp_path / "tall.png"], size=10).load(np.arange(2))
    wide, tall = out
    np.testing.assert_allclose(wide[:, :, :4], np.array([1, 0, 0])[:, None, None] * np.ones((1, 10, 4)))
    np.testing.assert_allclose(wide[:, :, 6:], np.array([0, 0, 1])[:, None, None] * np.ones((1, 10, 4)))
    np.testing.assert_allclose(tall, wide.transpose(0, 2, 1))
    # resize > size: the border is cut off (ImageNet style Resize(256) + CenterCrop(224))
    framed = np.zeros((32, 32, 3), dtype=np.uint8)
    framed[4:28, 4:28] = 255
    Image.fromarray(framed).save(tmp_path / "framed.png")
    np.testing.assert_array_equal(ImageFiles([tmp_path / "framed.png"], 24, resize=32).load([0]), 1.0)


def test_missing_and_unreadable_files_are_named(solids, tmp_path):
    paths, _ = solids
    (tmp_path / "broken.png").write_bytes(b"not an image")
    source = ImageFiles([paths[0], tmp_path / "gone.png", tmp_path / "broken.png"], size=8)
    with pytest.raises(FileNotFoundError, match="gone.png"):
        source.load(np.array([0, 1]))
    with pytest.raises(OSError, match="broken.png"):
        source.load(np.array([2]))


def test_truncated_and_oversized_images_are_named(solids, tmp_path, monkeypatch):
    paths, _ = solids
    raw = open(paths[0], "rb").read()
    (tmp_path / "half.png").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(OSError, match=r"cannot read image file .*half\.png"):
        ImageFiles([tmp_path / "half.png"], size=8).load(np.array([0]))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # a 40 x 30 image is then a decompression bomb
    with pytest.raises(OSError, match=r"cannot read image file .*img0\.png.*decompression bomb"):
        ImageFiles([paths[0]], size=8).load(np.array([0]))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"channels": 4}, "channels"),
        ({"size": 0}, "size"),
        ({"size": 32, "resize": 16}, "resize"),
        ({"n_workers": 0}, "n_workers"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ImageFiles(["a.png"], **kwargs)


def test_from_anndata_reads_paths_and_image_shape(solids):
    paths, _ = solids
    adata = ad.AnnData(obs=pd.DataFrame({"path": paths}, index=[f"i{k}" for k in range(5)]))
    adata.uns["falcon_dataset"] = {"image_shape": np.array([1, 12, 12])}
    source = ImageFiles.from_anndata(adata, n_workers=2)
    assert source.shape == (5, 1, 12, 12) and source.n_workers == 2
    assert ImageFiles.from_anndata(adata, size=6).shape == (5, 1, 6, 6)
    with pytest.raises(KeyError, match="file"):
        ImageFiles.from_anndata(adata, path_key="file")


def test_features_over_a_sample_source(solids):
    paths, expected = solids
    source = ImageFiles(paths[:3], size=4)
    feats = Features(source)
    assert feats.data is source and Features(feats).data is source
    assert (feats.n_obs, feats.n_features) == (3, 3 * 4 * 4)
    rows = feats.rows(torch.tensor([2, 0]))
    assert rows.dtype == torch.float32 and rows.shape == (2, 3, 4, 4)
    np.testing.assert_allclose(rows[:, :, 0, 0].numpy(), expected[[2, 0]], atol=1e-6)
    sub = feats.subset(np.array([1]))
    assert isinstance(sub.data, ImageFiles) and sub.n_obs == 1
    np.testing.assert_allclose(sub.rows(np.array([0]))[0, :, 1, 1].numpy(), expected[1], atol=1e-6)
    batches = [(idx.tolist(), x.shape[0]) for idx, x in feats.in_order(2)]
    assert batches == [([0, 1], 2), ([2], 1)]
    means = map_rows(lambda x: x.mean(dim=(2, 3)), feats, batch_size=2)
    np.testing.assert_allclose(means, expected[:3], atol=1e-6)


def test_features_keep_the_shape_of_dense_image_arrays():
    X = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)
    feats = Features(X)
    assert feats.rows(np.array([1])).shape == (1, 3, 2, 2) and (feats.n_obs, feats.n_features) == (2, 12)
    np.testing.assert_array_equal(feats.subset(np.array([1])).rows(np.array([0])).numpy(), X[1:])
