"""The parameters of a FALCON fit, each default declared once with its constraint.

Three objects hold them: :class:`SetupParams` (which data the model reads and how it is preprocessed),
:class:`FitParams` (neighbours, children counts, warm start, network, devices, seed) and
:class:`~falcon_sc.core.trainer.FalconConfig` (training). :func:`falcon_sc.tl.refine`,
:class:`~falcon_sc.FalconModel` and :func:`falcon_sc.tl.refine_images` spell these defaults out in their signatures
for users; ``tests/models/test_params.py`` checks that every signature agrees with these objects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .._checks import Anything, Bool, Choice, Int, Widths, param, validate
from ..pp import INPUT_KINDS

Prior = Literal["auto", "uniform", "size", "variance"] | Mapping[str, int]
PRIORS = ("auto", "uniform", "size", "variance")
INITS = ("leiden", "kmeans", "random")
ACCELERATORS = ("auto", "cpu", "cuda")


def plain(value: Any) -> Any:
    """Numpy scalars as Python numbers and arrays/lists as tuples, for torch, igraph's seed, ``uns`` and JSON."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list | tuple | np.ndarray):
        return tuple(plain(v) for v in value)
    return value


class _Params:
    """Validated on construction (one check per declared field); numpy scalars become Python values."""

    def __post_init__(self) -> None:
        validate(self)
        for name, value in vars(self).items():
            object.__setattr__(self, name, plain(value))

    def as_dict(self) -> dict[str, Any]:
        """Field name -> value (for ``uns[key]["params"]`` and the saved model)."""
        return dict(vars(self))


@dataclass(frozen=True, kw_only=True)
class SetupParams(_Params):
    """Which data a model reads and how it is preprocessed (:class:`~falcon_sc.FalconModel`'s setup arguments).

    ``coarse_key``, ``layer``, ``use_rep`` and ``batch_key`` are keys of the AnnData, checked against it by
    :func:`falcon_sc._validate.check_setup`.
    """

    coarse_key: Any = param(None, Anything())
    layer: str | None = param(None, Anything())
    use_rep: str | None = param(None, Anything())
    input_kind: str = param("auto", Choice(INPUT_KINDS))
    batch_key: str | None = param(None, Anything())
    n_top_genes: int = param(2000, Int(2))
    n_comps: int = param(50, Int(2))
    n_comps_within: int = param(10, Int(0))
    model_input: str = param("pca", Choice(("pca", "hvg")))


@dataclass(frozen=True, kw_only=True)
class FitParams(_Params):
    """Neighbours, children counts, warm start, network width, devices and seed of :meth:`FalconModel.fit`.

    ``children_prior`` may also be a mapping coarse label -> count, checked against the data by
    :func:`falcon_sc._validate.check_fit`.
    """

    n_neighbors: int = param(20, Int(1))
    children_prior: Any = param("auto", Anything())
    init: str = param("leiden", Choice(INITS))
    hidden: Sequence[int] = param((64, 64, 64, 64), Widths())
    guard_warm_start: bool = param(True, Bool())
    accelerator: str = param("auto", Choice(ACCELERATORS))
    devices: int = param(1, Int(1))
    random_state: int = param(0, Int(0))

    def __post_init__(self) -> None:
        if not isinstance(self.children_prior, Mapping):
            Choice(PRIORS)("children_prior", self.children_prior)
        super().__post_init__()
        if isinstance(self.children_prior, Mapping):  # plain() made no tuple of it; keep a dict of its own
            object.__setattr__(self, "children_prior", dict(self.children_prior))


#: Defaults of :func:`falcon_sc.tl.refine_images` that differ from the cells' (measured on the image benchmarks,
#: see ``docs/images.md``): warm start from k-means on the backbone's features, children where one more cluster
#: explains the most variance, a ResNet's learning rate and minibatch.
IMAGE_DEFAULTS: dict[str, Any] = {"init": "kmeans", "children_prior": "variance", "lr": 1e-3, "batch_size": 256}
