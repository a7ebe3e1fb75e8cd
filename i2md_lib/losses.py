"""Pure loss functions of the pretraining methods (no state, no logging).

Every embedding passed in is already L2-normalised by the caller, so a dot
product is a cosine similarity. Shapes: ``N`` clips in the batch, ``D`` the
embedding size (``EncoderConfig.out_dim``), ``K`` the queue size.

* :func:`infonce` -- MoCo's instance discrimination (one positive, the queue as
  negatives).
* :func:`neighbor_distillation` / :func:`cmd_loss` -- CMD's cross-modal mutual
  distillation: KL between neighbour-similarity distributions.
* :func:`positive_mining_infonce` -- CrosSCLR-style cross-modal positive mining,
  the hard special case that CMD generalises.

The book's CMD chapter explains them; ``shared/reference/method-cmd-i2md.md``
section 1.3-1.4 describes the reference code they reproduce.
"""
from __future__ import annotations

import itertools
from typing import Mapping, Sequence

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


def neighbor_distribution_pair(
    teacher_key: Tensor, teacher_queue: Tensor, student_query: Tensor, student_queue: Tensor,
    topk: int, tau_teacher: float, tau_student: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """The two neighbour distributions that CMD aligns, over the teacher's top-k queue entries.

    The teacher ranks its *own* queue by similarity to its key and keeps the
    ``topk`` nearest entries; the student scores the *same queue slots* (slot i
    holds the same clip in every modality's queue) with its query against its
    own queue.

    Args:
        teacher_key: ``(N, D)`` keys of the teacher modality (momentum encoder).
        teacher_queue: ``(K, D)`` the teacher modality's queue.
        student_query: ``(N, D)`` queries of the student modality (gradient encoder).
        student_queue: ``(K, D)`` the student modality's queue.
        topk: neighbours kept (``K'``, at most ``K``).
        tau_teacher: teacher temperature (0.05 in CMD, sharper).
        tau_student: student temperature (0.1 in CMD).

    Returns:
        ``p_teacher`` ``(N, K')`` probabilities (no gradient),
        ``log_p_student`` ``(N, K')`` log-probabilities (with gradient),
        ``index`` ``(N, K')`` the queue slots, nearest first.
    """
    if not 1 <= topk <= len(teacher_queue):
        raise ValueError(f"topk must be in [1, K={len(teacher_queue)}], got {topk}")
    with torch.no_grad():
        teacher_sim = teacher_key @ teacher_queue.T                   # (N, K)
        teacher_top, index = teacher_sim.topk(topk, dim=1)            # (N, K') each
        p_teacher = F.softmax(teacher_top / tau_teacher, dim=1)       # (N, K')
    student_sim = student_query @ student_queue.detach().T           # (N, K)
    student_top = student_sim.gather(1, index)                        # (N, K')
    log_p_student = F.log_softmax(student_top / tau_student, dim=1)  # (N, K')
    return p_teacher, log_p_student, index


def neighbor_distillation(
    teacher_key: Tensor, teacher_queue: Tensor, student_query: Tensor, student_queue: Tensor,
    topk: int, tau_teacher: float, tau_student: float,
) -> Tensor:
    """CMD's distillation from one modality (teacher) to another (student): ``KL(P_T || P_S)``.

    See :func:`neighbor_distribution_pair` for the arguments and shapes. The KL is
    summed over the ``topk`` entries and averaged over the batch, i.e.
    ``F.kl_div(log P_S, P_T, reduction="batchmean")`` as in the reference.

    Returns:
        Scalar loss; gradients reach only ``student_query``.
    """
    p_teacher, log_p_student, _ = neighbor_distribution_pair(
        teacher_key, teacher_queue, student_query, student_queue, topk, tau_teacher, tau_student)
    return F.kl_div(log_p_student, p_teacher, reduction="batchmean")


def cmd_loss(
    keys: Mapping[str, Tensor], queries: Mapping[str, Tensor], queues: Mapping[str, Tensor],
    topk: int, tau_teacher: float, tau_student: float,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Cross-modal mutual distillation: :func:`neighbor_distillation` over every ordered pair.

    Args:
        keys: modality -> ``(N, D)`` keys (teachers).
        queries: modality -> ``(N, D)`` queries (students).
        queues: modality -> ``(K, D)`` queues; slot i is the same clip in all of them.
        topk, tau_teacher, tau_student: as in :func:`neighbor_distillation`.

    Returns:
        ``(total, per_pair)``: the sum over the ``M (M-1)`` ordered pairs (6 for three
        modalities) and a dict ``"teacher->student"`` -> scalar loss.
    """
    per_pair: dict[str, Tensor] = {}
    for teacher, student in itertools.permutations(list(keys), 2):
        per_pair[f"{teacher}->{student}"] = neighbor_distillation(
            keys[teacher], queues[teacher], queries[student], queues[student],
            topk, tau_teacher, tau_student)
    if not per_pair:
        raise ValueError("cmd_loss needs at least two modalities")
    total = torch.stack(list(per_pair.values())).sum()
    return total, per_pair


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
