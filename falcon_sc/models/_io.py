"""The saved-model folder of :class:`~falcon_sc.FalconModel`: settings (JSON), weights (tensors), preprocessing (npz).

Nothing in the folder is a pickle: it is read with ``torch.load(weights_only=True)`` and
``numpy.load(allow_pickle=False)``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..pp import FeatureTransform
from ._params import SetupParams
from ._state import FittedState
from .mlp import MLPClassifier

#: version of the saved-model layout; :func:`load_model` refuses any other
FORMAT_VERSION = 1
FILES = {"settings": "model.json", "weights": "weights.pt", "arrays": "preprocessing.npz"}


def json_ready(value: Any) -> Any:
    """Numpy scalars/arrays and tuples as plain JSON values."""
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def save_model(path: Path, model_class: str, setup: SetupParams, fitted: FittedState, *, overwrite: bool) -> None:
    """Write ``fitted`` (and the setup it was fitted with) into the folder ``path``."""
    from .._version import __version__

    if path.exists() and any(path.iterdir()) and not overwrite:
        raise FileExistsError(f"{str(path)!r} exists and is not empty; pass overwrite=True to replace it.")
    path.mkdir(parents=True, exist_ok=True)
    transform_settings, arrays = fitted.transform.state()
    network = fitted.network
    assert isinstance(network, MLPClassifier)
    settings = {
        "model_class": model_class,
        "format_version": FORMAT_VERSION,
        "falcon_sc_version": __version__,
        "setup": json_ready(asdict(setup)),
        "params": json_ready(fitted.params),
        "coarse_names": fitted.coarse_names,
        "fine_names": fitted.fine_names,
        "relation": fitted.relation.astype(int).tolist(),
        "use_warm": fitted.use_warm.astype(bool).tolist(),
        "hidden": fitted.hidden,
        "n_input": network.n_input,
        "history": json_ready(fitted.history),
        "transform": transform_settings,
    }
    (path / FILES["settings"]).write_text(json.dumps(settings, indent=1))
    weights = {f"network.{k}": v for k, v in network.state_dict().items()}
    if fitted.warm_network is not None:
        weights.update({f"warm.{k}": v for k, v in fitted.warm_network.state_dict().items()})
    torch.save(weights, path / FILES["weights"])
    np.savez(path / FILES["arrays"], **arrays)  # type: ignore[arg-type]  # numpy stubs: **kwds typed as allow_pickle


def _read_settings(path: Path, model_class: str) -> dict[str, Any]:
    missing = [name for name in FILES.values() if not (path / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{str(path)!r} is not a saved FalconModel: missing {', '.join(missing)}.")
    settings = json.loads((path / FILES["settings"]).read_text())
    if settings.get("model_class") != model_class:
        raise ValueError(
            f"{str(path)!r} holds a {settings.get('model_class')!r}, not a {model_class}; load it with its class."
        )
    if settings.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{str(path)!r} was saved in model format {settings.get('format_version')} by falcon_sc "
            f"{settings.get('falcon_sc_version')}; this falcon_sc reads format {FORMAT_VERSION}. Load it with "
            "that version and refit, or refit with this one."
        )
    return settings


def load_model(path: Path, model_class: str) -> tuple[SetupParams, FittedState]:
    """Read a folder written by :func:`save_model`: the setup and the fitted state."""
    settings = _read_settings(path, model_class)
    with np.load(path / FILES["arrays"], allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    weights = torch.load(path / FILES["weights"], map_location="cpu", weights_only=True)
    n_fine = len(settings["fine_names"])

    def network(prefix: str) -> MLPClassifier | None:
        state = {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
        if not state:
            return None
        net = MLPClassifier(settings["n_input"], n_fine, settings["hidden"])
        net.load_state_dict(state)
        return net.eval()

    main = network("network.")
    assert main is not None
    fitted = FittedState(
        transform=FeatureTransform.from_state(settings["transform"], arrays),
        coarse_names=settings["coarse_names"],
        fine_names=settings["fine_names"],
        relation=np.asarray(settings["relation"], dtype=np.int8),
        use_warm=np.asarray(settings["use_warm"], dtype=bool),
        network=main,
        warm_network=network("warm."),
        hidden=settings["hidden"],
        params=settings["params"],
        history=settings["history"],
    )
    return SetupParams(**settings["setup"]), fitted
