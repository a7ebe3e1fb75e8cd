"""CMD's cross-modal mutual distillation: KL between neighbour-similarity distributions.

A teacher modality ranks its queue by similarity to its key and keeps its ``topk``
nearest slots; a student modality scores the same slots (slot ``i`` holds the same
clip in every queue) with its query. The student is pulled towards the teacher's
distribution over them. Chapter 3 of the book explains it (Mao et al., ECCV 2022).
Embeddings are L2-normalised by the caller; shapes as in :mod:`.infonce`.
"""
from __future__ import annotations

import itertools
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor


#: A teacher's neighbours: ``(p_teacher (N, K'), index (N, K'))``, see :func:`teacher_neighbors`.
TeacherNeighbors = tuple[Tensor, Tensor]


def teacher_neighbors(teacher_key: Tensor, teacher_queue: Tensor, topk: int, tau_teacher: float) -> TeacherNeighbors:
    """The teacher's side of CMD: its ``topk`` nearest queue slots and its distribution over them.

    Args:
        teacher_key: ``(N, D)`` keys of the teacher modality (momentum encoder).
        teacher_queue: ``(K, D)`` the teacher modality's queue.
        topk: neighbours kept (``K'``, at most ``K``).
        tau_teacher: teacher temperature (0.05 in CMD, sharper).

    Returns:
        ``p_teacher`` ``(N, K')`` probabilities and ``index`` ``(N, K')`` the queue slots,
        nearest first; no gradient. A teacher serves every student it teaches (CMD's two
        other modalities, IMD's other branch): computed once, the same tensors each time.
    """
    if not 1 <= topk <= len(teacher_queue):
        raise ValueError(f"topk must be in [1, K={len(teacher_queue)}], got {topk}")
    with torch.no_grad():
        teacher_sim = teacher_key @ teacher_queue.T                   # (N, K)
        teacher_top, index = teacher_sim.topk(topk, dim=1)            # (N, K') each
        p_teacher = F.softmax(teacher_top / tau_teacher, dim=1)       # (N, K')
    return p_teacher, index


def student_log_probs(student_query: Tensor, student_queue: Tensor, index: Tensor, tau_student: float) -> Tensor:
    """The student's side: its log-distribution ``(N, K')`` over the teacher's slots ``index``,
    scored by its query ``(N, D)`` against its own queue ``(K, D)`` (gradient to the query only)."""
    student_sim = student_query @ student_queue.detach().T           # (N, K)
    student_top = student_sim.gather(1, index)                        # (N, K')
    return F.log_softmax(student_top / tau_student, dim=1)           # (N, K')


def neighbor_distribution_pair(
    teacher_key: Tensor, teacher_queue: Tensor, student_query: Tensor, student_queue: Tensor,
    topk: int, tau_teacher: float, tau_student: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """The two neighbour distributions that CMD aligns, over the teacher's top-k queue entries.

    The teacher ranks its *own* queue by similarity to its key and keeps the
    ``topk`` nearest entries (:func:`teacher_neighbors`); the student scores the *same
    queue slots* (slot i holds the same clip in every modality's queue) with its query
    against its own queue (:func:`student_log_probs`).

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
    p_teacher, index = teacher_neighbors(teacher_key, teacher_queue, topk, tau_teacher)
    return p_teacher, student_log_probs(student_query, student_queue, index, tau_student), index


def neighbor_distillation(
    teacher_key: Tensor, teacher_queue: Tensor, student_query: Tensor, student_queue: Tensor,
    topk: int, tau_teacher: float, tau_student: float, teacher: TeacherNeighbors | None = None,
) -> Tensor:
    """CMD's distillation from one modality (teacher) to another (student): ``KL(P_T || P_S)``.

    See :func:`neighbor_distribution_pair` for the arguments and shapes. The KL is
    summed over the ``topk`` entries and averaged over the batch, i.e.
    ``F.kl_div(log P_S, P_T, reduction="batchmean")`` as in the reference. ``teacher``:
    :func:`teacher_neighbors` of ``teacher_key`` and ``teacher_queue`` with ``topk`` and
    ``tau_teacher`` where the caller has them already (the same values, computed once).

    Returns:
        Scalar loss; gradients reach only ``student_query``.
    """
    p_teacher, index = teacher if teacher is not None else teacher_neighbors(
        teacher_key, teacher_queue, topk, tau_teacher)
    log_p_student = student_log_probs(student_query, student_queue, index, tau_student)
    return F.kl_div(log_p_student, p_teacher, reduction="batchmean")


def all_teacher_neighbors(keys: Mapping[str, Tensor], queues: Mapping[str, Tensor], topk: int,
                          tau_teacher: float) -> dict[str, TeacherNeighbors]:
    """:func:`teacher_neighbors` of every modality: modality -> ``(p_teacher, index)``."""
    return {m: teacher_neighbors(keys[m], queues[m], topk, tau_teacher) for m in keys}


def cmd_loss(
    keys: Mapping[str, Tensor], queries: Mapping[str, Tensor], queues: Mapping[str, Tensor],
    topk: int, tau_teacher: float, tau_student: float,
    teachers: Mapping[str, TeacherNeighbors] | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Cross-modal mutual distillation: :func:`neighbor_distillation` over every ordered pair.

    Args:
        keys: modality -> ``(N, D)`` keys (teachers).
        queries: modality -> ``(N, D)`` queries (students).
        queues: modality -> ``(K, D)`` queues; slot i is the same clip in all of them.
        topk, tau_teacher, tau_student: as in :func:`neighbor_distillation`.
        teachers: :func:`all_teacher_neighbors` of ``keys`` and ``queues`` (with ``topk`` and
            ``tau_teacher``) if the caller has them; else computed here, once per teacher.

    Returns:
        ``(total, per_pair)``: the sum over the ``M (M-1)`` ordered pairs (6 for three
        modalities) and a dict ``"teacher->student"`` -> scalar loss.
    """
    if len(keys) < 2:
        raise ValueError("cmd_loss needs at least two modalities")
    if teachers is None:
        teachers = all_teacher_neighbors(keys, queues, topk, tau_teacher)
    per_pair: dict[str, Tensor] = {}
    for teacher, student in itertools.permutations(list(keys), 2):
        per_pair[f"{teacher}->{student}"] = neighbor_distillation(
            keys[teacher], queues[teacher], queries[student], queues[student],
            topk, tau_teacher, tau_student, teacher=teachers[teacher])
    total = torch.stack(list(per_pair.values())).sum()
    return total, per_pair
