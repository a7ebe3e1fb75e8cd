"""Cross-modal positive mining (CrosSCLR-style): the hard special case that CMD generalises.

The other modalities' nearest queue neighbours of a clip become extra positives of
this modality's InfoNCE. Chapter 3 of the book compares it with CMD.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .infonce import multi_positive_infonce


def mined_positive_mask(miner_keys: Sequence[Tensor], miner_queues: Sequence[Tensor], topk: int) -> Tensor:
    """Queue slots that other modalities consider nearest neighbours of each clip.

    Args:
        miner_keys: keys ``(N, D)`` of the mining modalities.
        miner_queues: their queues ``(K, D)``, in the same order.
        topk: neighbours taken from each mining modality.

    Returns:
        ``(N, K)`` bool mask, the union over the mining modalities of their top-k slots.
    """
    if len(miner_keys) != len(miner_queues) or not miner_keys:
        raise ValueError("give one queue per mining key, and at least one of each")
    mask = torch.zeros(len(miner_keys[0]), len(miner_queues[0]), dtype=torch.bool,
                       device=miner_keys[0].device)                                 # (N, K)
    with torch.no_grad():
        for key, queue in zip(miner_keys, miner_queues):
            index = (key @ queue.T).topk(topk, dim=1).indices                       # (N, topk)
            mask.scatter_(1, index, True)
    return mask


def positive_mining_infonce(
    query: Tensor, key: Tensor, queue: Tensor,
    miner_keys: Sequence[Tensor], miner_queues: Sequence[Tensor],
    topk: int, temperature: float,
) -> Tensor:
    """CrosSCLR-style cross-modal positive mining (a teaching baseline for CMD).

    The *other* modalities rank their own queues by similarity to their keys; the
    ``topk`` nearest slots of each (union over the miners) become extra positives
    for *this* modality's query, in a multi-positive InfoNCE
    (:func:`multi_positive_infonce`).

    How CMD generalises it: CMD's teacher gives a *soft* distribution over its
    top-k neighbours, ``P_T = softmax(s_T / tau_T)``. As ``tau_T -> 0`` that
    distribution becomes one-hot on the teacher's nearest neighbour, and
    ``KL(P_T || P_S)`` reduces to ``-log P_S(nearest)`` -- pulling the student
    towards one mined positive, which is what positive mining does with
    ``topk=1`` (up to which entries form the softmax denominator). CMD keeps the
    teacher's full ranking instead of a hard, thresholded choice.

    Args:
        query: ``(N, D)`` queries of this modality.
        key: ``(N, D)`` keys of this modality (the usual positive).
        queue: ``(K, D)`` this modality's queue.
        miner_keys: keys ``(N, D)`` of the other modalities.
        miner_queues: their queues ``(K, D)`` (slot i = same clip in every queue).
        topk: positives mined from each other modality.
        temperature: softmax temperature ``T``.

    Returns:
        Scalar loss.
    """
    mask = mined_positive_mask(miner_keys, miner_queues, topk)   # (N, K)
    return multi_positive_infonce(query, key, queue, mask, temperature)
