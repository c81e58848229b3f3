"""FALCON training loop and EMA teacher."""

from __future__ import annotations

import math
from dataclasses import fields

import numpy as np
import pytest
import torch
from scipy import sparse
from torch import nn

from falcon_sc import metrics
from falcon_sc._checks import defaults
from falcon_sc.core.ema import EMATeacher
from falcon_sc.core.neighbors import within_class_neighbors
from falcon_sc.core.trainer import FalconConfig, _n_epochs, predict, train_falcon
from falcon_sc.core.training import LoopConfig, OptimSettings, TrainingPlan
from falcon_sc.models.mlp import MLPClassifier

CHILDREN = (2, 2, 3)
PARENT = np.repeat(np.arange(len(CHILDREN)), CHILDREN)
N_FINE = len(PARENT)


def _blobs(seed=0, per_class=80, d=10, spread=6.0):
    """Well separated Gaussian blobs, one per fine class, with coarse labels from PARENT."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(N_FINE, d)) * spread
    fine = rng.permutation(np.repeat(np.arange(N_FINE), per_class))
    X = (centres[fine] + rng.normal(size=(fine.size, d))).astype(np.float32)
    return X, fine, PARENT[fine]


def _true_relation():
    M = np.zeros((N_FINE, len(CHILDREN)), dtype=np.int8)
    M[np.arange(N_FINE), PARENT] = 1
    return M


def _cfg(**kw):
    # lr: FalconConfig's default before it took refine's (3e-4), which these tests were written with
    base = dict(n_epochs=30, batch_size=64, lr=1e-3, regulariser="within", lambda_reg=2.0, show_progress=False)
    return FalconConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def blobs():
    X, fine, coarse = _blobs()
    return X, fine, coarse, within_class_neighbors(X, coarse, 10)


@pytest.fixture(scope="module")
def fixed_run(blobs):
    X, fine, coarse, nb = blobs
    torch.manual_seed(0)
    model = MLPClassifier(X.shape[1], N_FINE, (32, 32))
    return train_falcon(
        model, X, coarse, nb, len(CHILDREN), _cfg(learn_relation=False), relation=_true_relation(), seed=0
    )


def _restricted_argmax(probs, relation, coarse):
    return (probs * relation[:, coarse].T).argmax(axis=1)


def test_fixed_relation_separates_blobs(blobs, fixed_run):
    X, fine, coarse, _ = blobs
    res = fixed_run
    np.testing.assert_array_equal(res.relation, _true_relation())  # learn_relation=False keeps it
    pred = _restricted_argmax(res.probs, res.relation, coarse)
    assert metrics.within_coarse_ari(fine, pred, coarse) > 0.9
    # the unrestricted prediction also stays under the right parent
    assert np.mean(PARENT[res.probs.argmax(axis=1)] == coarse) > 0.95


def test_result_shapes_and_history(blobs, fixed_run):
    X, *_ = blobs
    res = fixed_run
    assert res.probs.shape == (X.shape[0], N_FINE)
    np.testing.assert_allclose(res.probs.sum(axis=1), 1.0, atol=1e-5)
    assert res.embedding.shape == (X.shape[0], 32)
    assert len(res.history) == 30
    rec = res.history[-1]
    for key in (
        "loss",
        "coarse",
        "neighbour",
        "confident",
        "regulariser",
        "fine_in_use",
        "largest_fine_share",
        "relation_changes",
        "relation_solves",
        "children",
        "epoch",
        "lr",
    ):
        assert key in rec
    assert all(r["relation_solves"] == 0 for r in res.history)
    assert rec["children"] == list(CHILDREN)
    assert rec["fine_in_use"] == N_FINE
    assert all(np.isfinite(r["loss"]) for r in res.history)
    # the coarse loss falls during training
    assert res.history[-1]["coarse"] < res.history[0]["coarse"]
    # learning-rate schedule: decayed once per milestone by the end
    cfg = _cfg()
    assert rec["lr"] == pytest.approx(cfg.lr * cfg.lr_gamma ** len(cfg.lr_milestones))
    assert isinstance(res.model, nn.Module)


def test_learned_relation_stays_valid(blobs):
    X, fine, coarse, nb = blobs
    torch.manual_seed(1)
    model = MLPClassifier(X.shape[1], N_FINE, (32, 32))
    res = train_falcon(model, X, coarse, nb, len(CHILDREN), _cfg(n_epochs=8, relation_every=5), seed=1)
    rel = res.relation
    assert rel.shape == (N_FINE, len(CHILDREN))
    assert np.all(rel.sum(axis=1) == 1) and np.all(rel.sum(axis=0) >= 1)
    assert sum(r["relation_solves"] for r in res.history) >= 8 * math.ceil(X.shape[0] / 64) // 5
    for r in res.history:
        assert sum(r["children"]) == N_FINE


def test_deterministic_and_sparse_equals_dense(blobs):
    X, fine, coarse, nb = blobs
    X, coarse, nb = X[:200], coarse[:200], within_class_neighbors(X[:200], coarse[:200], 5)
    X = np.maximum(X, 0)  # some zeros so that the sparse matrix is really sparse
    runs = []
    for data in (X, X, sparse.csr_matrix(X)):
        torch.manual_seed(0)
        model = MLPClassifier(X.shape[1], N_FINE, (16,))
        runs.append(train_falcon(model, data, coarse, nb, len(CHILDREN), _cfg(n_epochs=4), seed=3))
    np.testing.assert_array_equal(runs[0].probs, runs[1].probs)
    np.testing.assert_array_equal(runs[0].relation, runs[1].relation)
    np.testing.assert_allclose(runs[0].probs, runs[2].probs, atol=1e-5)


def test_init_labels_fit_first(blobs):
    X, fine, coarse, nb = blobs
    cfg = _cfg(n_epochs=1, learn_relation=False)
    if not hasattr(cfg, "init_steps"):
        pytest.skip("no initial fit in this version")
    torch.manual_seed(0)
    model = MLPClassifier(X.shape[1], N_FINE, (32, 32))
    res = train_falcon(model, X, coarse, nb, len(CHILDREN), cfg, relation=_true_relation(), init_labels=fine, seed=0)
    pred = _restricted_argmax(res.probs, res.relation, coarse)
    assert metrics.ari(fine, pred) > 0.9


def test_n_epochs_rule():
    cfg = FalconConfig()
    assert _n_epochs(FalconConfig(n_epochs=7), 10_000, 1024) == 7
    # 100k cells: 98 steps an epoch -> ceil(300 / 98) = 4 epochs (at least min_epochs=3)
    assert _n_epochs(cfg, 100_000, 1024) == 4
    # tiny data: one step an epoch -> 300 epochs (capped at max_epochs)
    assert _n_epochs(cfg, 100, 1024) == min(cfg.max_epochs, cfg.min_steps)
    # huge data: never fewer than min_epochs passes
    assert _n_epochs(cfg, 10_000_000, 1024) == cfg.min_epochs


def test_config_to_dict():
    d = FalconConfig(lr_milestones=(0.5, 0.9)).to_dict()
    assert d["lr_milestones"] == [0.5, 0.9]
    assert set(d) >= {"n_epochs", "lr", "lambda_reg", "regulariser", "learn_relation"}


REFINE_DEFAULTS = dict(
    n_epochs=None,
    batch_size=1024,
    optimizer="adam",
    lr=3e-4,
    lambda_coarse=0.5,
    lambda_fine=0.5,
    lambda_reg=0.05,
    regulariser="prior",
    lambda_relation=5e-3,
    temperature=0.9,
    relation_every=30,
    learn_relation=True,
    soft_fraction=0.3,
    precision="32-true",
    checkpoint_path=None,
    resume=False,
    show_progress=True,
)


def test_config_defaults_are_refines_and_the_loop_keeps_its_own():
    assert {k: v for k, v in defaults(FalconConfig).items() if k in REFINE_DEFAULTS} == REFINE_DEFAULTS
    # the loop of the baselines and warm fits keeps its own defaults for the same declared fields
    loop = defaults(LoopConfig)
    assert (loop["lr"], loop["batch_size"], loop["show_progress"], loop["lr_milestones"]) == (1e-3, 256, False, ())
    # every shared optimisation field is declared once, with the same constraint in both
    for f in fields(OptimSettings):
        falcon, base = FalconConfig.__dataclass_fields__[f.name], LoopConfig.__dataclass_fields__[f.name]
        assert falcon.metadata["check"] == base.metadata["check"] == f.metadata["check"]


def test_loop_config_from_falcon_config_takes_every_shared_field():
    cfg = FalconConfig(optimizer="sgd", lr=0.02, momentum=0.5, weight_decay=1e-4, lr_gamma=0.5, show_progress=False)
    loop = cfg.loop_config(7, 64)
    assert (loop.n_epochs, loop.batch_size, loop.desc) == (7, 64, "falcon")
    shared = {f.name for f in fields(OptimSettings)} - {"batch_size"}
    assert {k: getattr(loop, k) for k in shared} == {k: getattr(cfg, k) for k in shared}


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"lr": 0.0}, ValueError, "lr=0.0 must be a finite number > 0"),
        ({"temperature": -1.0}, ValueError, "temperature"),
        ({"soft_fraction": 1.5}, ValueError, "soft_fraction"),
        ({"lambda_reg": -0.1}, ValueError, "lambda_reg"),
        ({"n_epochs": 0}, ValueError, "n_epochs=0 must be an int >= 1"),
        ({"n_epochs": 2.5}, TypeError, "n_epochs"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"relation_every": 0}, ValueError, "relation_every"),
        ({"optimizer": "lbfgs"}, ValueError, "optimizer='lbfgs' must be one of 'adam', 'sgd'"),
        ({"regulariser": "none"}, ValueError, "regulariser"),
        ({"precision": "8-bit"}, ValueError, "precision"),
        ({"learn_relation": 1}, TypeError, "learn_relation"),
        ({"show_progress": "yes"}, TypeError, "show_progress"),
        ({"resume": True}, ValueError, "resume=True needs checkpoint_path"),
    ],
)
def test_config_checks_on_construction(kwargs, error, match):
    with pytest.raises(error, match=match):
        FalconConfig(**kwargs)


def test_checkpoint_holds_the_plan_state_whole(blobs, tmp_path):
    X, fine, coarse, nb = blobs
    path = tmp_path / "f.ckpt"
    torch.manual_seed(0)
    model = MLPClassifier(X.shape[1], N_FINE, (16,))
    res = train_falcon(model, X, coarse, nb, len(CHILDREN), _cfg(n_epochs=2, checkpoint_path=str(path)), seed=0)
    saved = torch.load(path, weights_only=True)
    assert set(saved["plan"]) == {"teacher", "teacher_updates", "relations", "recent"}
    assert saved["plan"]["teacher_updates"] == 2 * math.ceil(X.shape[0] / 64)
    np.testing.assert_array_equal(saved["plan"]["relations"][0].numpy(), res.relation)
    for k, v in res.model.state_dict().items():
        torch.testing.assert_close(saved["plan"]["teacher"][k], v)


def test_a_plan_must_define_its_step():
    with pytest.raises(NotImplementedError, match="training_step"):
        TrainingPlan().training_step(np.arange(2), torch.zeros(2, 1), 1)


def test_predict_batches():
    torch.manual_seed(0)
    model = MLPClassifier(4, 3, (8,))
    X = np.random.default_rng(0).normal(size=(25, 4)).astype(np.float32)
    p_all, e_all = predict(model, X, torch.device("cpu"))
    p_small, e_small = predict(model, sparse.csr_matrix(X), torch.device("cpu"), batch_size=7)
    assert p_all.shape == (25, 3) and e_all.shape == (25, 8)
    np.testing.assert_allclose(p_all.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(p_all, p_small, atol=1e-6)
    np.testing.assert_allclose(e_all, e_small, atol=1e-6)


# ------------------------------------------------------------------------------------------------------ EMA


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.bn = nn.BatchNorm1d(2)


def _fill(module: nn.Module, value: float) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.fill_(value)


def test_ema_warm_up_formula():
    student = _Net()
    _fill(student, 0.0)
    teacher = EMATeacher(student, decay=0.99)
    expected = 0.0
    for n in range(200):
        value = float(n + 1)
        _fill(student, value)
        teacher.update(student)
        d = min(0.99, (1.0 + n) / (10.0 + n))
        expected = d * expected + (1 - d) * value
        for p in teacher.model.parameters():
            assert torch.allclose(p, torch.full_like(p, expected), rtol=1e-5)
    assert teacher.n_updates == 200


def test_ema_first_update_follows_student_closely():
    student = _Net()
    _fill(student, 0.0)
    teacher = EMATeacher(student, decay=0.99)
    _fill(student, 1.0)
    teacher.update(student)
    # d = 1/10 at the first update
    assert float(next(teacher.model.parameters())[0, 0]) == pytest.approx(0.9)


def test_ema_teacher_is_a_frozen_copy_with_copied_buffers():
    student = _Net()
    teacher = EMATeacher(student)
    assert teacher.model is not student
    assert all(not p.requires_grad for p in teacher.model.parameters())
    assert all(p.requires_grad for p in student.parameters())
    assert not teacher.model.training
    _fill(student, 5.0)
    assert not torch.allclose(teacher.model.lin.weight, student.lin.weight)  # independent until update
    student.bn.running_mean.fill_(3.0)
    teacher.update(student)
    assert torch.equal(teacher.model.bn.running_mean, student.bn.running_mean)


def test_ema_decay_zero_copies_student():
    student = _Net()
    teacher = EMATeacher(student, decay=0.0)
    _fill(student, 2.5)
    teacher.update(student)
    for p in teacher.model.parameters():
        assert torch.allclose(p, torch.full_like(p, 2.5))


@pytest.mark.parametrize("decay", [-0.1, 1.0, 1.5])
def test_ema_bad_decay(decay):
    with pytest.raises(ValueError):
        EMATeacher(_Net(), decay=decay)
