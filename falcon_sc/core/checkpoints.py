"""Training checkpoints that are never trusted blindly: a fingerprint of the run, a digest, and a safe, checked read.

A checkpoint of :func:`~falcon_sc.core.training.train_minibatches` holds, beside the loop state, a *fingerprint*
(plain values: the data's shape and hash, the network's parameter names and shapes, the settings that change the
result, the plan's identity and what the caller adds) and a *digest* (blake2b of everything else in it). A resume
reads the file with ``weights_only=True`` (tensors and plain values only: nothing is unpickled that could run code),
checks the digest, compares the fingerprint with the run's own and checks the structure of the loop state before
anything is restored. Every failure is one :class:`~falcon_sc.errors.CheckpointError` that names the file, says
what is wrong and what to do.
"""

from __future__ import annotations

import hashlib
import pickle
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from scipy import sparse

from ..errors import CheckpointError

if TYPE_CHECKING:
    from lightning_fabric import Fabric

FORMAT = 1
"""Version of the checkpoint layout (stored in the fingerprint)."""

CHUNK_BYTES = 1 << 24
"""Bytes hashed at a time (tensors on an accelerator are moved to the CPU one chunk at a time)."""

LOOP_KEYS = ("model", "optimizer", "plan", "scheduler", "rng", "history", "n_step", "epoch")
"""The loop state every checkpoint holds (older falcon_sc versions wrote these keys only)."""

ADVICE = "Delete the file or pass another checkpoint_path to start afresh, or resume=False to overwrite it."


# ---------------------------------------------------------------------------------------------------- hashing
def _byte_chunks(array: np.ndarray | torch.Tensor, as_int64: bool = False) -> Iterator[bytes | memoryview]:
    """The bytes of ``array`` (C order) in chunks of about :data:`CHUNK_BYTES`; integers as int64 with ``as_int64``."""
    if isinstance(array, torch.Tensor):
        flat_t = array.detach().reshape(-1)
        step = max(1, CHUNK_BYTES // max(1, flat_t.element_size()))
        for start in range(0, flat_t.numel(), step):
            part = flat_t[start : start + step].cpu().contiguous()
            if as_int64 and not part.is_floating_point():
                part = part.long()
            yield part.view(torch.uint8).numpy().tobytes()
        return
    flat = np.asarray(array).reshape(-1)
    step = max(1, CHUNK_BYTES // max(1, flat.itemsize))
    for start in range(0, flat.size, step):
        chunk = np.ascontiguousarray(flat[start : start + step])
        if as_int64 and chunk.dtype.kind in "iub":
            chunk = chunk.astype(np.int64)
        yield chunk.data.cast("B")


def array_digest(*arrays: np.ndarray | torch.Tensor, as_int64: bool = False) -> str:
    """blake2b (8 bytes, hex) of the arrays' shapes and values, read chunk by chunk; consumes no random numbers.

    ``as_int64``: integers are hashed as int64 (CSR indices are int32 or int64 depending on how they were made).
    """
    h = hashlib.blake2b(digest_size=8)
    for array in arrays:
        kind = "int64" if as_int64 else str(array.dtype)
        h.update(f"{kind}{tuple(int(d) for d in array.shape)};".encode())
        for chunk in _byte_chunks(array, as_int64):
            h.update(chunk)
    return h.hexdigest()


def data_fingerprint(data: Any) -> dict[str, Any]:
    """Kind, shape and hash of the input rows: a dense tensor, a CSR matrix or a lazy sample source.

    A sample source (e.g. :class:`falcon_sc.data.ImageFiles`) is identified by its type, its shape and, when it has
    one, its ``fingerprint`` (an attribute, or a method called without arguments): its samples are not read.
    """
    shape = [int(d) for d in data.shape]
    if isinstance(data, torch.Tensor):
        return {"kind": "dense", "shape": shape, "hash": array_digest(data)}
    if sparse.issparse(data):
        csr = sparse.csr_matrix(data)
        digest = array_digest(csr.data, csr.indices, csr.indptr, as_int64=True)
        return {"kind": "sparse", "shape": shape, "hash": digest}
    mark = getattr(data, "fingerprint", None)
    mark = mark() if callable(mark) else mark
    return {"kind": type(data).__name__, "shape": shape, "hash": None if mark is None else str(mark)}


def plain(value: Any) -> Any:
    """``value`` as plain values only: dicts with str keys, lists, str, int, float, bool and None.

    What a checkpoint read with ``weights_only=True`` may hold; anything else becomes its ``str``.
    """
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        return plain(value.item())
    if value is None or isinstance(value, str | bool | int | float):
        return value
    return str(value)


def state_digest(state: Any) -> str:
    """blake2b of a checkpoint's content (nested dicts, lists, tensors and plain values), in order."""
    h = hashlib.blake2b(digest_size=16)
    _feed(h, state)
    return h.hexdigest()


def _feed(h: Any, value: Any) -> None:
    if isinstance(value, Mapping):
        h.update(f"d{len(value)}(".encode())
        for key, item in value.items():
            _feed(h, key)
            _feed(h, item)
        h.update(b")")
    elif isinstance(value, list | tuple):
        h.update(f"l{len(value)}(".encode())
        for item in value:
            _feed(h, item)
        h.update(b")")
    elif isinstance(value, torch.Tensor):
        h.update(f"t{value.dtype}{tuple(value.shape)}:".encode())
        for chunk in _byte_chunks(value):
            h.update(chunk)
    else:
        h.update(f"{type(value).__name__}:{value!r};".encode())


# ---------------------------------------------------------------------------------------------------- errors
def invalid(path: str | Path, reason: str) -> CheckpointError:
    """The error of a file that is not a valid falcon_sc checkpoint for this model."""
    return CheckpointError(
        f"checkpoint_path={str(path)!r} is not a valid falcon_sc checkpoint for this model: {reason}. {ADVICE}"
    )


def mismatch(path: str | Path, differences: list[str]) -> CheckpointError:
    """The error of a checkpoint written for other data or other settings (``differences``: checkpoint vs run)."""
    return CheckpointError(
        f"checkpoint_path={str(path)!r} was written for other data or other settings and cannot be resumed: "
        f"{'; '.join(differences)} (checkpoint vs this run). {ADVICE}"
    )


def error_reason(err: BaseException) -> str:
    """A short account of ``err`` (its type and the first line of its message, never torch's loading advice)."""
    lines = str(err).strip().splitlines()
    first = lines[0][:160] if lines and "weights_only" not in str(err) else ""
    return type(err).__name__ + (f": {first}" if first else "")


# ---------------------------------------------------------------------------------------------------- reading
def read_checkpoint(fabric: Fabric | None, path: str | Path) -> dict[str, Any]:
    """The checkpoint at ``path``, read with ``weights_only=True`` (by ``fabric``, else onto the CPU), digest checked.

    Raises
    ------
    CheckpointError
        The file cannot be read (truncated, damaged, another format), holds objects that only code could rebuild
        (never unpickled), is not a falcon_sc checkpoint, has no fingerprint (an older falcon_sc) or no longer
        matches its digest.
    """
    try:
        with warnings.catch_warnings():  # torch's remarks on the pickle protocol of a foreign file
            warnings.simplefilter("ignore", UserWarning)
            if fabric is None:
                content = torch.load(path, map_location="cpu", weights_only=True)
            else:
                content = fabric.load(path, weights_only=True)
    except pickle.UnpicklingError:
        raise invalid(path, "it holds objects other than tensors and plain values (they were not unpickled)") from None
    except Exception as err:
        reason = f"it cannot be read as a torch checkpoint ({type(err).__name__}; truncated, damaged or not one)"
        raise invalid(path, reason) from None
    if not isinstance(content, dict):
        raise invalid(path, f"it holds a {type(content).__name__}, not the dict of a training checkpoint")
    if "fingerprint" not in content:
        if all(key in content for key in LOOP_KEYS):
            raise invalid(
                path,
                "it has no fingerprint (written by an older falcon_sc), so it cannot be checked against this run's "
                "data and settings",
            )
        keys = ", ".join(sorted(str(k) for k in content)[:8]) or "none"
        raise invalid(path, f"it is not a falcon_sc training checkpoint (its keys: {keys})")
    absent = [key for key in LOOP_KEYS if key not in content]
    if absent:
        raise invalid(path, f"it lacks the entries {absent} of a training checkpoint")
    digest = content.pop("digest", None)
    if not isinstance(digest, str) or digest != state_digest(content):
        raise invalid(path, "it is damaged: its content no longer matches the digest written with it")
    return content


def check_before_training(path: str | Path, current: Mapping[str, Any]) -> None:
    """Refuse, before any training, a checkpoint that cannot be resumed by this run.

    The file is read and its digest checked (:func:`read_checkpoint`), and its fingerprint is compared with
    ``current``: the sections of this run's fingerprint known before a warm start (e.g. ``data``, ``extra`` and some
    ``settings``; the keys of a section absent from ``current`` are not compared). The training loop checks the
    whole fingerprint and the structure again when it resumes.

    Raises
    ------
    CheckpointError
        As :func:`read_checkpoint`, or the fingerprint differs (the message says what differs).
    """
    content = read_checkpoint(None, path)
    saved = content["fingerprint"] if isinstance(content["fingerprint"], dict) else {}
    current = plain(dict(current))
    subset: dict[str, Any] = {}
    for section, now in current.items():
        before = saved.get(section)
        if section != "data" and isinstance(now, dict) and isinstance(before, dict):
            before = {key: before.get(key, "absent") for key in now}
        subset[section] = before
    differences = fingerprint_differences(subset, current)
    if differences:
        raise mismatch(path, differences)


# ---------------------------------------------------------------------------------------------------- comparing
def fingerprint_differences(saved: Any, current: Mapping[str, Any]) -> list[str]:
    """What differs between a checkpoint's fingerprint ``saved`` and the run's ``current``, in words."""
    saved = saved if isinstance(saved, dict) else {}
    found: list[str] = []
    for section, now in current.items():
        before = saved.get(section)
        if same(before, now):
            continue
        if section == "data":
            found += _data_differences(before, now)
        elif section == "network":
            found.append(_network_difference(before, now))
        elif isinstance(now, dict) and isinstance(before, dict):
            for key in [*now, *(k for k in before if k not in now)]:
                if not same(before.get(key, "absent"), now.get(key, "absent")):
                    found.append(f"{key} {short(before.get(key, 'absent'))} vs {short(now.get(key, 'absent'))}")
        else:
            found.append(f"{section} {short(before)} vs {short(now)}")
    return list(dict.fromkeys(found))


def same(a: Any, b: Any) -> bool:
    """Plain equality that never raises (a hand-edited fingerprint may hold tensors)."""
    try:
        equal = a == b
    except Exception:
        return False
    return equal if isinstance(equal, bool) else False


def short(value: Any, width: int = 60) -> str:
    """``value`` for a message: floats with ``%g``, strings as they are, anything else its repr; cut to ``width``."""
    text = f"{value:g}" if isinstance(value, float) else value if isinstance(value, str) else repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _data_differences(before: Any, now: Mapping[str, Any]) -> list[str]:
    before = before if isinstance(before, dict) else {}
    out = []
    if not same(before.get("kind"), now.get("kind")):
        out.append(f"data kind {short(before.get('kind'))} vs {short(now.get('kind'))}")
    if not same(before.get("shape"), now.get("shape")):
        out.append(f"data shape {short(before.get('shape'))} vs {short(now.get('shape'))}")
    if not same(before.get("hash"), now.get("hash")):
        out.append(f"the data differ (hash {short(before.get('hash'))} vs {short(now.get('hash'))})")
    return out or ["the data differ"]


def _network_difference(before: Any, now: Mapping[str, Any]) -> str:
    if not isinstance(before, dict):
        return "the network differs"
    parts = [f"{name} {short(before.get(name, 'absent'))} vs {short(shape)}" for name, shape in now.items()]
    parts = [p for p, name in zip(parts, now, strict=True) if not same(before.get(name), now[name])]
    parts += [f"{name} {short(before[name])} vs absent" for name in before if name not in now]
    return "the network differs (" + ", ".join(parts[:3]) + (", ..." if len(parts) > 3 else "") + ")"


# ---------------------------------------------------------------------------------------------------- structure
def loop_state_problem(
    content: Mapping[str, Any],
    *,
    network: Mapping[str, torch.Tensor],
    optimizer: Mapping[str, Any],
    param_shapes: Mapping[int, tuple[int, ...]],
    scheduler: Mapping[str, Any],
    rng_kind: str,
    n_epochs: int,
    steps_after: Any,
) -> str | None:
    """What is wrong with the loop state of a checkpoint (``None``: nothing), checked before anything is restored.

    ``network``, ``optimizer``, ``scheduler``: the run's fresh state dicts the saved ones must match in keys, types
    and shapes; ``param_shapes``: the shape of each parameter the optimiser numbers; ``rng_kind``: the bit
    generator's name; ``steps_after(epoch)``: the steps taken when ``epoch`` has ended.
    """
    problem = _counters_problem(content, n_epochs, steps_after)
    if problem is None:
        problem = _tensors_problem("the network", content["model"], network)
    if problem is None:
        problem = _optimizer_problem(content["optimizer"], optimizer, param_shapes)
    if problem is None:
        problem = _scheduler_problem(content["scheduler"], scheduler, content["epoch"])
    if problem is None:
        rng = content["rng"]
        if not isinstance(rng, dict) or rng.get("bit_generator") != rng_kind:
            problem = f"its random state is not that of a {rng_kind} generator"
    if problem is None and not isinstance(content["plan"], dict):
        problem = f"its plan state is a {type(content['plan']).__name__}, not a dict"
    if problem is None:
        problem = _finite_problem(content)
    return problem


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _counters_problem(content: Mapping[str, Any], n_epochs: int, steps_after: Any) -> str | None:
    """The epoch, the step count and the history agree with each other and with ``n_epochs``."""
    epoch, n_step, history = content["epoch"], content["n_step"], content["history"]
    if not _is_int(epoch) or not 0 <= epoch < n_epochs:
        return f"its epoch {short(epoch)} is not an epoch of this run (0 to {n_epochs - 1})"
    if not _is_int(n_step) or n_step != steps_after(epoch):
        return f"its step count {short(n_step)} is not the {steps_after(epoch)} steps taken after epoch {epoch}"
    if not isinstance(history, list) or len(history) != epoch + 1:
        return f"its history is not a list of {epoch + 1} epoch records"
    for i, record in enumerate(history):
        if not isinstance(record, dict) or not all(isinstance(k, str) for k in record) or record.get("epoch") != i:
            return f"its history record {i} is not the record of epoch {i}"
    return None


def _tensors_problem(what: str, saved: Any, expected: Mapping[str, torch.Tensor]) -> str | None:
    """``saved`` holds a tensor of the same shape for every entry of ``expected``, and nothing else."""
    if not isinstance(saved, dict):
        return f"{what} is a {type(saved).__name__}, not a state dict"
    if set(saved) != set(expected):
        missing = sorted(set(expected) - set(saved), key=str)[:3]
        extra = sorted(set(saved) - set(expected), key=str)[:3]
        return f"{what} has other entries (missing {missing}, unexpected {extra})"
    for name, tensor in expected.items():
        value = saved[name]
        if not isinstance(value, torch.Tensor) or value.shape != tensor.shape:
            return f"{what}'s entry {name!r} is not a tensor of shape {tuple(tensor.shape)}"
    return None


def _optimizer_problem(saved: Any, fresh: Mapping[str, Any], shapes: Mapping[int, tuple[int, ...]]) -> str | None:
    """The optimiser state has the fresh one's groups, parameters and settings, and state tensors of their shapes."""
    if not isinstance(saved, dict) or set(saved) != {"state", "param_groups"}:
        return "its optimiser state is not a torch optimiser's state dict"
    groups, fresh_groups = saved["param_groups"], fresh["param_groups"]
    if not isinstance(groups, list) or len(groups) != len(fresh_groups):
        return "its optimiser has other parameter groups"
    for group, new in zip(groups, fresh_groups, strict=True):
        if not isinstance(group, dict) or set(group) != set(new) or group["params"] != new["params"]:
            return "its optimiser has other parameter groups (another optimizer?)"
        if any(type(group[k]) is not type(new[k]) for k in new):
            return "its optimiser's settings have other types"
    state = saved["state"]
    if not isinstance(state, dict) or not set(state) <= set(shapes):
        return "its optimiser state names unknown parameters"
    for index, entry in state.items():
        if not isinstance(entry, dict) or not all(isinstance(k, str) for k in entry):
            return f"its optimiser state of parameter {index} is not a dict"
        for value in entry.values():
            if not isinstance(value, torch.Tensor | int | float) or isinstance(value, bool):
                return f"its optimiser state of parameter {index} holds a {type(value).__name__}"
            if isinstance(value, torch.Tensor) and value.dim() > 0 and tuple(value.shape) != shapes[index]:
                return f"its optimiser state of parameter {index} has the shape {tuple(value.shape)}"
    return None


def _scheduler_problem(saved: Any, fresh: Mapping[str, Any], epoch: int) -> str | None:
    """The learning-rate schedule is the fresh one's, ``epoch + 1`` epochs on."""
    if not isinstance(saved, dict) or set(saved) != set(fresh):
        return "its learning-rate schedule is not this run's"
    if any(type(saved[k]) is not type(fresh[k]) for k in fresh):
        return "its learning-rate schedule has values of other types"
    if not all(same(saved[k], fresh[k]) for k in ("milestones", "gamma", "base_lrs")):
        return "its learning-rate schedule has other milestones or rates"
    if saved["last_epoch"] != epoch + 1:
        return f"its learning-rate schedule is at epoch {short(saved['last_epoch'])}, not {epoch + 1}"
    lrs = saved["_last_lr"]
    if len(lrs) != len(fresh["_last_lr"]) or not all(isinstance(v, float | int) for v in lrs):
        return "its learning-rate schedule holds other learning rates"
    return None


def _finite_problem(content: Mapping[str, Any]) -> str | None:
    """Every floating-point tensor of the network, the optimiser and the plan is finite."""
    for key in ("model", "optimizer", "plan"):
        for tensor in _tensors(content[key]):
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                return f"its {'network' if key == 'model' else key} state holds non-finite values"
    return None


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _tensors(item)
