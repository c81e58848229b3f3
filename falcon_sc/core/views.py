"""Random views of image batches, as tensor operations (CPU or GPU, a whole minibatch at once).

The FALCON reference trains on two strong views of each image (``RandomResizedCrop`` with scale 0.08-1 and a
horizontal flip), one for the student and one for the EMA teacher. Here one affine grid per image does the crop,
the resize and the flip in a single ``grid_sample`` call, so no per-image Python loop and no torchvision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ViewConfig:
    """Settings of :func:`random_view`.

    Attributes
    ----------
    scale
        Range of the crop's share of the image area (``RandomResizedCrop``'s ``scale``).
    ratio
        Range of the crop's aspect ratio (width / height), sampled log-uniformly.
    flip
        Probability of a horizontal flip.
    out_size
        Side of the output images (default: the input's height and width).
    """

    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: float = 0.5
    out_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ValueError(f"scale={self.scale} must satisfy 0 < low <= high <= 1.")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"ratio={self.ratio} must satisfy 0 < low <= high.")
        if not 0 <= self.flip <= 1:
            raise ValueError(f"flip={self.flip} must be a probability.")


STRONG = ViewConfig()
"""The reference's strong view: crop scale 0.08-1, aspect 3/4-4/3, flip with probability 0.5."""


def random_view(x: torch.Tensor, cfg: ViewConfig = STRONG, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random resized crop (and flip) of every image of ``x`` (batch x channels x height x width).

    Crops follow ``RandomResizedCrop``'s sampling (area share in ``cfg.scale``, aspect ratio in ``cfg.ratio``,
    clipped to the image, position uniform) and are resized bilinearly to ``cfg.out_size``.
    """
    if x.ndim != 4:
        raise ValueError(f"expected images as batch x channels x height x width, got shape {tuple(x.shape)}.")
    n, _, h, w = x.shape
    out_h, out_w = cfg.out_size if cfg.out_size is not None else (h, w)
    dev = x.device

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=generator, device="cpu").to(dev)

    area = uniform(*cfg.scale)
    log_ratio = uniform(math.log(cfg.ratio[0]), math.log(cfg.ratio[1]))
    aspect = torch.exp(log_ratio) * (h / w)  # width / height in normalised coordinates
    # crop half-sizes in normalised [-1, 1] coordinates (full image = 1)
    half_w = torch.sqrt(area * aspect).clamp(max=1.0)
    half_h = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (1 - half_w) * (2 * uniform(0.0, 1.0) - 1)
    cy = (1 - half_h) * (2 * uniform(0.0, 1.0) - 1)
    flip = torch.where(uniform(0.0, 1.0) < cfg.flip, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3, device=dev, dtype=x.dtype)
    theta[:, 0, 0] = (half_w * flip).to(x.dtype)
    theta[:, 0, 2] = cx.to(x.dtype)
    theta[:, 1, 1] = half_h.to(x.dtype)
    theta[:, 1, 2] = cy.to(x.dtype)
    grid = F.affine_grid(theta, [n, x.shape[1], out_h, out_w], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def centre_view(x: torch.Tensor, out_size: tuple[int, int] | None = None, crop: float = 1.0) -> torch.Tensor:
    """The teacher's weak view for large images: resize and take the central ``crop`` share of each side."""
    if x.ndim != 4:
        raise ValueError(f"expected images as batch x channels x height x width, got shape {tuple(x.shape)}.")
    if not 0 < crop <= 1:
        raise ValueError(f"crop={crop} must be in (0, 1].")
    n, c, h, w = x.shape
    out_h, out_w = out_size if out_size is not None else (h, w)
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = crop
    theta[:, 1, 1] = crop
    grid = F.affine_grid(theta, [n, c, out_h, out_w], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
