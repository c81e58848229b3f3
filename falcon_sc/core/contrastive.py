"""Losses and label solvers of the baseline methods (SCAN, SeLa, ANCOR, GML, WCL), written for coarse labels.

Every function works on tensors/arrays only; the methods that combine them live in :mod:`falcon_sc.baselines`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import sparse
from scipy.sparse.csgraph import connected_components

_NEG = -1e9


def info_nce(
    q: torch.Tensor,
    k: torch.Tensor,
    queue: torch.Tensor,
    temperature: float,
    negative_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """MoCo InfoNCE: ``-log exp(q.k/T) / (exp(q.k/T) + sum_neg exp(q.n/T))`` (inputs unit length).

    Parameters
    ----------
    q, k
        Query and positive key per sample (batch x d).
    queue
        Negative keys (Q x d).
    temperature
        Softmax temperature ``T``.
    negative_mask
        Optional batch x Q boolean: which queue entries are negatives of each sample (ANCOR: same coarse class).
        A sample without negatives contributes zero.
    """
    pos = (q * k).sum(dim=1, keepdim=True)
    neg = q @ queue.T
    if negative_mask is not None:
        neg = neg.masked_fill(~negative_mask, _NEG)
    logits = torch.cat([pos, neg], dim=1) / temperature
    return (torch.logsumexp(logits, dim=1) - logits[:, 0]).mean()


def angular_normalise(z: torch.Tensor, weights: torch.Tensor, labels: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """ANCOR's angular normalisation: ``(z/|z| - w_y/|w_y|) / |z/|z| - w_y/|w_y||``.

    The direction from the class weight ``w_y`` (row ``y`` of ``weights``) to the unit embedding: contrast then
    acts on the "orbit" around the class centre and no longer fights the class cross-entropy that pulls ``z``
    towards ``w_y``.
    """
    w = F.normalize(weights[labels], dim=1, eps=eps)
    return F.normalize(F.normalize(z, dim=1, eps=eps) - w, dim=1, eps=eps)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR instance-discrimination loss over the ``2N`` views; ``z1[i]``, ``z2[i]`` (unit length) are positives."""
    z = torch.cat([z1, z2])
    n = z1.shape[0]
    sim = (z @ z.T) / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), _NEG)
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(sim, target)


def supervised_contrastive(
    anchors: torch.Tensor, others: torch.Tensor, positives: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Supervised contrastive loss: mean over anchors of ``-mean_{j positive} log softmax_j(a_i @ o_j / T)``.

    Parameters
    ----------
    anchors, others
        Unit-length embeddings (batch x d each; ``others`` are the other view of the same samples).
    positives
        Batch x batch boolean, ``positives[i, j]``: sample ``j`` is a positive of anchor ``i``; must be true on the
        diagonal (every anchor has its own other view).
    temperature
        Softmax temperature.
    """
    log_p = F.log_softmax(anchors @ others.T / temperature, dim=1)
    pos = positives.to(log_p.dtype)
    return -((log_p * pos).sum(dim=1) / pos.sum(dim=1).clamp_min(1.0)).mean()


def nearest_neighbour_components(z: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """WCL weak labels: connected components of the 1-nearest-neighbour graph (cosine), edges only inside a group.

    Parameters
    ----------
    z
        Samples x d embeddings.
    groups
        Group per sample (coarse class); a sample alone in its group is its own component.

    Returns
    -------
    Component id per sample; samples share an id exactly when a chain of nearest-neighbour links joins them.
    """
    n = z.shape[0]
    zn = z / np.clip(np.linalg.norm(z, axis=1, keepdims=True), 1e-12, None)
    sim = zn @ zn.T
    np.fill_diagonal(sim, -np.inf)
    sim[groups[:, None] != groups[None, :]] = -np.inf
    nn_idx = sim.argmax(axis=1)
    has_nn = np.isfinite(sim[np.arange(n), nn_idx])
    rows = np.flatnonzero(has_nn)
    graph = sparse.coo_matrix((np.ones(rows.size), (rows, nn_idx[rows])), shape=(n, n))
    return connected_components(graph, directed=True, connection="weak")[1]


def class_kde_log_likelihood(z: torch.Tensor, queues: list[torch.Tensor], temperature: float) -> torch.Tensor:
    """``log s(x|c) = log mean_{z_c in queue_c} exp(z @ z_c / T)`` for every class ``c`` (batch x classes).

    The Gaussian-kernel density of GML with unit-length features (``-|z - z_c|^2 / 2T = z @ z_c / T - 1/T``).
    An empty queue gives ``-inf``.
    """
    out = []
    for q in queues:
        if q.shape[0] == 0:
            out.append(z.new_full((z.shape[0],), float("-inf")))
        else:
            out.append(torch.logsumexp(z @ q.T / temperature, dim=1) - float(np.log(q.shape[0])))
    return torch.stack(out, dim=1)


def logit_adjusted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, log_prior: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``logits + log p(c)`` (logit adjustment for class imbalance; GML's loss form)."""
    return F.cross_entropy(logits + log_prior, labels)


def sinkhorn_labels(
    log_probs: np.ndarray, marginals: np.ndarray, lam: float = 25.0, n_iter: int = 100, tol: float = 1e-6
) -> np.ndarray:
    """SeLa's label assignment: ``argmax`` of ``Q = diag(a) P^lam diag(b)`` with ``Q 1 = 1/N``, ``Q^T 1 = marginals``.

    Solves the entropy-regularised transport between samples (uniform mass) and classes (``marginals``, which may
    be non-uniform) by Sinkhorn-Knopp in log space.

    Parameters
    ----------
    log_probs
        Samples x classes log-probabilities ``log P``.
    marginals
        Target share of each class (normalised here).
    lam
        Sharpness ``lambda`` (SeLa: 25).
    n_iter, tol
        Iteration cap and stopping tolerance on the column marginals.

    Returns
    -------
    Class index per sample.
    """
    n, k = log_probs.shape
    r = np.asarray(marginals, dtype=np.float64)
    r = r / r.sum()
    log_q = lam * np.asarray(log_probs, dtype=np.float64)
    log_q -= log_q.max()
    log_r, log_c = np.log(np.full(n, 1.0 / n)), np.log(np.clip(r, 1e-300, None))
    for _ in range(n_iter):
        log_q += (log_c - _logsumexp(log_q, axis=0))[None, :]
        log_q += (log_r - _logsumexp(log_q, axis=1))[:, None]
        if np.abs(np.exp(_logsumexp(log_q, axis=0)) - r).max() < tol:
            break
    return log_q.argmax(axis=1)


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    m = a.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(a - m).sum(axis=axis, keepdims=True))).squeeze(axis)
