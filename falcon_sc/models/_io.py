"""The saved-model folder of :class:`~falcon_sc.FalconModel`: settings (JSON), weights (tensors), preprocessing (npz).

Saving is atomic: the files are written into a new folder beside the target, which is then renamed into place (an
older model there is renamed aside first and deleted last), so a failed save leaves the previous model loadable and
no temporary folder behind.

Loading trusts nothing in the folder: ``model.json`` is checked against the schema of :mod:`._schema` (every field's
type and range, and the fields against each other) before anything is built, the arrays and tensors against the
shapes the settings imply, and every value for being finite. Nothing is unpickled: the weights are read with
``torch.load(weights_only=True)`` and the arrays with ``numpy.load(allow_pickle=False)``. Every problem is one
:class:`~falcon_sc.errors.SavedModelError` naming the file and the field, entry or tensor.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import uuid
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import SavedModelError
from ..pp import FeatureTransform
from ._params import SetupParams
from ._schema import (
    RULES,
    SETTINGS,
    SETUP,
    array_problem,
    array_specs,
    arrays_agree,
    broken,
    check_fields,
    weights_problem,
)
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


# ---------------------------------------------------------------------- save
def _check_target(path: Path, overwrite: bool) -> None:
    """Refuse what a save must not replace, before anything is written.

    That is: a file, a non-empty folder without ``overwrite``, any folder that is not a saved model, and the
    working directory (or a folder holding it), which the save would replace under the running process.
    """
    if not path.exists():
        return
    cwd = Path.cwd().resolve()
    if path == cwd or path in cwd.parents:
        raise FileExistsError(
            f"{str(path)!r} is the working directory (or holds it); a save replaces its folder as a whole, so give a "
            "folder inside it instead, e.g. model.save('model')."
        )
    if not path.is_dir():
        raise FileExistsError(f"{str(path)!r} is a file; give the path of a folder to save the model into.")
    entries = list(path.iterdir())
    if not entries:
        return
    if not overwrite:
        raise FileExistsError(f"{str(path)!r} exists and is not empty; pass overwrite=True to replace it.")
    foreign = sorted(e.name for e in entries if e.name not in FILES.values() or not e.is_file())
    if foreign or not (path / FILES["settings"]).is_file():
        held = f"it holds {foreign[:5]}" if foreign else f"it has no {FILES['settings']}"
        raise FileExistsError(
            f"{str(path)!r} is not a saved FalconModel ({held}); overwrite=True replaces only a folder written by "
            "FalconModel.save, never other files. Choose another folder, or empty this one yourself."
        )


def _sibling(path: Path, tag: str) -> Path:
    """A new name beside ``path`` (same folder, so a rename never copies), hidden and unique."""
    return path.parent / f".{path.name}.{tag}-{uuid.uuid4().hex[:12]}"


def _move_into_place(tmp: Path, path: Path) -> None:
    """Rename the finished folder ``tmp`` to ``path``; a model there is renamed aside first and deleted last."""
    if path.is_dir() and not any(path.iterdir()):
        path.rmdir()
    if not path.exists():
        os.rename(tmp, path)
        return
    old = _sibling(path, "old")
    os.rename(path, old)
    try:
        os.rename(tmp, path)
    except BaseException:
        os.rename(old, path)  # the previous model goes back where it was
        raise
    shutil.rmtree(old, ignore_errors=True)


def _settings(model_class: str, setup: SetupParams, fitted: FittedState) -> dict[str, Any]:
    from .._version import __version__

    network = fitted.network
    assert isinstance(network, MLPClassifier)
    transform_settings, _ = fitted.transform.state()
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
    if fitted.schemes is not None:  # several coarse schemes (one scheme: no such field, as format 1 always had)
        settings["schemes"] = json_ready(
            {k: fitted.schemes[k] for k in ("keys", "names", "relations", "joint", "groups")}
        )
    return settings


def save_model(path: Path, model_class: str, setup: SetupParams, fitted: FittedState, *, overwrite: bool) -> None:
    """Write ``fitted`` (and the setup it was fitted with) into the folder ``path``, atomically.

    ``path`` may be missing, an empty folder, or (with ``overwrite``) a folder written by this function; anything
    else is refused before a file is written. The files go into a new folder beside ``path`` that is renamed into
    place at the end; on any failure it is deleted and what was at ``path`` stays as it was.
    """
    path = path.resolve()  # ".", ".." and a link to a folder: the real folder, whose parent holds the new one
    _check_target(path, overwrite)
    settings = _settings(model_class, setup, fitted)
    _, arrays = fitted.transform.state()
    weights = {f"network.{k}": v for k, v in fitted.network.state_dict().items()}
    if fitted.warm_network is not None:
        weights.update({f"warm.{k}": v for k, v in fitted.warm_network.state_dict().items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, "saving")
    tmp.mkdir()
    if path.is_dir():  # the folder replaced keeps its permissions
        os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
    try:
        (tmp / FILES["settings"]).write_text(json.dumps(settings, indent=1))
        torch.save(weights, tmp / FILES["weights"])
        np.savez(tmp / FILES["arrays"], **arrays)  # type: ignore[arg-type]  # numpy stubs: **kwds typed as allow_pickle
        _move_into_place(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ---------------------------------------------------------------------- load
def _parse_settings(file: Path) -> Any:
    """``model.json`` parsed; an error naming the line for text that is not JSON."""
    try:
        return json.loads(file.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise broken(file, "the file", f"is not UTF-8 text (byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise broken(file, f"line {err.lineno}, column {err.colno}", f"is not valid JSON ({err.msg})") from None
    except (OSError, ValueError, RecursionError) as err:
        raise broken(file, "the file", f"cannot be read ({type(err).__name__}: {err})") from None


def read_settings(path: Path, model_class: str) -> tuple[dict[str, Any], SetupParams]:
    """``model.json`` of the folder ``path``, checked field by field and as a whole, with its setup."""
    file = path / FILES["settings"]
    settings = _parse_settings(file)
    if not isinstance(settings, dict):
        raise broken(file, "the file", "must hold a JSON object")
    if settings.get("model_class") != model_class:
        found = settings.get("model_class")
        raise broken(file, "field 'model_class'", f"is {found!r}: the folder holds a {found}, not a {model_class}")
    if settings.get("format_version") != FORMAT_VERSION:
        version, by = settings.get("format_version"), settings.get("falcon_sc_version")
        raise broken(
            file,
            "field 'format_version'",
            f"is {version!r}: the model was saved in format {version!r} by falcon_sc {by}, and this falcon_sc reads "
            f"format {FORMAT_VERSION}. Load it with that version and refit, or refit with this one",
        )
    found = check_fields(settings, SETTINGS)
    for name, rule in RULES:
        if found is not None:
            break
        problem = rule(settings)
        found = problem if isinstance(problem, tuple) else None if problem is None else (name, problem)
    if found is not None:
        raise broken(file, f"field {found[0]!r}", found[1])
    try:
        setup = SetupParams(**{k: settings["setup"][k] for k in SETUP})
    except (TypeError, ValueError) as err:
        raise broken(file, "field 'setup'", f"is refused: {err}") from None
    return settings, setup


def _claims_fit(npz: Any, name: str, disk_size: int) -> bool:
    """Whether the npy header of entry ``name`` claims no more bytes than the archive holds (checked unallocated)."""
    info = npz.zip.getinfo(f"{name}.npy")
    if info.compress_type == zipfile.ZIP_STORED and info.file_size > disk_size:
        return False
    with npz.zip.open(info) as fp:
        version = np.lib.format.read_magic(fp)
        if version not in ((1, 0), (2, 0)):
            return True  # numpy reads (and checks) the other header versions itself
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(fp)
    return int(np.prod(shape, dtype=object)) * dtype.itemsize <= info.file_size


def _entry(npz: Any, file: Path, name: str) -> np.ndarray:
    """The array ``name`` of the open archive, read without pickles and without trusting its header."""
    try:
        if f"{name}.npy" not in npz.zip.namelist():
            raise broken(file, f"entry {name!r}", "is not an array")
        if not _claims_fit(npz, name, file.stat().st_size):
            raise broken(file, f"entry {name!r}", "claims more data than the file holds")
        return np.asarray(npz[name])
    except SavedModelError:
        raise
    except Exception as err:  # noqa: BLE001  # zipfile, zlib, numpy: any failure of a damaged entry is one error
        raise broken(file, f"entry {name!r}", f"cannot be read ({type(err).__name__}): truncated or damaged") from None


def read_arrays(path: Path, settings: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """``preprocessing.npz``: exactly the arrays the settings imply, each of the expected dtype, shape and finite."""
    file = path / FILES["arrays"]
    try:
        npz = np.load(file, allow_pickle=False)
    except Exception as err:  # noqa: BLE001  # not an archive numpy can open, whatever the reason
        why = "holds pickled objects, which are never loaded" if "pickle" in str(err) else "is truncated or damaged"
        raise broken(file, "the file", f"is not a numpy .npz archive ({type(err).__name__}): it {why}") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise broken(file, "the file", "is a single array, not an .npz archive")
    with npz:
        if "genes" not in npz.files:
            raise broken(file, "entry 'genes'", "is missing")
        genes = _entry(npz, file, "genes")
        use_rep = settings["transform"]["use_rep"] is not None
        problem = array_problem("genes", genes, ("U", (0,) if use_rep else (None,)))
        if problem is not None:
            raise broken(file, "entry 'genes'", problem)
        specs = array_specs(settings, len(genes))
        missing, extra = sorted(specs.keys() - set(npz.files)), sorted(set(npz.files) - specs.keys())
        if missing or extra:
            what = "; ".join(f"{w} {n[:4]}" for w, n in (("lacks", missing), ("has unexpected", extra)) if n)
            raise broken(file, "the file", f"does not hold the arrays model.json implies: {what}")
        arrays = {name: _entry(npz, file, name) for name in specs}
    for name, spec in specs.items():
        problem = array_problem(name, arrays[name], spec)
        if problem is not None:
            raise broken(file, f"entry {name!r}", problem)
    found = arrays_agree(settings, arrays)
    if found is not None:
        if found[0] == "n_input":  # the settings disagree with the arrays: name the field of model.json
            raise broken(path / FILES["settings"], "field 'n_input'", found[1])
        raise broken(file, f"entry {found[0]!r}", found[1])
    return arrays


def read_networks(path: Path, settings: Mapping[str, Any]) -> tuple[MLPClassifier, MLPClassifier | None]:
    """The network and warm-start network of ``weights.pt``, after checking every tensor's name, shape and values."""
    file = path / FILES["weights"]
    try:
        with warnings.catch_warnings():  # torch's warnings about a foreign pickle: the error below says it all
            warnings.simplefilter("ignore")
            weights = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  # whatever torch raises on a foreign file: one error, never its advice
        raise broken(
            file,
            "the file",
            f"cannot be read as tensors ({type(err).__name__}): it is truncated, damaged, of another format, or holds "
            "objects other than tensors (which are never unpickled)",
        ) from None
    found = weights_problem(settings, weights)
    if found is not None:
        raise broken(file, found[0], found[1])

    def network(prefix: str) -> MLPClassifier | None:
        state = {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
        if not state:
            return None
        net = MLPClassifier(settings["n_input"], len(settings["fine_names"]), settings["hidden"])
        net.load_state_dict(state)
        return net.eval()

    main = network("network.")
    assert main is not None
    return main, network("warm.")


def load_model(path: Path, model_class: str) -> tuple[SetupParams, FittedState]:
    """Read a folder written by :func:`save_model`: the setup and the fitted state, every file checked first.

    Raises ``FileNotFoundError`` when ``path`` does not exist and :class:`~falcon_sc.errors.SavedModelError` for
    anything else that is not a complete, consistent saved model of ``model_class``.
    """
    if not path.exists():
        raise FileNotFoundError(f"{str(path)!r} is not a saved {model_class}: missing model.json (no such folder).")
    if not path.is_dir():
        raise broken(path, "the path", f"is a file; give the folder a {model_class} was saved into")
    missing = [name for name in FILES.values() if not (path / name).is_file()]
    if missing:
        raise broken(path, "the folder", f"is not a saved {model_class}: missing {', '.join(missing)}")
    settings, setup = read_settings(path, model_class)
    arrays = read_arrays(path, settings)
    main, warm = read_networks(path, settings)
    fitted = FittedState(
        transform=FeatureTransform.from_state(settings["transform"], arrays),
        coarse_names=settings["coarse_names"],
        fine_names=settings["fine_names"],
        relation=np.asarray(settings["relation"], dtype=np.int8),
        use_warm=np.asarray(settings["use_warm"], dtype=bool),
        network=main,
        warm_network=warm,
        hidden=settings["hidden"],
        params=settings["params"],
        history=settings["history"],
        schemes=None if settings.get("schemes") is None else schemes_state(settings["schemes"]),
    )
    return setup, fitted


def schemes_state(record: Mapping[str, Any]) -> dict[str, Any]:
    """The ``schemes`` of a model's ``model.json`` (checked) as the fitted model keeps them (arrays)."""
    return {
        "keys": list(record["keys"]),
        "names": [list(n) for n in record["names"]],
        "relations": [np.asarray(r, dtype=np.int8) for r in record["relations"]],
        "joint": np.asarray(record["joint"], dtype=np.int64),
        "groups": np.asarray(record["groups"], dtype=np.int64),
    }
