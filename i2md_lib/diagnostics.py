"""What the model's neighbourhoods look like: the numbers the training log records and the
chapters plot. Nothing here changes a model or enters a loss.

* :func:`contrast_stats` -- cosine of query and key, of query and queue, and instance
  accuracy per modality (every step's log).
* :func:`neighbour_kinds`, :func:`neighbour_purity`, :func:`same_class_share` -- is a
  queue neighbour the clip itself (an older key of it), a clip of the same class, or
  of another class; the share of same-class neighbours, and what chance gives.
* :func:`dna_stats` -- how many neighbours DNA kept per anchor and how pure they were
  (the log of ``i2md``).
* :func:`neighbor_distributions` -- CMD's teacher and student distributions of a batch.
* :func:`neighbourhood_quality` -- same-class share of a trained model's key neighbours.

Labels are only ever used here, for diagnostics: no loss sees them.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor

from .dna import Selection
from .losses import neighbor_distribution_pair
from .models.moco import BranchEmbeddings, Embeddings, MoCo

#: Codes of :func:`neighbour_kinds`.
SELF, SAME_CLASS, OTHER_CLASS, EMPTY = 0, 1, 2, 3


@torch.no_grad()
def contrast_stats(emb: Embeddings, queues: BranchEmbeddings) -> dict[str, Tensor]:
    """Per-step scalars of the instance branch, per modality.

    ``pos_sim_<m>``: mean cosine ``q.k``; ``neg_sim_<m>``: mean cosine ``q.queue``;
    ``acc_<m>``: fraction of clips whose key beats every queue entry (instance
    discrimination accuracy).
    """
    stats = {}
    for m, q in emb.queries["instance"].items():
        positive = (q * emb.keys["instance"][m]).sum(1)     # (N,)
        negatives = q @ queues["instance"][m].T             # (N, K)
        stats[f"pos_sim_{m}"] = positive.mean()
        stats[f"neg_sim_{m}"] = negatives.mean()
        stats[f"acc_{m}"] = (positive > negatives.max(1).values).float().mean()
    return stats


def same_class_share(labels: Any) -> float:
    """The chance that another clip of the training set has a clip's class:
    ``sum_c n_c (n_c - 1) / (n (n - 1))`` -- the purity a random neighbour has."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64))
    n = counts.sum()
    return float((counts * (counts - 1)).sum() / (n * (n - 1)))


def neighbour_kinds(anchor_clips: Tensor, slots: Tensor, queue_clips: Tensor, labels: Tensor) -> Tensor:
    """What each chosen queue slot holds, relative to its anchor.

    Args:
        anchor_clips: ``(N,)`` dataset indices of the anchors.
        slots: ``(N, k)`` queue slots chosen for each anchor.
        queue_clips: ``(K,)`` dataset index held by each slot (-1: empty), ``MoCo.queue_clips()``.
        labels: ``(num_clips,)`` class of every training clip.

    Returns:
        ``(N, k)`` long: :data:`SELF` (an older key of the anchor itself), :data:`SAME_CLASS`,
        :data:`OTHER_CLASS` or :data:`EMPTY` (a slot not yet written).
    """
    anchor_clips = anchor_clips.to(queue_clips.device)
    labels = labels.to(queue_clips.device)
    clip = queue_clips[slots]                                                      # (N, k)
    same = labels[clip.clamp_min(0)] == labels[anchor_clips].unsqueeze(1)
    kinds = torch.where(same, SAME_CLASS, OTHER_CLASS)
    kinds = torch.where(clip == anchor_clips.unsqueeze(1), SELF, kinds)
    return torch.where(clip < 0, EMPTY, kinds)


def neighbour_purity(kinds: Tensor, selected: Tensor | None = None) -> Tensor:
    """Share of same-class clips among the (selected) neighbours of :func:`neighbour_kinds`,
    not counting the anchor's own older keys and empty slots; NaN when none is left."""
    known = (kinds == SAME_CLASS) | (kinds == OTHER_CLASS)
    if selected is not None:
        known = known & selected
    if not known.any():
        return torch.full((), float("nan"), device=kinds.device)
    return ((kinds == SAME_CLASS) & known).sum().float() / known.sum()


@torch.no_grad()
def dna_stats(selections: Mapping[str, Selection], anchor_clips: Tensor | None, queue_clips: Tensor,
              labels: Tensor | None) -> dict[str, Tensor]:
    """DNA's neighbourhoods of one step, per modality.

    ``dna_neighbors_<m>``: mean number of neighbours kept per anchor;
    ``dna_count_cv_<m>``: coefficient of variation (std / mean) of that number over the
    anchors -- 0 when every anchor keeps the same number (a fixed top-k), NaN when none
    keeps any;
    ``dna_purity_<m>``: :func:`neighbour_purity` of the kept neighbours (NaN without
    labels, anchors' indices or kept neighbours);
    ``dna_purity_topk_<m>``: the purity a *fixed* top-k of the same mean size would have
    had (the first ``round(mean)`` candidates of every anchor), for comparison.
    """
    nan = torch.full((), float("nan"), device=queue_clips.device)
    stats = {}
    for m, (slots, _, selected) in selections.items():
        counts = selected.float().sum(1)                                               # (N,)
        mean = counts.mean() if selected.numel() else torch.zeros((), device=queue_clips.device)
        stats[f"dna_neighbors_{m}"] = mean
        stats[f"dna_count_cv_{m}"] = counts.std(correction=0) / mean if mean > 0 else nan
        purity, purity_topk = nan, nan
        if anchor_clips is not None and labels is not None and len(labels) and selected.any():
            kinds = neighbour_kinds(anchor_clips, slots, queue_clips, labels)
            purity = neighbour_purity(kinds, selected)
            same_size = torch.zeros_like(selected)
            same_size[:, :max(1, int(torch.round(mean)))] = True
            purity_topk = neighbour_purity(kinds, same_size)
        stats[f"dna_purity_{m}"], stats[f"dna_purity_topk_{m}"] = purity, purity_topk
    return stats


@torch.no_grad()
def own_key_share(anchor_clips: Tensor, queue_clips: Tensor) -> Tensor:
    """Fraction of anchors ``(N,)`` whose own older key still sits in the queue ``(K,)``."""
    return (queue_clips.unsqueeze(0) == anchor_clips.to(queue_clips.device).unsqueeze(1)).any(1).float().mean()


def step_stats(emb: Embeddings, queues: BranchEmbeddings, dna_selections: Mapping[str, Selection],
               anchor_clips: Tensor | None, queue_clips: Tensor, labels: Tensor | None) -> dict[str, Tensor]:
    """Everything the training log records besides the loss terms (detached scalars), read
    before the step's keys enter the queue."""
    stats = contrast_stats(emb, queues)
    stats.update(dna_stats(dna_selections, anchor_clips, queue_clips, labels))
    if anchor_clips is not None:
        stats["own_key_share"] = own_key_share(anchor_clips, queue_clips)
    return stats


@torch.no_grad()
def neighbor_distributions(model: MoCo, view_q: Tensor, view_k: Tensor, teacher: str, student: str,
                           topk: int | None = None, teacher_branch: str = "instance",
                           student_branch: str = "instance") -> dict[str, Tensor]:
    """The teacher's and the student's neighbour distributions for one batch (for plots).

    CMD: two modalities of the instance branch. IMD: one modality, two branches
    (``teacher_branch="instance", student_branch="cluster"`` or the reverse). Uses
    :meth:`MoCo.embed`, so nothing in the model changes.

    Args:
        view_q, view_k: joint views ``(N, C, T, V, M)``; the student sees ``view_q``,
            the teacher ``view_k``.
        teacher, student: modalities, e.g. ``"joint"`` and ``"motion"``.
        topk: neighbours kept (default ``cmd_topk``, at most the queue size).

    Returns:
        ``p_teacher`` and ``p_student`` ``(N, K')`` probabilities over the teacher's
        nearest queue slots (nearest first), ``index`` ``(N, K')`` those slots, and
        ``kl`` ``(N,)`` the per-clip ``KL(P_T || P_S)``.
    """
    p = model.pcfg
    key = model.embed(view_k, teacher, side="key", branch=teacher_branch)
    query = model.embed(view_q, student, side="query", branch=student_branch)
    p_teacher, log_p_student, index = neighbor_distribution_pair(
        key, model.queues(teacher_branch)[teacher], query, model.queues(student_branch)[student],
        min(topk or p.cmd_topk, p.queue_size), p.cmd_tau_teacher, p.cmd_tau_student)
    kl = (p_teacher * (p_teacher.clamp_min(1e-30).log() - log_p_student)).sum(1)
    return {"p_teacher": p_teacher, "p_student": log_p_student.exp(), "index": index, "kl": kl}


def effective_neighbours(prob: Tensor) -> Tensor:
    """``exp(entropy)`` of each row of probabilities ``(N, K')``: how many neighbours carry the mass."""
    return torch.exp(-(prob * prob.clamp_min(1e-30).log()).sum(1))


@torch.no_grad()
def neighbourhood_quality(model: MoCo, view_k: Tensor, anchor_clips: Tensor, labels: Tensor,
                          topk: int | None = None) -> list[dict[str, float]]:
    """Same-class share of each modality's key neighbours in the instance queue.

    For each modality: the share of same-class clips at the nearest neighbour and among
    the 10 nearest (the anchor's own older keys left out), the mass the CMD teacher
    (``softmax(sim / cmd_tau_teacher)`` over its ``topk``) puts on them, and its flatness
    (effective neighbours / ``topk``).

    Args:
        view_k: key views ``(N, C, T, V, M)`` of the anchors ``anchor_clips (N,)``.
        labels: ``(num_clips,)`` the training labels.
    """
    p, clips = model.pcfg, model.queue_clips()
    own = clips.unsqueeze(0) == anchor_clips.unsqueeze(1)                             # (N, K)
    rows = []
    for m in model.modalities:
        sim = (model.embed(view_k, m, side="key") @ model.queues()[m].T).masked_fill(own, -2.0)
        top, index = sim.topk(min(topk or p.cmd_topk, sim.shape[1] - 1), dim=1)
        same = (neighbour_kinds(anchor_clips, index, clips, labels) == SAME_CLASS).float()   # (N, topk)
        teacher = torch.softmax(top / p.cmd_tau_teacher, dim=1)
        rows.append({"modality": m, "nearest neighbour": same[:, 0].mean().item(),
                     "10 nearest": same[:, :10].mean().item(),
                     "teacher mass": (teacher * same).sum(1).mean().item(),
                     "teacher flatness": (effective_neighbours(teacher) / top.shape[1]).mean().item()})
    return rows


#: A stream failed to learn when its InfoNCE gain is under this share of the median gain of the
#: same stream of the same method over seeds. Chosen on the book profile's main suite, seeds
#: 0-17: the seven runs whose motion stream ends more than 10 linear-probe points under its
#: method's median have shares 0.50-0.72, every other stream of every run 0.79 or more.
FAILED_STREAM_SHARE = 0.75


def infonce_gains(nce: Mapping[str, float], queue_size: int) -> dict[str, float]:
    """Nats each stream learned: ``ln(K + 1) - nce`` for the instance InfoNCE ``nce[stream]`` over
    the last pretraining epoch (``nce_<stream>`` of ``experiments.last_epoch_means``) and ``K =
    queue_size`` negatives; ``ln(K + 1)`` is the loss of an encoder that has learned nothing.
    Streams with a NaN loss are left out. Gains are comparable between runs of one method and
    stream, not between streams (motion is easier to tell apart than joint on some data)."""
    chance = float(np.log(queue_size + 1))
    return {stream: chance - float(value) for stream, value in nce.items() if value == value}


def gain_shares(gains: Mapping[tuple[Any, str], float]) -> dict[tuple[Any, str], float]:
    """``gains[(run, stream)]`` of one method's runs -> each gain as a share of the median gain of
    that stream over the runs (NaN where the median is not positive)."""
    by_stream: dict[str, list[float]] = {}
    for (_, stream), gain in gains.items():
        by_stream.setdefault(stream, []).append(gain)
    medians = {s: float(np.median(v)) for s, v in by_stream.items()}
    return {key: gain / medians[key[1]] if medians[key[1]] > 0 else float("nan") for key, gain in gains.items()}


def failed_streams(gains: Mapping[tuple[Any, str], float], share: float = FAILED_STREAM_SHARE
                   ) -> dict[tuple[Any, str], float]:
    """The failed-stream detector: ``gains[(run, stream)]`` of one method's runs ->
    ``{(run, stream): share}`` for the streams whose gain is under ``share`` of the median gain of
    that stream over the runs (:func:`gain_shares`). Needs no labels; with fewer than 3 runs of a
    stream the median says too little, and nothing is returned for it."""
    runs = Counter(stream for _, stream in gains)
    return {key: ratio for key, ratio in gain_shares(gains).items() if runs[key[1]] >= 3 and ratio < share}
