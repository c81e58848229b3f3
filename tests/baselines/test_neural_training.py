"""The neural baselines train through the Fabric-wrapped network (mixed precision and DDP live in the wrapper)."""

from __future__ import annotations

import pytest
import torch
from lightning_fabric import Fabric

import falcon_sc.core.training as training
from falcon_sc.baselines import BASELINES

from ..test_baselines import N_FINE, nested_blobs

NEURAL = ["scan_c", "sela", "ancor", "gml", "wcl", "erm"]


@pytest.fixture(scope="module")
def blobs():
    return nested_blobs()


@pytest.mark.parametrize("name", NEURAL)
def test_training_forward_runs_inside_the_fabric_wrapper(blobs, name, monkeypatch):
    """Under bf16-mixed on CPU, a forward pass through the wrapper runs under autocast, one on the bare module not."""
    real_make, real_setup = training.make_fabric, Fabric.setup
    under_autocast: list[bool] = []

    def bf16_fabric(device="cpu", **kw):
        return real_make(device, **{**kw, "precision": "bf16-mixed"})

    def setup(self, module, *optimizers, **kw):
        # training forwards of the optimised network (not the eval read-outs between or after steps)
        module.register_forward_pre_hook(
            lambda mod, args: under_autocast.append(torch.is_autocast_enabled("cpu")) if mod.training else None
        )
        return real_setup(self, module, *optimizers, **kw)

    monkeypatch.setattr(training, "make_fabric", bf16_fabric)
    monkeypatch.setattr(Fabric, "setup", setup)
    kwargs = {"fine_key": "fine"} if name == "erm" else {}
    BASELINES[name](blobs, "coarse", N_FINE, n_steps=3, accelerator="cpu", random_state=0, **kwargs)
    assert under_autocast and all(under_autocast), under_autocast


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [("ancor", {"dim": 16.0}, "dim=16.0 must be an int"), ("sela", {"lam": "25"}, "lam='25' must be a number")],
)
def test_options_of_the_wrong_type_are_type_errors(blobs, name, kwargs, match):
    with pytest.raises(TypeError, match=match):
        BASELINES[name](blobs, "coarse", N_FINE, **kwargs)
