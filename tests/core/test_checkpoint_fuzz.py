"""A damaged, forged or foreign checkpoint is never trusted: every resume either continues the run exactly or raises one
:class:`~falcon_sc.errors.CheckpointError`, and nothing in the file ever runs.

The fuzz test mutates a real FALCON checkpoint (truncation, flipped or overwritten bytes, random bytes, pickles whose
loading would create a file, and loaded-then-edited state dicts, saved with or without a recomputed digest).
"""

from __future__ import annotations

import copy
import io
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from falcon_sc.core.checkpoints import state_digest
from falcon_sc.core.trainer import FalconConfig, train_falcon
from falcon_sc.errors import CheckpointError
from falcon_sc.models.mlp import MLPClassifier

N_EPOCHS = 3


class CodePayload:
    """Unpickling this would create the file ``marker``: a stand-in for any code a checkpoint could carry."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _data(seed: int = 0):
    rng = np.random.default_rng(seed)
    coarse = np.repeat(np.arange(3), 30)
    X = (rng.normal(size=(90, 8)) + coarse[:, None]).astype(np.float32)
    neighbors = np.stack([rng.choice(np.flatnonzero(coarse == c), 5) for c in coarse])
    relation = np.zeros((6, 3), dtype=np.int8)
    relation[np.arange(6), np.arange(6) // 2] = 1
    return X, coarse, neighbors, relation


def run(path: Path | None, resume: bool = False, X: np.ndarray | None = None, **kw):
    """A tiny FALCON run (3 epochs of 3 steps), checkpointed to ``path``."""
    X0, coarse, neighbors, relation = _data()
    cfg = FalconConfig(
        n_epochs=N_EPOCHS,
        batch_size=32,
        relation_every=2,
        show_progress=False,
        checkpoint_path=None if path is None else str(path),
        resume=resume,
        **kw,
    )
    torch.manual_seed(0)
    net = MLPClassifier(8, 6, hidden=[16])
    return train_falcon(net, X0 if X is None else X, coarse, neighbors, 3, cfg, relation=relation, seed=0)


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """The uninterrupted run's result and the checkpoint of the same run killed after its second epoch."""
    from lightning_fabric import Fabric

    folder = tmp_path_factory.mktemp("ck")
    straight = run(None)
    real_save = Fabric.save

    def killed(self, p, state):
        real_save(self, p, state)
        if state["epoch"] == 1:
            raise KeyboardInterrupt

    Fabric.save = killed
    try:
        with pytest.raises(KeyboardInterrupt):
            run(folder / "ck.pt")
    finally:
        Fabric.save = real_save
    data = (folder / "ck.pt").read_bytes()
    content = torch.load(io.BytesIO(data), weights_only=True)
    return straight, data, content


def _saved(content) -> bytes:
    buf = io.BytesIO()
    torch.save(content, buf)
    return buf.getvalue()


def _edit(content, edit: str, redigest: bool):
    """``content`` with one field edited (a copy); ``redigest``: the digest recomputed, as a careful forger would."""
    c = copy.deepcopy(content)
    c.pop("digest", None)
    plan, model = c["plan"], c["model"]
    first = next(iter(model))
    edits = {
        "epoch out of range": lambda: c.update(epoch=N_EPOCHS),
        "epoch negative": lambda: c.update(epoch=-1),
        "epoch a string": lambda: c.update(epoch="1"),
        "epoch a bool": lambda: c.update(epoch=True),
        "history not a list": lambda: c.update(history="x"),
        "history too short": lambda: c.update(history=c["history"][:-1]),
        "history record not a dict": lambda: c["history"].__setitem__(0, 5),
        "n_step negative": lambda: c.update(n_step=-1),
        "n_step off by one": lambda: c.update(n_step=c["n_step"] + 1),
        "rng empty": lambda: c.update(rng={}),
        "rng other generator": lambda: c["rng"].update(bit_generator="MT19937"),
        "rng state garbage": lambda: c["rng"].update(state="x"),
        "network entry missing": lambda: model.pop(first),
        "network entry reshaped": lambda: model.__setitem__(first, model[first].reshape(-1)),
        "network entry nan": lambda: model[first].view(-1).__setitem__(0, float("nan")),
        "network entry a list": lambda: model.__setitem__(first, model[first].tolist()),
        "optimizer empty": lambda: c.update(optimizer={}),
        "optimizer no groups": lambda: c["optimizer"].update(param_groups=[]),
        "optimizer state reshaped": lambda: c["optimizer"]["state"][0].update(exp_avg=torch.zeros(3)),
        "scheduler ahead": lambda: c["scheduler"].update(last_epoch=99),
        "scheduler empty": lambda: c.update(scheduler={}),
        "plan not a dict": lambda: c.update(plan="x"),
        "relations empty": lambda: plan.update(relations=[]),
        "relation doubled": lambda: plan.update(relations=[plan["relations"][0] * 2]),
        "teacher updates negative": lambda: plan.update(teacher_updates=-1),
        "teacher empty": lambda: plan.update(teacher={}),
        "no fingerprint": lambda: c.pop("fingerprint"),
        "fingerprint a string": lambda: c.update(fingerprint="x"),
        "fingerprint data hash": lambda: c["fingerprint"]["data"].update(hash="0"),
        "no network": lambda: c.pop("model"),
    }
    edits[edit]()
    if redigest:
        c["digest"] = state_digest(c)
    return c


EDIT_NAMES = [
    "epoch out of range",
    "epoch negative",
    "epoch a string",
    "epoch a bool",
    "history not a list",
    "history too short",
    "history record not a dict",
    "n_step negative",
    "n_step off by one",
    "rng empty",
    "rng other generator",
    "rng state garbage",
    "network entry missing",
    "network entry reshaped",
    "network entry nan",
    "network entry a list",
    "optimizer empty",
    "optimizer no groups",
    "optimizer state reshaped",
    "scheduler ahead",
    "scheduler empty",
    "plan not a dict",
    "relations empty",
    "relation doubled",
    "teacher updates negative",
    "teacher empty",
    "no fingerprint",
    "fingerprint a string",
    "fingerprint data hash",
    "no network",
]


def _code_pickle(marker: str, how: str) -> bytes:
    payload = CodePayload(marker)
    if how == "raw pickle":
        return pickle.dumps(payload)
    if how == "torch.save":
        return _saved(payload)
    return _saved({"model": {}, "epoch": 0, "history": [payload]})  # hidden inside a checkpoint-like dict


@st.composite
def mutations(draw, size: int):
    """One mutation of a checkpoint of ``size`` bytes: (kind, argument)."""
    kind = draw(st.sampled_from(["truncate", "flip", "overwrite", "random", "code", "edit"]))
    if kind == "truncate":
        return kind, draw(st.integers(0, size - 1))
    if kind == "flip":
        return kind, draw(st.lists(st.tuples(st.integers(0, size - 1), st.integers(1, 255)), min_size=1, max_size=4))
    if kind == "overwrite":
        return kind, (draw(st.integers(0, size - 1)), draw(st.binary(min_size=1, max_size=16)))
    if kind == "random":
        return kind, draw(st.binary(max_size=2000))
    if kind == "code":
        return kind, draw(st.sampled_from(["raw pickle", "torch.save", "inside a dict"]))
    return kind, (draw(st.sampled_from(EDIT_NAMES)), draw(st.booleans()))


def _mutated(data: bytes, content, kind: str, arg, marker: str) -> bytes:
    if kind == "truncate":
        return data[:arg]
    if kind == "flip":
        out = bytearray(data)
        for index, mask in arg:
            out[index] ^= mask
        return bytes(out)
    if kind == "overwrite":
        offset, chunk = arg
        return data[:offset] + chunk + data[offset + len(chunk) :]
    if kind == "random":
        return arg
    if kind == "code":
        return _code_pickle(marker, arg)
    return _saved(_edit(content, *arg))


def _check_outcome(real, path: Path, marker: Path) -> str:
    """Resume from ``path``: a correct resume or one CheckpointError (never another exception, never code run)."""
    straight = real[0]
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            resumed = run(path, resume=True)
    except CheckpointError as err:
        assert "weights_only" not in str(err)
        assert str(path) in str(err)
        outcome = "refused"
    else:
        np.testing.assert_allclose(resumed.probs, straight.probs, atol=1e-6)
        assert np.array_equal(resumed.relation, straight.relation)
        assert [r["epoch"] for r in resumed.history] == list(range(N_EPOCHS))
        outcome = "resumed"
    assert not any("weights_only" in str(w.message) for w in caught)
    assert not marker.exists(), "code in the checkpoint ran"
    return outcome


def test_the_intact_checkpoint_resumes_to_the_uninterrupted_run(real, tmp_path):
    path = tmp_path / "ck.pt"
    path.write_bytes(real[1])
    assert _check_outcome(real, path, tmp_path / "ran") == "resumed"


@pytest.mark.parametrize("redigest", [False, True], ids=["digest-stale", "digest-recomputed"])
@pytest.mark.parametrize("edit", EDIT_NAMES)
def test_every_edited_field_is_refused(real, tmp_path, edit, redigest):
    path = tmp_path / "ck.pt"
    path.write_bytes(_saved(_edit(real[2], edit, redigest)))
    with pytest.raises(CheckpointError) as info:
        run(path, resume=True)
    message = str(info.value)
    assert "weights_only" not in message and str(path) in message
    if not redigest and edit not in ("no fingerprint", "no network"):
        assert "damaged" in message
    if edit == "no fingerprint":
        assert "no fingerprint" in message


@settings(
    derandomize=True,
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_fuzzed_checkpoints_resume_correctly_or_raise_one_checkpoint_error(real, tmp_path, data):
    straight, original, content = real
    kind, arg = data.draw(mutations(len(original)))
    marker = tmp_path / "payload-ran"
    path = tmp_path / "ck.pt"
    path.write_bytes(_mutated(original, content, kind, arg, str(marker)))
    _check_outcome(real, path, marker)


def _foreign_state_dict() -> bytes:
    return _saved(torch.nn.Linear(3, 2).state_dict())


def _zip_damaged(data: bytes) -> bytes:
    return data.replace(b"PK\x01\x02", b"XX\x01\x02")  # the zip's central directory: no entry is found


def _older_falcon_sc(content) -> bytes:
    return _saved({k: v for k, v in content.items() if k not in ("fingerprint", "digest")})


DAMAGED = {
    "empty file": (lambda data, content, marker: b"", "cannot be read"),
    "truncated": (lambda data, content, marker: data[: len(data) // 2], "cannot be read"),
    "zip directory damaged": (lambda data, content, marker: _zip_damaged(data), "cannot be read"),
    "text file": (lambda data, content, marker: b"epoch: 3\nhistory: []\n", "cannot be read"),
    "pickle that runs code": (lambda data, content, marker: _code_pickle(marker, "raw pickle"), "not unpickled"),
    "torch.save of code": (lambda data, content, marker: _code_pickle(marker, "torch.save"), "not unpickled"),
    "code inside a dict": (lambda data, content, marker: _code_pickle(marker, "inside a dict"), "not unpickled"),
    "foreign state dict": (lambda data, content, marker: _foreign_state_dict(), "not a falcon_sc training"),
    "a list": (lambda data, content, marker: _saved([1, 2]), "holds a list"),
    "older falcon_sc": (lambda data, content, marker: _older_falcon_sc(content), "has no fingerprint"),
    "entries missing": (lambda data, content, marker: _saved(_edit(content, "no network", True)), "lacks the entries"),
}


@pytest.mark.parametrize("kind", list(DAMAGED))
def test_each_kind_of_damaged_file_is_one_checkpoint_error(real, tmp_path, kind):
    make, reason = DAMAGED[kind]
    marker = tmp_path / "payload-ran"
    path = tmp_path / "ck.pt"
    path.write_bytes(make(real[1], real[2], str(marker)))
    with pytest.raises(CheckpointError, match="not a valid falcon_sc checkpoint for this model") as info:
        run(path, resume=True)
    message = str(info.value)
    assert reason in message and str(path) in message
    assert "weights_only" not in message and "resume=False" in message
    err = info.value  # no torch traceback (with its advice) shown below it
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)
    assert not marker.exists()


def test_another_network_shape_is_named(real, tmp_path):
    """A checkpoint of a network with other widths: the fingerprint names the layers whose shapes differ."""
    path = tmp_path / "ck.pt"
    path.write_bytes(real[1])
    X0, coarse, neighbors, relation = _data()
    cfg = FalconConfig(
        n_epochs=N_EPOCHS, batch_size=32, relation_every=2, show_progress=False, checkpoint_path=str(path), resume=True
    )
    with pytest.raises(CheckpointError, match=r"the network differs \(body.0.weight \[16, 8\] vs \[32, 8\]"):
        train_falcon(MLPClassifier(8, 6, hidden=[32]), X0, coarse, neighbors, 3, cfg, relation=relation, seed=0)


def test_checkpoints_change_nothing_in_the_result(real, tmp_path):
    """Hashing the data and writing checkpoints draw no random numbers: the result is that of a run without them."""
    with_checkpoints = run(tmp_path / "ck.pt")
    assert np.array_equal(with_checkpoints.probs, real[0].probs)
    assert np.array_equal(with_checkpoints.relation, real[0].relation)


def test_resume_without_a_file_starts_afresh_and_an_existing_file_is_overwritten(real, tmp_path):
    path = tmp_path / "ck.pt"
    fresh = run(path, resume=True)  # no file yet: a fresh run, which writes it
    assert np.array_equal(fresh.probs, real[0].probs)
    finished = path.read_bytes()
    path.write_bytes(b"not a checkpoint")  # resume=False never reads the file: it is overwritten after epoch 0
    again = run(path)
    assert np.array_equal(again.probs, real[0].probs)
    assert torch.load(path, weights_only=True)["epoch"] == N_EPOCHS - 1
    assert len(path.read_bytes()) == len(finished)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.pt"]
