"""Losses and label solvers of the baseline methods, checked against direct formulas and known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from falcon_sc.core.contrastive import (
    angular_normalise,
    class_kde_log_likelihood,
    info_nce,
    logit_adjusted_cross_entropy,
    nearest_neighbour_components,
    nt_xent,
    sinkhorn_labels,
    supervised_contrastive,
)
from falcon_sc.core.queue import KeyQueue


def _unit(rows: int, dim: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed)), dim=1)


def test_info_nce_matches_formula_and_mask():
    q, k, queue = _unit(4, 5, 0), _unit(4, 5, 1), _unit(6, 5, 2)
    T = 0.3
    expected = []
    mask = torch.tensor([[True, False, True, True, False, False]] * 4)
    expected_masked = []
    for i in range(4):
        pos = math.exp(float(q[i] @ k[i]) / T)
        negs = [math.exp(float(q[i] @ queue[j]) / T) for j in range(6)]
        expected.append(-math.log(pos / (pos + sum(negs))))
        expected_masked.append(-math.log(pos / (pos + sum(n for n, m in zip(negs, mask[i], strict=True) if m))))
    assert float(info_nce(q, k, queue, T)) == pytest.approx(np.mean(expected), rel=1e-5)
    assert float(info_nce(q, k, queue, T, negative_mask=mask)) == pytest.approx(np.mean(expected_masked), rel=1e-5)
    # no negatives at all: nothing to contrast, zero loss
    none = torch.zeros(4, 6, dtype=torch.bool)
    assert float(info_nce(q, k, queue, T, negative_mask=none)) == pytest.approx(0.0, abs=1e-6)


def test_info_nce_prefers_aligned_positive():
    q = _unit(8, 4, 3)
    queue = _unit(32, 4, 4)
    assert float(info_nce(q, q, queue, 0.2)) < float(info_nce(q, -q, queue, 0.2))


def test_angular_normalise_is_unit_direction_from_class_weight():
    z = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    W = torch.tensor([[0.0, 5.0], [1.0, 0.0]])
    out = angular_normalise(z, W, torch.tensor([0, 0]))
    # (1, 0) - (0, 1) -> (1, -1)/sqrt2; (0, 1) - (0, 1) = 0 stays 0 (no direction)
    np.testing.assert_allclose(out[0].numpy(), [1 / math.sqrt(2), -1 / math.sqrt(2)], atol=1e-6)
    np.testing.assert_allclose(out[1].numpy(), [0.0, 0.0], atol=1e-6)
    # invariant to the scale of z and of the class weight
    out2 = angular_normalise(7 * z, 0.1 * W, torch.tensor([0, 0]))
    np.testing.assert_allclose(out2.numpy(), out.numpy(), atol=1e-6)


def test_nt_xent_matches_formula():
    z1, z2 = _unit(3, 4, 5), _unit(3, 4, 6)
    T = 0.5
    z = torch.cat([z1, z2])
    total = 0.0
    for i in range(6):
        partner = (i + 3) % 6
        denom = sum(math.exp(float(z[i] @ z[j]) / T) for j in range(6) if j != i)
        total += -math.log(math.exp(float(z[i] @ z[partner]) / T) / denom)
    assert float(nt_xent(z1, z2, T)) == pytest.approx(total / 6, rel=1e-5)


def test_supervised_contrastive_matches_formula():
    a, o = _unit(4, 3, 7), _unit(4, 3, 8)
    pos = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.bool)
    T = 0.2
    total = 0.0
    for i in range(4):
        logits = np.array([float(a[i] @ o[j]) / T for j in range(4)])
        log_p = logits - np.log(np.exp(logits).sum())
        total += -log_p[pos[i].numpy()].mean()
    assert float(supervised_contrastive(a, o, pos, T)) == pytest.approx(total / 4, rel=1e-5)


def test_nearest_neighbour_components_stay_inside_groups():
    # group 0: two tight pairs far apart; group 1: one point that is nearest to group 0's points in space
    z = np.array([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0], [0.1, 0.99], [1.0, 0.05]])
    groups = np.array([0, 0, 0, 0, 1])
    comp = nearest_neighbour_components(z, groups)
    assert comp[0] == comp[1] and comp[2] == comp[3]
    assert comp[0] != comp[2]
    assert comp[4] not in (comp[0], comp[2])  # alone in its group: its own component


def test_nearest_neighbour_components_chain():
    # 1-NN links 0->1, 1->2 (or 2->1), 3<->4: chains join, weak connectivity
    z = np.array([[0.0], [1.0], [2.1], [10.0], [10.5]])
    z = np.hstack([np.ones_like(z), z / 100])  # directions differ slightly; cosine keeps the order
    comp = nearest_neighbour_components(z, np.zeros(5, dtype=int))
    assert len(set(comp[:3])) == 1 and comp[3] == comp[4] and comp[0] != comp[3]


def test_class_kde_log_likelihood_matches_formula():
    z = _unit(3, 4, 9)
    queues = [_unit(5, 4, 10), _unit(2, 4, 11), torch.zeros(0, 4)]
    T = 0.1
    out = class_kde_log_likelihood(z, queues, T)
    for i in range(3):
        for c in range(2):
            ref = math.log(np.mean([math.exp(float(z[i] @ q) / T) for q in queues[c]]))
            assert float(out[i, c]) == pytest.approx(ref, rel=1e-4)
    assert torch.isinf(out[:, 2]).all()


def test_logit_adjustment_shifts_towards_rare_class_loss():
    logits = torch.zeros(1, 2)
    log_prior = torch.log(torch.tensor([0.9, 0.1]))
    rare = logit_adjusted_cross_entropy(logits, torch.tensor([1]), log_prior)
    common = logit_adjusted_cross_entropy(logits, torch.tensor([0]), log_prior)
    assert float(rare) == pytest.approx(-math.log(0.1), rel=1e-5)
    assert float(common) == pytest.approx(-math.log(0.9), rel=1e-5)


@pytest.mark.parametrize("marginals", [[1, 1, 1], [6, 3, 1]])
def test_sinkhorn_labels_follow_marginals(marginals):
    rng = np.random.default_rng(0)
    n = 600
    # predictions that all favour class 0: the transport must still split by the marginals
    logits = rng.normal(size=(n, 3)) * 0.1
    logits[:, 0] += 1.0
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    labels = sinkhorn_labels(log_p, np.array(marginals, float), lam=25.0, n_iter=500)
    counts = np.bincount(labels, minlength=3) / n
    np.testing.assert_allclose(counts, np.array(marginals) / sum(marginals), atol=0.05)


def test_sinkhorn_labels_keep_a_balanced_confident_answer():
    truth = np.repeat(np.arange(4), 50)
    log_p = np.log(np.full((200, 4), 0.02))
    log_p[np.arange(200), truth] = np.log(0.94)
    np.testing.assert_array_equal(sinkhorn_labels(log_p, np.ones(4)), truth)


def test_key_queue_is_fifo():
    q = KeyQueue(4, 2)
    keys, labels = q.contents()
    assert keys.shape == (0, 2) and labels.shape == (0,)
    q.push(torch.tensor([[1.0, 0], [2, 0], [3, 0]]), torch.tensor([1, 2, 3]))
    keys, labels = q.contents()
    assert keys[:, 0].tolist() == [1, 2, 3] and labels.tolist() == [1, 2, 3]
    q.push(torch.tensor([[4.0, 0], [5, 0]]), torch.tensor([4, 5]))
    keys, labels = q.contents()
    assert sorted(keys[:, 0].tolist()) == [2, 3, 4, 5] and sorted(labels.tolist()) == [2, 3, 4, 5]
    q.push(torch.arange(12.0).reshape(6, 2))  # more than capacity: the last 4 stay, unlabelled
    keys, labels = q.contents()
    assert sorted(keys[:, 0].tolist()) == [4, 6, 8, 10] and labels.tolist() == [-1] * 4
    keys[0, 0] = 99.0  # contents are copies
    assert 99.0 not in q.contents()[0][:, 0].tolist()
