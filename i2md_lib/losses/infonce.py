"""InfoNCE: MoCo's instance discrimination, and its multi-positive form.

Every embedding passed in is already L2-normalised by the caller, so a dot product
is a cosine similarity. Shapes: ``N`` clips in the batch, ``D`` the embedding size
(``EncoderConfig.out_dim``), ``K`` the queue size. Chapter 2 of the book explains
the loss (van den Oord et al., 2018; He et al., 2020).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def contrastive_logits(query: Tensor, key: Tensor, queue: Tensor, temperature: float) -> Tensor:
    """MoCo logits: column 0 is the positive ``q.k``, columns 1..K are ``q.queue``.

    Args:
        query: ``(N, D)`` queries (view 1, gradient encoder).
        key: ``(N, D)`` keys (view 2, momentum encoder); no gradient flows into them.
        queue: ``(K, D)`` negatives from earlier batches.
        temperature: softmax temperature ``T``.

    Returns:
        ``(N, 1 + K)`` logits divided by ``T``.
    """
    positive = torch.einsum("nd,nd->n", query, key.detach()).unsqueeze(1)  # (N, 1)
    negatives = query @ queue.detach().T                                   # (N, K)
    return torch.cat([positive, negatives], dim=1) / temperature           # (N, 1+K)


def infonce(query: Tensor, key: Tensor, queue: Tensor, temperature: float) -> Tensor:
    """InfoNCE of MoCo: cross-entropy of ``[q.k, q.queue] / T`` with the positive at index 0.

    Args:
        query: ``(N, D)`` L2-normalised queries.
        key: ``(N, D)`` L2-normalised keys (treated as constants).
        queue: ``(K, D)`` L2-normalised negatives (treated as constants).
        temperature: softmax temperature ``T`` (0.07 in CMD).

    Returns:
        Scalar loss, the mean over the batch.
    """
    logits = contrastive_logits(query, key, queue, temperature)                 # (N, 1+K)
    labels = torch.zeros(len(logits), dtype=torch.long, device=logits.device)   # positive at 0
    return F.cross_entropy(logits, labels)


def multi_positive_infonce(query: Tensor, key: Tensor, queue: Tensor, positive_mask: Tensor,
                           temperature: float) -> Tensor:
    """InfoNCE with extra positives: the mean of ``-log softmax`` over all positives of a row.

    Args:
        query, key, queue, temperature: as in :func:`infonce`.
        positive_mask: ``(N, K)`` bool, queue slots treated as positives in addition to the key.

    Returns:
        Scalar loss (equal to :func:`infonce` when the mask is all False).
    """
    logits = contrastive_logits(query, key, queue, temperature)             # (N, 1+K)
    key_column = torch.ones(len(logits), 1, dtype=torch.bool, device=logits.device)
    positives = torch.cat([key_column, positive_mask], dim=1).float()      # (N, 1+K)
    log_prob = F.log_softmax(logits, dim=1)                                 # (N, 1+K)
    return (-(log_prob * positives).sum(1) / positives.sum(1)).mean()
