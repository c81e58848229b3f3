"""Each default lives in one place: the parameter objects; the public signatures spell them out and must agree."""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pytest

import falcon_sc as fal
from falcon_sc._checks import defaults
from falcon_sc.core.trainer import FalconConfig
from falcon_sc.models._params import IMAGE_DEFAULTS, FitParams, SetupParams

#: signature arguments that are not parameters of the fit (data, what to write, how to return)
NOT_PARAMS = {"self", "adata", "coarse_key", "n_fine", "key_added", "copy", "return_model"}
#: ``show_progress=None`` in the signatures means "the default": on (the bar waits 2 s, see FalconConfig)
CONVERTED = {"show_progress"}
IMAGE_ONLY = {"image_shape", "backbone", "width", "checkpoint", "view", "teacher_view"}

PARAM_CLASSES = (SetupParams, FitParams, FalconConfig)


def _declared() -> dict[str, object]:
    out: dict[str, object] = {}
    for cls in PARAM_CLASSES:
        for name, value in defaults(cls).items():
            assert name not in out or name == "coarse_key", f"{name} is declared in two parameter objects"
            out[name] = value
    return out


def _signature_defaults(fn) -> dict[str, object]:
    return {
        name: p.default
        for name, p in inspect.signature(fn).parameters.items()
        if name not in NOT_PARAMS and p.kind is not inspect.Parameter.VAR_KEYWORD
    }


def _same(a, b) -> bool:
    if isinstance(a, tuple | list) or isinstance(b, tuple | list):
        return isinstance(a, tuple | list) and isinstance(b, tuple | list) and list(a) == list(b)
    return type(a) is type(b) and a == b


@pytest.mark.parametrize(
    ("fn", "overrides", "extra"),
    [
        (fal.tl.refine, {}, set()),
        (fal.FalconModel.__init__, {}, set()),
        (fal.FalconModel.fit, {}, set()),
        (fal.tl.refine_images, IMAGE_DEFAULTS, IMAGE_ONLY),
    ],
    ids=["refine", "FalconModel", "FalconModel.fit", "refine_images"],
)
def test_signature_defaults_agree_with_parameter_objects(fn, overrides, extra):
    declared = {**_declared(), **overrides}
    seen = _signature_defaults(fn)
    unknown = sorted(set(seen) - set(declared) - extra)
    assert not unknown, f"{fn.__qualname__}: arguments without a parameter object: {unknown}"
    wrong = {
        name: (value, declared[name])
        for name, value in seen.items()
        if name in declared and name not in CONVERTED and not _same(value, declared[name])
    }
    assert not wrong, f"{fn.__qualname__}: signature default != declared default: {wrong}"


def test_refine_and_fit_take_the_same_parameters():
    """``refine`` passes every fit parameter on: the two signatures hold the same ones with the same defaults."""
    refine = _signature_defaults(fal.tl.refine)
    model = {**_signature_defaults(fal.FalconModel.__init__), **_signature_defaults(fal.FalconModel.fit)}
    only_model = {"devices", "precision", "checkpoint_path", "resume"}  # the training engine's, on the model
    assert set(model) - only_model == set(refine)
    assert all(_same(refine[k], model[k]) for k in refine)


def test_image_overrides_are_parameters_with_other_values():
    declared = _declared()
    for name, value in IMAGE_DEFAULTS.items():
        assert name in declared and not _same(value, declared[name]), name


def test_parameter_objects_validate_and_make_plain_values():
    fit = FitParams(n_neighbors=np.int64(7), hidden=np.array([8, 4]), random_state=np.int32(3))
    assert fit.n_neighbors == 7 and type(fit.n_neighbors) is int
    assert fit.hidden == (8, 4) and all(type(h) is int for h in fit.hidden)
    with pytest.raises(TypeError, match="n_neighbors=True must be an int"):
        FitParams(n_neighbors=True)
    with pytest.raises(ValueError, match="n_comps=1 must be an int >= 2"):
        SetupParams(n_comps=1)
    with pytest.raises(ValueError, match="children_prior='big' must be one of"):
        FitParams(children_prior="big")
    assert FitParams(children_prior={"a": 2}).children_prior == {"a": 2}
    with pytest.raises(dataclasses.FrozenInstanceError):
        fit.n_neighbors = 3  # type: ignore[misc]
