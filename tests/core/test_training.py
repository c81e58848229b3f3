"""The shared minibatch loop: features, steps, schedule, history and the cross-entropy fit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import sparse

from falcon_sc.core.training import (
    Features,
    LoopConfig,
    TrainingPlan,
    epochs_for_steps,
    fit_cross_entropy,
    map_rows,
    train_minibatches,
)
from falcon_sc.models.mlp import MLPClassifier


def _blobs(n_per: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.array([[4.0, 0, 0], [0, 4.0, 0], [0, 0, 4.0]])
    X = np.vstack([c + rng.normal(size=(n_per, 3)) for c in centres]).astype(np.float32)
    return X, np.repeat(np.arange(3), n_per)


def test_features_dense_and_sparse_agree():
    X = np.arange(20, dtype=np.float32).reshape(5, 4)
    dense, csr = Features(X), Features(sparse.csr_matrix(X))
    idx = np.array([4, 0, 2])
    np.testing.assert_array_equal(dense.rows(idx).numpy(), X[idx])
    np.testing.assert_array_equal(csr.rows(torch.as_tensor(idx)).numpy(), X[idx])
    assert (dense.n_obs, dense.n_features) == (csr.n_obs, csr.n_features) == (5, 4)
    np.testing.assert_array_equal(csr.subset(idx).rows(np.arange(3)).numpy(), X[idx])
    np.testing.assert_array_equal(map_rows(lambda x: x * 2, dense, batch_size=2), 2 * X)


def test_loop_runs_every_minibatch_once_per_epoch_and_records_history():
    X, _ = _blobs(10)
    model = torch.nn.Linear(3, 1)
    seen: list[np.ndarray] = []
    calls: list[int] = []
    wrapped: list[torch.nn.Module] = []

    class Plan(TrainingPlan):
        def setup(self, network):
            wrapped.append(network)
            super().setup(network)

        def training_step(self, idx, x, step):
            seen.append(idx)
            np.testing.assert_array_equal(x.numpy(), X[idx])
            return {"loss": self.network(x).pow(2).mean(), "extra": torch.tensor(float(step))}

        def on_train_batch_end(self, step):
            calls.append(step)

        def on_train_epoch_end(self, epoch):
            return {"e": epoch}

    cfg = LoopConfig(n_epochs=2, batch_size=7, lr=0.01, lr_milestones=(0.5,), lr_gamma=0.1)
    hist = train_minibatches(model, Features(X), Plan(), cfg, np.random.default_rng(0))
    # setup received Fabric's wrapper around the model, once
    assert len(wrapped) == 1 and wrapped[0] is not model and wrapped[0].module is model
    assert len(hist) == 2 and [h["e"] for h in hist] == [0, 1]
    steps_per_epoch = -(-30 // 7)
    assert calls == list(range(1, 2 * steps_per_epoch + 1))
    first_epoch = np.sort(np.concatenate(seen[:steps_per_epoch]))
    np.testing.assert_array_equal(first_epoch, np.arange(30))
    assert hist[0]["lr"] == pytest.approx(0.001)  # milestone after epoch 1 of 2
    assert {"loss", "extra", "epoch", "lr"} <= set(hist[0])


def test_loop_stops_at_max_steps():
    X, _ = _blobs(10)
    model = torch.nn.Linear(3, 1)
    n_calls = []

    class Plan(TrainingPlan):
        def training_step(self, idx, x, step):
            n_calls.append(step)
            return {"loss": self.network(x).mean()}

    cfg = LoopConfig(n_epochs=50, batch_size=4, max_steps=11)
    train_minibatches(model, Features(X), Plan(), cfg, np.random.default_rng(0))
    assert n_calls == list(range(1, 12))


def test_fit_cross_entropy_learns_blobs():
    X, y = _blobs()
    torch.manual_seed(0)
    model = MLPClassifier(3, 3, (16,))
    fit_cross_entropy(model, Features(X), y, LoopConfig(n_epochs=30, batch_size=32, lr=1e-2), np.random.default_rng(0))
    pred = map_rows(model, Features(X)).argmax(axis=1)
    assert (pred == y).mean() > 0.95


def test_loop_config_checks():
    with pytest.raises(ValueError, match="optimizer"):
        LoopConfig(n_epochs=1, optimizer="lbfgs")
    with pytest.raises(ValueError, match="n_epochs"):
        LoopConfig(n_epochs=0)


def test_epochs_for_steps():
    assert epochs_for_steps(1000, 100, 400) == 40
    assert epochs_for_steps(100_000, 100, 400) == 10  # at least 10 passes
    assert epochs_for_steps(10, 100, 10_000, max_epochs=50) == 50


def test_fit_cross_entropy_balance_learns_a_rare_class():
    # 1000 vs 10 samples, overlapping: plain cross-entropy ignores the rare class, balanced weights recover it
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0, 1, (1000, 2)), rng.normal(1.5, 0.5, (10, 2))]).astype(np.float32)
    y = np.repeat([0, 1], [1000, 10])
    recalls = {}
    for balance in (0.0, 1.0):
        torch.manual_seed(0)
        model = torch.nn.Linear(2, 2)
        cfg = LoopConfig(n_epochs=60, batch_size=128, lr=0.05)
        fit_cross_entropy(model, Features(X), y, cfg, np.random.default_rng(0), balance=balance)
        pred = model(torch.as_tensor(X)).argmax(1).numpy()
        recalls[balance] = (pred[y == 1] == 1).mean()
    assert recalls[0.0] < 0.5 < 0.8 < recalls[1.0]


def test_small_networks_train_on_one_thread_and_the_setting_is_restored():
    from torch import nn

    from falcon_sc.core.training import cpu_threads, torch_threads

    small, big = nn.Linear(50, 20), nn.Linear(2000, 2000)
    assert cpu_threads(small) == 1
    assert cpu_threads(big) == torch.get_num_threads()
    assert cpu_threads(small, 3) == 3
    with pytest.raises(ValueError, match="n_threads"):
        cpu_threads(small, 0)
    before = torch.get_num_threads()
    seen = []

    class Plan(TrainingPlan):
        def training_step(self, idx, x, step):
            seen.append(torch.get_num_threads())
            return {"loss": self.network(x).pow(2).mean()}

    train_minibatches(
        small, Features(np.ones((8, 50))), Plan(), LoopConfig(n_epochs=1, batch_size=4), np.random.default_rng(0)
    )
    assert seen == [1, 1] and torch.get_num_threads() == before
    with pytest.raises(RuntimeError), torch_threads(1):
        raise RuntimeError
    assert torch.get_num_threads() == before
