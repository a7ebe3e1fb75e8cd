"""Dynamic Neighbours Aggregation (DNA): I²MD's cluster-level contrast, as pure functions.

What the I²MD paper says (abstract): in each modality an additional cluster-level
discrimination branch "adaptively aggregates highly-correlated neighbouring features,
forming local cluster-level contrasting". Its equations are not available to us, so
everything concrete below is **our design**, explained in Chapter 4 of the book and
configurable through :class:`i2md_lib.config.PretrainConfig` (``dna_*`` fields):

1. **Select** (:func:`select_neighbors`). Each anchor's key is compared with the
   branch's memory queue, and of the ``max_neighbors`` most similar slots a *gate*
   keeps some:

   * ``gate="zscore"`` (the default of :class:`~i2md_lib.config.PretrainConfig`): a slot
     is kept when its similarity stands out of the anchor's *own* similarity
     distribution over the queue, ``(s_j - mean_j s) / std_j s >= zscore``. An anchor
     in a dense, well-separated neighbourhood keeps many slots, an anchor whose
     similarities are all alike keeps few or none: the count follows the anchor.
   * ``gate="fixed"`` (our first design, kept as an ablation): a slot is kept when it is
     both *absolutely* similar (cosine >= ``threshold``) and *relatively* similar
     (within ``margin`` of the anchor's best match). In a crowded embedding these fixed
     cosine gates rarely bind, and the selection is then simply the top
     ``max_neighbors``.
2. **Aggregate** (:func:`aggregate_neighbors`). The anchor's key and its selected
   neighbours are averaged with weights ``softmax(similarity / tau)`` (the key's
   similarity to itself is 1) into one L2-normalised cluster-level positive.
3. **Contrast** (:func:`cluster_infonce`). The query is pulled towards that positive
   and pushed from the queue; the selected neighbours are removed from the negatives,
   since they are now treated as positives.

With no neighbour selected, the positive is the key itself and the loss is plain
instance-level InfoNCE: this is also what happens during the warm-up epochs.
"""
from __future__ import annotations

from typing import NamedTuple

from .config import DNA_GATES

import torch
import torch.nn.functional as F
from torch import Tensor


class Selection(NamedTuple):
    """Which queue entries DNA took as an anchor's neighbours; each field ``(N, k)``."""

    index: Tensor        # candidate queue slots, most similar first
    similarity: Tensor   # their cosine similarity to the anchor (in the branch's own space)
    selected: Tensor     # bool, which candidates the gates kept


@torch.no_grad()
def select_neighbors(key: Tensor, queue: Tensor, max_neighbors: int, threshold: float = 0.5,
                     margin: float = 2.0, gate: str = "fixed", zscore: float = 2.0) -> Selection:
    """Pick each anchor's highly-correlated queue entries.

    Args:
        key: ``(N, D)`` L2-normalised anchor keys.
        queue: ``(K, D)`` L2-normalised memory queue.
        max_neighbors: candidates considered per anchor (``k``; 0 disables DNA).
        threshold: (``fixed`` gate) minimum cosine similarity of a neighbour.
        margin: (``fixed`` gate) a neighbour's similarity must be >= (best similarity -
            ``margin``); 2.0 or more disables this relative gate.
        gate: ``"fixed"`` (threshold and margin) or ``"zscore"``.
        zscore: (``zscore`` gate) how many standard deviations above the mean of the
            anchor's similarities to the whole queue a neighbour must lie.

    Returns:
        ``index`` ``(N, k)`` candidate slots, most similar first;
        ``similarity`` ``(N, k)`` their cosine similarities;
        ``selected`` ``(N, k)`` bool, which candidates are kept.
    """
    k = min(max_neighbors, len(queue))
    if k <= 0:
        empty = key.new_zeros((len(key), 0))
        return Selection(empty.long(), empty, empty.bool())
    if gate not in DNA_GATES:
        raise ValueError(f"unknown DNA gate {gate!r}; choose one of {', '.join(DNA_GATES)}")
    every = key @ queue.T                                             # (N, K)
    similarity, index = every.topk(k, dim=1)                          # (N, k) each
    if gate == "zscore":
        mean, std = every.mean(1, keepdim=True), every.std(1, keepdim=True)   # (N, 1) per anchor
        selected = (similarity - mean) >= zscore * std
    else:
        best = similarity[:, :1]                                      # (N, 1)
        selected = (similarity >= threshold) & (similarity >= best - margin)
    return Selection(index, similarity, selected)


def aggregate_neighbors(key: Tensor, queue: Tensor, index: Tensor, similarity: Tensor,
                        selected: Tensor, tau: float) -> Tensor:
    """Softmax-weighted average of the anchor key and its selected neighbours.

    Args:
        key: ``(N, D)`` anchor keys; queue: ``(K, D)``.
        index, similarity, selected: ``(N, k)`` from :func:`select_neighbors`.
        tau: aggregation temperature (small -> the most similar entries dominate).

    Returns:
        ``(N, D)`` L2-normalised cluster-level positives (no gradient: built from keys).
    """
    with torch.no_grad():
        self_sim = similarity.new_ones((len(key), 1))                             # (N, 1)
        scores = torch.cat([self_sim, similarity], dim=1) / tau                   # (N, 1+k)
        keep = torch.cat([torch.ones_like(self_sim, dtype=torch.bool), selected], dim=1)
        weights = F.softmax(scores.masked_fill(~keep, float("-inf")), dim=1)     # (N, 1+k)
        members = torch.cat([key.unsqueeze(1), queue[index]], dim=1)              # (N, 1+k, D)
        return F.normalize((weights.unsqueeze(2) * members).sum(1), dim=1)


def cluster_infonce(query: Tensor, positive: Tensor, queue: Tensor, index: Tensor,
                    selected: Tensor, temperature: float) -> Tensor:
    """InfoNCE of queries against aggregated positives, selected neighbours removed from the negatives.

    Args:
        query: ``(N, D)`` L2-normalised cluster-branch queries (with gradient).
        positive: ``(N, D)`` cluster-level positives from :func:`aggregate_neighbors`.
        queue: ``(K, D)`` negatives; index / selected: ``(N, k)`` from :func:`select_neighbors`.
        temperature: softmax temperature.

    Returns:
        Scalar loss (mean over the batch).
    """
    l_pos = (query * positive).sum(1, keepdim=True)                       # (N, 1)
    l_neg = query @ queue.detach().T                                        # (N, K)
    if index.numel():
        drop = torch.zeros_like(l_neg, dtype=torch.bool)
        drop.scatter_(1, index, selected)                                   # (N, K) neighbours
        l_neg = l_neg.masked_fill(drop, float("-inf"))
    logits = torch.cat([l_pos, l_neg], dim=1) / temperature                 # (N, 1+K)
    labels = torch.zeros(len(query), dtype=torch.long, device=query.device)
    return F.cross_entropy(logits, labels)


def dna_loss(query: Tensor, key: Tensor, queue: Tensor, max_neighbors: int, threshold: float,
             margin: float, tau: float, temperature: float, rank_key: Tensor | None = None,
             rank_queue: Tensor | None = None, gate: str = "fixed", zscore: float = 2.0
             ) -> tuple[Tensor, Selection]:
    """The whole cluster-level branch loss of one modality: select, aggregate, contrast.

    Args:
        query: ``(N, D)`` cluster-branch queries; key: ``(N, D)`` cluster-branch keys;
        queue: ``(K, D)`` the cluster-branch queue. Other arguments: see the functions above.
        rank_key, rank_queue: rank the neighbours in another space (e.g. the instance
            branch's keys ``(N, D')`` and queue ``(K, D')``, whose slot ``i`` holds the same
            clip); the aggregation weights still use the cluster-branch similarities.
            Default: the cluster branch itself.
        gate, zscore: the selection gate, see :func:`select_neighbors`.

    Returns:
        The scalar loss and the :class:`Selection` (slots ranked in the rank space,
        similarities in the cluster space).
    """
    if (rank_key is None) != (rank_queue is None):
        raise ValueError("give both rank_key and rank_queue, or neither")
    if rank_key is None:
        selection = select_neighbors(key, queue, max_neighbors, threshold, margin, gate, zscore)
    else:
        ranked = select_neighbors(rank_key, rank_queue, max_neighbors, threshold, margin, gate, zscore)
        similarity = (key.unsqueeze(1) * queue[ranked.index]).sum(2)          # (N, k) cluster space
        selection = Selection(ranked.index, similarity, ranked.selected)
    positive = aggregate_neighbors(key, queue, *selection, tau)
    loss = cluster_infonce(query, positive, queue, selection.index, selection.selected, temperature)
    return loss, selection
