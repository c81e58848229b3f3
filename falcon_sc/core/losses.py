"""FALCON losses on fine logits, written against a fine x coarse relation ``M``."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_NEG = -1e9


def children_mask(relation: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
    """Boolean (batch x K_F) mask of the fine classes that are children of each sample's coarse class."""
    return relation[:, coarse].T.bool()


def coarse_nll(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``-log (p @ M)[y_c]`` computed stably as logsumexp(children logits) - logsumexp(all logits)."""
    inside = torch.logsumexp(logits.masked_fill(~mask, _NEG), dim=1)
    return (torch.logsumexp(logits, dim=1) - inside).mean()


def neighbour_consistency(probs: torch.Tensor, neighbour_probs: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``-mean_k log <p(x), p_EMA(x_k)>`` with ``neighbour_probs`` of shape (batch, k, K_F)."""
    dots = torch.einsum("bf,bkf->bk", probs, neighbour_probs)
    return -torch.log(dots.clamp_min(eps)).mean()


def confident_targets(teacher_logits: torch.Tensor, mask: torch.Tensor, temperature: float, tau: float) -> torch.Tensor:
    """Teacher targets restricted to the coarse class's children, annealed from soft (``tau=1``) to one-hot (``0``)."""
    q = torch.softmax((teacher_logits / temperature).masked_fill(~mask, _NEG), dim=1)
    if tau >= 1.0:
        return q
    hard = F.one_hot(q.argmax(dim=1), q.shape[1]).to(q.dtype)
    return tau * q + (1.0 - tau) * hard


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``CE(q, p_theta)`` for soft targets ``q``."""
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def marginal_entropy_gap(probs: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``log K_F - H(mean_batch p)``: zero when all fine classes are used equally, positive otherwise."""
    mean = probs.mean(dim=0)
    entropy = -(mean * torch.log(mean.clamp_min(eps))).sum()
    return math.log(probs.shape[1]) - entropy


def within_coarse_entropy_gap(
    probs: torch.Tensor, mask: torch.Tensor, coarse: torch.Tensor, relation: torch.Tensor, eps: float = 1e-8
) -> torch.Tensor:
    """Share-weighted mean over coarse classes of ``log n_c - H(mean p over the class's samples, on its children)``.

    Zero when, inside every coarse class of the batch, its ``n_c`` children are used equally; unlike the global
    term it does not tie the size of a fine class to the size of its parent.
    """
    q = probs * mask
    q = q / q.sum(dim=1, keepdim=True).clamp_min(eps)
    onehot = F.one_hot(coarse, relation.shape[1]).to(q.dtype)
    counts = onehot.sum(dim=0)
    mean = (onehot.T @ q) / counts.clamp_min(1.0)[:, None]
    entropy = -(mean * torch.log(mean.clamp_min(eps))).sum(dim=1)
    gap = torch.log(relation.sum(dim=0).clamp_min(1.0)) - entropy
    return (counts / counts.sum() * gap).sum()


def marginal_prior_kl(probs: torch.Tensor, prior: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``KL(prior || mean_batch p)``: zero when the batch uses the fine classes in the proportions ``prior``.

    Unlike :func:`marginal_entropy_gap` it does not pull the classes towards equal sizes: a rare class keeps its
    small share, and emptying it costs ``prior_f log(prior_f / share_f)``, growing as its share vanishes.
    """
    mean = probs.mean(dim=0).clamp_min(eps)
    prior = prior.clamp_min(0.0)
    return (prior * (torch.log(prior.clamp_min(eps)) - torch.log(mean))).sum()
