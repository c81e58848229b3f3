"""The Lightning Fabric engine: checkpoint/resume, divergence, and FALCON on 2 processes (gloo)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from falcon_sc import metrics
from falcon_sc.core.distributed import train_falcon_ddp
from falcon_sc.core.graph_init import graph_clusters
from falcon_sc.core.neighbors import within_class_neighbors
from falcon_sc.core.trainer import FalconConfig, train_falcon
from falcon_sc.core.training import (
    Features,
    LoopConfig,
    TrainingDiverged,
    TrainingPlan,
    fit_cross_entropy,
    train_minibatches,
)
from falcon_sc.errors import CheckpointError
from falcon_sc.models.mlp import MLPClassifier
from falcon_sc.pp import cell_features

from ..conftest import simulate


@pytest.fixture(scope="module")
def problem():
    adata = simulate(n_cells=600)
    coarse = adata.obs["coarse"].cat.codes.to_numpy().astype(np.int64)
    feats = cell_features(adata, coarse, n_top_genes=200, n_comps=20)
    nb = within_class_neighbors(feats.neighbour_space, coarse, 20)
    labels, relation = graph_clusters(feats.neighbour_space, nb, coarse, 6)
    return adata, coarse, feats.features, nb, labels, relation


#: the training settings these tests were written with (FalconConfig's defaults before it took refine's)
REFERENCE = dict(lr=1e-3, lambda_reg=0.5, regulariser="global")


def _classifier(seed=0):
    torch.manual_seed(seed)
    return MLPClassifier(20 + 10, 6)


def test_falcon_resumed_after_a_crash_ends_as_the_uninterrupted_run(problem, tmp_path, monkeypatch):
    from lightning_fabric import Fabric

    _, coarse, X, nb, labels, relation = problem
    path = str(tmp_path / "falcon.ckpt")

    def cfg(**kw):
        return FalconConfig(n_epochs=6, batch_size=64, relation_every=10, show_progress=False, **REFERENCE, **kw)

    def run(**kw):
        return train_falcon(_classifier(), X, coarse, nb, 3, cfg(**kw), relation=relation, init_labels=labels, seed=0)

    straight = run()
    real_save, saved = Fabric.save, []

    def crash_after_three(self, p, state):
        real_save(self, p, state)
        saved.append(state["epoch"])
        if len(saved) == 3:
            raise KeyboardInterrupt  # the job is killed after epoch 3 was written

    monkeypatch.setattr(Fabric, "save", crash_after_three)
    with pytest.raises(KeyboardInterrupt):
        run(checkpoint_path=path)
    monkeypatch.setattr(Fabric, "save", real_save)
    resumed = run(checkpoint_path=path, resume=True)
    assert saved == [0, 1, 2]
    assert [r["epoch"] for r in resumed.history] == list(range(6))
    np.testing.assert_allclose(resumed.probs, straight.probs, atol=1e-5)
    assert np.array_equal(resumed.relation, straight.relation)


def test_resume_reruns_nothing_and_restores_the_optimiser(tmp_path, monkeypatch):
    from lightning_fabric import Fabric

    X = np.random.default_rng(0).normal(size=(256, 5)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    path = str(tmp_path / "ce.ckpt")

    def run(n_epochs, resume):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(5, 2))
        model.embed = model.forward  # the loop only needs parameters and forward
        cfg = LoopConfig(n_epochs=n_epochs, batch_size=32, checkpoint_path=path, resume=resume)
        history = fit_cross_entropy(model, Features(X), y, cfg, np.random.default_rng(0))
        return model, history

    straight, h_straight = run(4, resume=False)
    (tmp_path / "ce.ckpt").unlink()
    real_save = Fabric.save

    def killed_after_two(self, p, state):
        real_save(self, p, state)
        if state["epoch"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(Fabric, "save", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        run(4, resume=False)  # interrupted after 2 epochs
    monkeypatch.setattr(Fabric, "save", real_save)
    resumed, h_resumed = run(4, resume=True)
    assert [r["epoch"] for r in h_resumed] == [0, 1, 2, 3]
    for a, b in zip(straight.parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    assert h_resumed[-1]["loss"] == pytest.approx(h_straight[-1]["loss"])


def test_divergence_stops_training():
    X = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
    model = torch.nn.Linear(3, 2)

    class NaNPlan(TrainingPlan):
        def training_step(self, idx, x, step):
            return {"loss": self.network(x).sum() * float("nan")}

    with pytest.raises(TrainingDiverged, match="step 1"):
        train_minibatches(
            model, Features(X), NaNPlan(), LoopConfig(n_epochs=1, batch_size=32), np.random.default_rng(0)
        )


def test_two_processes_hold_the_same_relation_and_agree_with_one(problem):
    adata, coarse, X, nb, labels, relation = problem
    cfg = FalconConfig(n_epochs=8, batch_size=64, show_progress=False, relation_every=5, **REFERENCE)
    ddp = train_falcon_ddp(2, _classifier(), X, coarse, nb, 3, cfg, relation=relation, init_labels=labels, seed=0)
    single = train_falcon(_classifier(), X, coarse, nb, 3, cfg, relation=relation, init_labels=labels, seed=0)
    assert ddp.ranks_agree  # same M on every rank at the end, same children after every epoch
    assert ddp.probs.shape == single.probs.shape and len(ddp.history) == 8
    # the two runs see different minibatches, so labels agree within a tolerance, not exactly
    assert metrics.ari(ddp.probs.argmax(1), single.probs.argmax(1)) > 0.9
    assert metrics.ari(adata.obs["fine"], ddp.probs.argmax(1)) > 0.8


def test_two_processes_return_every_scheme_relation(problem):
    """With several coarse schemes the distributed result holds one relation per scheme, the same on every rank."""
    _, coarse, X, nb, _, _ = problem
    merged = np.where(coarse == 2, 1, 0)  # a second scheme: classes 0 and 1 merged, every 5th cell unlabelled
    merged[::5] = -1
    schemes = np.stack([coarse, merged], axis=1)
    cfg = FalconConfig(n_epochs=2, batch_size=128, show_progress=False, relation_every=2)
    ddp = train_falcon_ddp(2, _classifier(), X, schemes, nb, [3, 2], cfg, seed=0)
    assert [r.shape for r in ddp.relations] == [(6, 3), (6, 2)]
    assert np.array_equal(ddp.relations[0], ddp.relation)
    assert all(set(np.unique(r)) <= {0, 1} and (r.sum(axis=1) == 1).all() for r in ddp.relations)
    assert ddp.ranks_agree
    # the children counts the history records are those of the relations returned
    assert ddp.history[-1]["children"] == [*ddp.relations[0].sum(0), *ddp.relations[1].sum(0)]


def test_falcon_trains_a_resnet_on_image_views():
    from falcon_sc.core.views import ViewConfig, random_view
    from falcon_sc.datasets import digits
    from falcon_sc.models.resnet import resnet18

    adata = digits()[:400].copy()
    images = adata.X.reshape(-1, 1, 8, 8) / 16.0
    coarse = adata.obs["coarse"].cat.codes.to_numpy().astype(np.int64)
    space = adata.X / np.linalg.norm(adata.X, axis=1, keepdims=True)
    nb = within_class_neighbors(space, coarse, 10)
    labels, relation = graph_clusters(space, nb, coarse, 10)
    calls = {"student": 0, "teacher": 0}
    gen = torch.Generator().manual_seed(0)
    crop = ViewConfig(scale=(0.6, 1.0), flip=0.0)

    def student(x):
        calls["student"] += 1
        return random_view(x, crop, gen)

    def teacher(x):
        calls["teacher"] += 1
        return random_view(x, crop, gen)

    cfg = FalconConfig(n_epochs=2, batch_size=64, show_progress=False, init_steps=5, **REFERENCE)
    torch.manual_seed(0)
    net = resnet18(10, in_channels=1, width=8)
    result = train_falcon(
        net,
        images,
        coarse,
        nb,
        3,
        cfg,
        relation=relation,
        init_labels=labels,
        student_view=student,
        teacher_view=teacher,
    )
    steps = 5 + 2 * int(np.ceil(400 / 64))  # warm fit + FALCON steps see the student's view
    assert calls["student"] == steps and calls["teacher"] == 2 * 2 * int(np.ceil(400 / 64))
    assert result.probs.shape == (400, 10) and np.isfinite(result.probs).all()
    assert result.embedding.shape == (400, 64)  # 8 x 8 channels after the last stage


def test_checkpoint_path_is_checked_before_training(tmp_path):
    """A folder, or a file inside a missing folder or a regular file, is refused when the settings are made."""
    folder = tmp_path / "run"
    folder.mkdir()
    with pytest.raises(ValueError, match="is a folder"):
        FalconConfig(checkpoint_path=str(folder))
    assert folder.is_dir() and not any(folder.iterdir())
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="does not exist or is not a folder"):
        FalconConfig(checkpoint_path=str(blocker / "ck.pt"))
    with pytest.raises(TypeError, match="checkpoint_path=3"):
        FalconConfig(checkpoint_path=3)
    FalconConfig(checkpoint_path=tmp_path / "ck.pt")  # a new file in an existing folder (Path accepted)


def test_checkpoint_writes_are_atomic(problem, tmp_path, monkeypatch):
    """A save that fails leaves the previous checkpoint whole and no temporary file beside it."""
    from lightning_fabric import Fabric

    _, coarse, X, neighbors, _, _ = problem
    ck = tmp_path / "ck.pt"
    cfg = FalconConfig(n_epochs=2, batch_size=64, show_progress=False, checkpoint_path=str(ck), **REFERENCE)
    train_falcon(_classifier(), X, coarse, neighbors, 3, cfg, seed=0)
    before = ck.read_bytes()
    real_save = Fabric.save

    def half_written(self, path, state, *args, **kwargs):
        Path(path).write_bytes(b"truncated")
        raise OSError("disk full")

    monkeypatch.setattr(Fabric, "save", half_written)
    cfg = FalconConfig(n_epochs=3, batch_size=64, show_progress=False, checkpoint_path=str(ck), **REFERENCE)
    with pytest.raises(OSError, match="disk full"):
        train_falcon(_classifier(), X, coarse, neighbors, 3, cfg, seed=0)
    monkeypatch.setattr(Fabric, "save", real_save)
    assert ck.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.pt"]


def _ce_run(X, path, resume=False, lr=1e-3, n_epochs=2):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(X.shape[1], 2))
    model.embed = model.forward
    cfg = LoopConfig(n_epochs=n_epochs, batch_size=32, lr=lr, checkpoint_path=str(path), resume=resume)
    return fit_cross_entropy(model, Features(X), np.arange(X.shape[0]) % 2, cfg, np.random.default_rng(0))


def test_resume_refuses_a_checkpoint_of_other_data_or_settings(tmp_path):
    """A finished checkpoint of other data with the same shape is not returned as this run's: the error says what
    differs (the data's hash, a setting) and what to do, and leaves the file as it was."""
    X = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    path = tmp_path / "ck.pt"
    _ce_run(X, path)
    before = path.read_bytes()
    other = np.random.default_rng(1).normal(size=(64, 4)).astype(np.float32)
    with pytest.raises(CheckpointError, match=r"the data differ \(hash [0-9a-f]+ vs [0-9a-f]+\)") as info:
        _ce_run(other, path, resume=True)
    assert str(path) in str(info.value) and "resume=False" in str(info.value)
    with pytest.raises(CheckpointError, match="lr 0.001 vs 0.01") as info:
        _ce_run(X, path, resume=True, lr=1e-2)
    with pytest.raises(CheckpointError, match="n_epochs 2 vs 3"):
        _ce_run(X, path, resume=True, n_epochs=3)
    with pytest.raises(CheckpointError, match=r"data shape \[64, 4\] vs \[64, 5\]"):
        _ce_run(np.hstack([X, X[:, :1]]), path, resume=True)
    sparse_X = sp.csr_matrix(X)
    with pytest.raises(CheckpointError, match="data kind dense vs sparse"):
        _ce_run(sparse_X, path, resume=True)
    assert path.read_bytes() == before
    assert len(_ce_run(X, path, resume=True)) == 2  # the same data and settings: the finished run, nothing rerun


@pytest.fixture(scope="module")
def fitted_checkpoint(tmp_path_factory):
    """A FalconModel fit on small cells with a checkpoint (the model layer adds the coarse names to it)."""
    import falcon_sc as fal

    adata = fal.datasets.simulate(n_cells=200, n_genes=100, children=(1, 2, 3), random_state=0)
    path = tmp_path_factory.mktemp("fit") / "ck.pt"
    fal.FalconModel(adata, "coarse").fit(n_fine=6, n_epochs=2, show_progress=False, checkpoint_path=path)
    return adata, path


def test_fit_refuses_a_checkpoint_of_other_coarse_names_or_n_fine(fitted_checkpoint):
    import falcon_sc as fal

    adata, path = fitted_checkpoint
    again = dict(n_epochs=2, show_progress=False, checkpoint_path=path, resume=True)
    renamed = adata.copy()
    renamed.obs["coarse"] = renamed.obs["coarse"].cat.rename_categories(["A", "B", "C"])
    with pytest.raises(CheckpointError, match=r"coarse_names \[\['C0', 'C1', 'C2'\]\] vs \[\['A', 'B', 'C'\]\]"):
        fal.FalconModel(renamed, "coarse").fit(n_fine=6, **again)
    with pytest.raises(CheckpointError, match="n_fine 6 vs 7") as info:
        fal.FalconModel(adata, "coarse").fit(n_fine=7, **again)
    assert "the network differs (head.weight" in str(info.value)
