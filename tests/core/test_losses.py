"""FALCON losses against naive hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from falcon_sc.core import losses

# 5 fine classes under 2 coarse classes: fine 0,1 -> coarse 0; fine 2,3,4 -> coarse 1
PARENT = np.array([0, 0, 1, 1, 1])
M = torch.zeros(5, 2)
M[np.arange(5), PARENT] = 1.0


def _batch(seed=0, n=8):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, 5, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, 2, (n,), generator=g)
    return logits, y


def test_children_mask():
    y = torch.tensor([0, 1, 1, 0])
    mask = losses.children_mask(M, y)
    assert mask.dtype == torch.bool and mask.shape == (4, 5)
    expected = torch.tensor(PARENT)[None, :] == y[:, None]
    assert torch.equal(mask, expected)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_coarse_nll_matches_naive(seed):
    logits, y = _batch(seed)
    mask = losses.children_mask(M.double(), y)
    naive = -torch.log((torch.softmax(logits, dim=1) @ M.double())[torch.arange(len(y)), y]).mean()
    got = losses.coarse_nll(logits, mask)
    assert torch.allclose(got, naive, atol=1e-10)


def test_coarse_nll_zero_when_all_mass_inside_and_stable():
    y = torch.tensor([0, 1])
    mask = losses.children_mask(M, y)
    logits = torch.full((2, 5), -200.0)
    logits[0, 1] = 200.0
    logits[1, 3] = 200.0
    assert float(losses.coarse_nll(logits, mask)) == pytest.approx(0.0, abs=1e-6)
    # mass entirely outside the children: large but finite, with finite gradients
    bad = torch.full((2, 5), -200.0, requires_grad=True)
    with torch.no_grad():
        bad[0, 3] = 200.0
        bad[1, 0] = 200.0
    value = losses.coarse_nll(bad, mask)
    assert torch.isfinite(value) and value.item() > 100
    value.backward()
    assert torch.all(torch.isfinite(bad.grad))


def test_coarse_nll_equals_log_ratio_for_uniform_logits():
    y = torch.tensor([0, 1])
    mask = losses.children_mask(M, y)
    value = losses.coarse_nll(torch.zeros(2, 5), mask)
    # sample 0 has 2/5 of the mass inside, sample 1 has 3/5
    assert float(value) == pytest.approx(-(math.log(2 / 5) + math.log(3 / 5)) / 2, rel=1e-6)


def test_neighbour_consistency_matches_hand_computation():
    probs = torch.tensor([[0.5, 0.5, 0.0], [0.1, 0.2, 0.7]])
    nb = torch.tensor(
        [
            [[1.0, 0.0, 0.0], [0.2, 0.8, 0.0]],
            [[0.0, 0.0, 1.0], [1 / 3, 1 / 3, 1 / 3]],
        ]
    )
    dots = [0.5, 0.5, 0.7, 1 / 3]
    expected = -np.mean(np.log(dots))
    assert float(losses.neighbour_consistency(probs, nb)) == pytest.approx(expected, rel=1e-6)


def test_neighbour_consistency_zero_for_identical_one_hot_and_clamped():
    p = torch.eye(3)
    assert float(losses.neighbour_consistency(p, p[:, None, :].repeat(1, 4, 1))) == pytest.approx(0.0, abs=1e-7)
    # disjoint support: -log(eps), finite
    disjoint = torch.roll(torch.eye(3), 1, dims=1)[:, None, :]
    value = losses.neighbour_consistency(p, disjoint, eps=1e-8)
    assert float(value) == pytest.approx(-math.log(1e-8), rel=1e-5)


def test_soft_cross_entropy():
    logits, _ = _batch(3)
    hard = torch.tensor([0, 4, 2, 1, 3, 0, 2, 1])
    one_hot = torch.nn.functional.one_hot(hard, 5).double()
    ref = torch.nn.functional.cross_entropy(logits, hard)
    assert torch.allclose(losses.soft_cross_entropy(logits, one_hot), ref)
    q = torch.softmax(torch.randn(8, 5, dtype=torch.float64), dim=1)
    naive = -(q * torch.log(torch.softmax(logits, dim=1))).sum(1).mean()
    assert torch.allclose(losses.soft_cross_entropy(logits, q), naive)


# --------------------------------------------------------------------------------------------- confident targets


@pytest.mark.parametrize("tau", [0.0, 0.3, 1.0])
def test_confident_targets_zero_outside_children(tau):
    logits, y = _batch(4, n=16)
    mask = losses.children_mask(M.double(), y)
    q = losses.confident_targets(logits, mask, temperature=0.9, tau=tau)
    assert torch.all(q[~mask] == 0)
    assert torch.allclose(q.sum(dim=1), torch.ones(16, dtype=q.dtype))
    assert torch.all(q >= 0)


def test_confident_targets_soft_at_tau_one():
    logits, y = _batch(5)
    mask = losses.children_mask(M.double(), y)
    T = 0.5
    q = losses.confident_targets(logits, mask, temperature=T, tau=1.0)
    expected = torch.exp(logits / T) * mask
    expected = expected / expected.sum(dim=1, keepdim=True)
    assert torch.allclose(q, expected, atol=1e-10)


def test_confident_targets_one_hot_at_tau_zero():
    logits, y = _batch(6)
    # make the global argmax lie outside the children for some samples
    logits[:, 0] += 10 * (y == 1)
    mask = losses.children_mask(M.double(), y)
    q = losses.confident_targets(logits, mask, temperature=0.9, tau=0.0)
    best_child = logits.masked_fill(~mask, -np.inf).argmax(dim=1)
    assert torch.equal(q, torch.nn.functional.one_hot(best_child, 5).double())


def test_confident_targets_interpolate():
    logits, y = _batch(7)
    mask = losses.children_mask(M.double(), y)
    soft = losses.confident_targets(logits, mask, 0.9, 1.0)
    hard = losses.confident_targets(logits, mask, 0.9, 0.0)
    mid = losses.confident_targets(logits, mask, 0.9, 0.25)
    assert torch.allclose(mid, 0.25 * soft + 0.75 * hard)


# --------------------------------------------------------------------------------------------- regularisers


def test_marginal_entropy_gap_uniform_is_zero():
    assert float(losses.marginal_entropy_gap(torch.eye(5))) == pytest.approx(0.0, abs=1e-6)
    assert float(losses.marginal_entropy_gap(torch.full((3, 5), 0.2))) == pytest.approx(0.0, abs=1e-6)


def test_marginal_entropy_gap_one_hot_batch_is_log_k():
    probs = torch.zeros(6, 5)
    probs[:, 2] = 1.0
    assert float(losses.marginal_entropy_gap(probs)) == pytest.approx(math.log(5), rel=1e-5)


def test_marginal_entropy_gap_hand_computed():
    probs = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.5, 0.0, 0.5, 0.0]])
    mean = np.array([0.5, 0.25, 0.25, 0.0])
    entropy = -sum(m * math.log(m) for m in mean if m > 0)
    assert float(losses.marginal_entropy_gap(probs)) == pytest.approx(math.log(4) - entropy, rel=1e-5)


def test_within_coarse_entropy_gap_zero_when_children_used_equally():
    # coarse 0 (children 0,1): one cell on each; coarse 1 (children 2,3,4): one cell on each
    y = torch.tensor([0, 0, 1, 1, 1])
    probs = torch.eye(5)
    mask = losses.children_mask(M, y)
    assert float(losses.within_coarse_entropy_gap(probs, mask, y, M)) == pytest.approx(0.0, abs=1e-6)
    # mass on other coarse classes' children is ignored (renormalised onto the own children)
    leaky = 0.5 * probs + 0.5 * torch.tensor(
        [[0, 0, 1, 0, 0], [0, 0, 0, 1, 0], [1, 0, 0, 0, 0], [0, 1, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.float32
    )
    assert float(losses.within_coarse_entropy_gap(leaky, mask, y, M)) == pytest.approx(0.0, abs=1e-6)


def test_within_coarse_entropy_gap_hand_computed():
    # coarse 0: 2 cells both on fine 0 -> gap log 2; coarse 1: 1 cell uniform on its 3 children -> gap 0
    y = torch.tensor([0, 0, 1])
    probs = torch.tensor([[1.0, 0, 0, 0, 0], [1.0, 0, 0, 0, 0], [0, 0, 1 / 3, 1 / 3, 1 / 3]])
    mask = losses.children_mask(M, y)
    expected = 2 / 3 * math.log(2) + 1 / 3 * 0.0
    assert float(losses.within_coarse_entropy_gap(probs, mask, y, M)) == pytest.approx(expected, rel=1e-5)


def test_within_coarse_entropy_gap_ignores_size_of_parent():
    """Unlike the global term, a big coarse class with balanced children costs nothing."""
    y = torch.tensor([0] * 8 + [1] * 3)
    probs = torch.zeros(11, 5)
    probs[np.arange(8), np.arange(8) % 2] = 1.0
    probs[np.arange(8, 11), [2, 3, 4]] = 1.0
    mask = losses.children_mask(M, y)
    assert float(losses.within_coarse_entropy_gap(probs, mask, y, M)) == pytest.approx(0.0, abs=1e-6)
    assert float(losses.marginal_entropy_gap(probs)) > 0.05


def test_losses_are_differentiable():
    logits, y = _batch(8)
    logits = logits.float().requires_grad_(True)
    mask = losses.children_mask(M, y)
    probs = torch.softmax(logits, dim=1)
    nb = torch.softmax(torch.randn(8, 3, 5), dim=2)
    total = (
        losses.coarse_nll(logits, mask)
        + losses.neighbour_consistency(probs, nb)
        + losses.soft_cross_entropy(logits, losses.confident_targets(logits.detach(), mask, 0.9, 0.5))
        + losses.marginal_entropy_gap(probs)
        + losses.within_coarse_entropy_gap(probs, mask, y, M)
    )
    total.backward()
    assert torch.all(torch.isfinite(logits.grad)) and logits.grad.abs().sum() > 0


def test_marginal_prior_kl_zero_at_prior_not_at_equal_sizes():
    from falcon_sc.core.losses import marginal_prior_kl

    prior = torch.tensor([0.9, 0.08, 0.02])
    at_prior = prior.repeat(10, 1)
    assert float(marginal_prior_kl(at_prior, prior)) == pytest.approx(0.0, abs=1e-6)
    # equal sizes are NOT the optimum (unlike the entropy regulariser), and emptying the rare class costs most
    equal = torch.full((10, 3), 1 / 3)
    empty = torch.tensor([[0.92, 0.08, 0.0]]).repeat(10, 1)
    assert float(marginal_prior_kl(equal, prior)) > 0.5
    assert float(marginal_prior_kl(empty, prior)) > 0.25  # 0.02 * log(0.02 / 1e-8): grows as the share vanishes
