"""Random image views: crops, resizes and flips done by one affine grid per image."""

from __future__ import annotations

import pytest
import torch

from falcon_sc.core.views import STRONG, ViewConfig, centre_view, random_view


def _ramp(n=4, h=16, w=16):
    """Images whose pixel value is its column index: crops and flips are visible in the values."""
    cols = torch.arange(w, dtype=torch.float32).expand(h, w)
    return cols.expand(n, 1, h, w).clone()


def test_full_crop_without_flip_is_the_identity():
    x = torch.rand(3, 2, 8, 8)
    same = random_view(x, ViewConfig(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=0.0))
    torch.testing.assert_close(same, x, atol=1e-5, rtol=0)
    torch.testing.assert_close(centre_view(x), x, atol=1e-5, rtol=0)


def test_flip_reverses_columns():
    x = _ramp()
    flipped = random_view(x, ViewConfig(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=1.0))
    torch.testing.assert_close(flipped, x.flip(-1), atol=1e-4, rtol=0)


def test_small_crops_see_a_narrow_range_and_sizes_follow_out_size():
    x = _ramp(n=64)
    g = torch.Generator().manual_seed(0)
    out = random_view(x, ViewConfig(scale=(0.1, 0.1), ratio=(1.0, 1.0), flip=0.0, out_size=(8, 8)), g)
    assert out.shape == (64, 1, 8, 8)
    spread = out.amax(dim=(1, 2, 3)) - out.amin(dim=(1, 2, 3))
    # a crop of 10 % of the area spans about sqrt(0.1) of the 16 columns
    assert (spread < 0.45 * 16).all() and (spread > 0.2 * 16).all()
    centred = centre_view(x, crop=0.5)
    assert centred.min() > 3 and centred.max() < 12


def test_views_are_seeded_and_differ_between_calls():
    x = torch.rand(8, 3, 32, 32)
    a = random_view(x, STRONG, torch.Generator().manual_seed(1))
    b = random_view(x, STRONG, torch.Generator().manual_seed(1))
    c = random_view(x, STRONG, torch.Generator().manual_seed(2))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


@pytest.mark.parametrize(
    "kwargs, match", [({"scale": (0.0, 1.0)}, "scale"), ({"ratio": (2.0, 1.0)}, "ratio"), ({"flip": 2.0}, "flip")]
)
def test_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ViewConfig(**kwargs)
    with pytest.raises(ValueError, match="batch x channels"):
        random_view(torch.rand(3, 8, 8))
