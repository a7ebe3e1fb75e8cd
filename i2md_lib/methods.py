"""The pretraining methods: each one's loss, composed from the pure losses.

A method sees one step's embeddings (:class:`~i2md_lib.models.moco.Embeddings`,
queries with gradient and keys) and the queues as they were before the step's keys
were added, and returns its loss terms. Embeddings and queues are nested dicts
``branch -> modality -> (N, D)`` / ``(K, D)``; the branches are ``instance`` and,
for ``i2md``, ``cluster``.

=============  ==================================================================
method         loss
=============  ==================================================================
``moco``       InfoNCE of one stream (``PretrainConfig.modality``)
``moco3``      the sum of three independent streams' InfoNCE
``posmining``  ``moco3`` whose InfoNCE takes the other streams' nearest queue
               neighbours as extra positives (from ``posmining_start_epoch``)
``cmd``        ``moco3`` + ``cmd_weight`` x cross-modal mutual distillation
``i2md``       ``cmd`` + per modality ``cluster_weight`` x DNA's cluster-level
               InfoNCE + ``imd_weight`` x intra-modal mutual distillation
=============  ==================================================================

Setting a weight to 0 removes that term (the ablations do). DNA and IMD are our
design (only I²MD's abstract is public): see :mod:`i2md_lib.dna` and :mod:`i2md_lib.imd`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from torch import Tensor

from . import dna, imd, losses
from .config import METHODS, PretrainConfig
from .models.moco import BranchEmbeddings, Embeddings


@dataclass
class MethodLoss:
    """Loss terms of one step: every named term, their weighted sum ``total`` and, for
    ``i2md``, DNA's neighbour selection per modality (for the diagnostics)."""

    terms: dict[str, Tensor]
    dna_selections: dict[str, dna.Selection] = field(default_factory=dict)
    #: CMD's teachers (modality -> :func:`~i2md_lib.losses.cmd.teacher_neighbors`), for IMD to reuse.
    teachers: dict[str, losses.TeacherNeighbors] = field(default_factory=dict)

    @property
    def total(self) -> Tensor:
        return self.terms["total"]


def moco(p: PretrainConfig, emb: Embeddings, queues: BranchEmbeddings, epoch: int) -> MethodLoss:
    """MoCo v2: InfoNCE of each stream's query against its key and queue; the sum over streams."""
    queries, keys, queue = emb.queries["instance"], emb.keys["instance"], queues["instance"]
    terms = {f"nce_{m}": losses.infonce(queries[m], keys[m], queue[m], p.temperature) for m in queries}
    terms["total"] = sum(terms.values())
    return MethodLoss(terms)


def moco3(p: PretrainConfig, emb: Embeddings, queues: BranchEmbeddings, epoch: int) -> MethodLoss:
    """Three independent MoCo streams (joint, motion, bone): :func:`moco` over all three."""
    return moco(p, emb, queues, epoch)


def posmining(p: PretrainConfig, emb: Embeddings, queues: BranchEmbeddings, epoch: int) -> MethodLoss:
    """``moco3``, and from ``posmining_start_epoch`` each stream's InfoNCE also takes the other
    streams' ``posmining_topk`` nearest queue slots as positives (CrosSCLR-style)."""
    if epoch < p.posmining_start_epoch:
        return moco3(p, emb, queues, epoch)
    queries, keys, queue = emb.queries["instance"], emb.keys["instance"], queues["instance"]
    terms = {}
    for m in queries:
        others = [o for o in queries if o != m]
        terms[f"nce_{m}"] = losses.positive_mining_infonce(
            queries[m], keys[m], queue[m], [keys[o] for o in others], [queue[o] for o in others],
            p.posmining_topk, p.temperature)
    terms["total"] = sum(terms.values())
    return MethodLoss(terms)


def cmd(p: PretrainConfig, emb: Embeddings, queues: BranchEmbeddings, epoch: int) -> MethodLoss:
    """CMD: ``moco3`` + ``cmd_weight`` x the six teacher -> student neighbour distillations."""
    out = moco3(p, emb, queues, epoch)
    keys, queue = emb.keys["instance"], queues["instance"]
    out.teachers = losses.all_teacher_neighbors(keys, queue, p.cmd_topk, p.cmd_tau_teacher)
    distill, pairs = losses.cmd_loss(keys, emb.queries["instance"], queue, p.cmd_topk, p.cmd_tau_teacher,
                                     p.cmd_tau_student, teachers=out.teachers)
    total = out.terms.pop("total")
    out.terms.update({"cmd_" + pair.replace("->", "_"): value for pair, value in pairs.items()})
    out.terms["cmd"] = distill
    out.terms["total"] = total + p.cmd_weight * distill
    return out


def i2md(p: PretrainConfig, emb: Embeddings, queues: BranchEmbeddings, epoch: int) -> MethodLoss:
    """I²MD (our design): CMD (unless ``cmd_weight`` is 0), and per modality DNA's cluster-level
    InfoNCE and IMD between the instance and cluster branches.

    ``dna_<m>`` is plain instance contrast in the cluster branch during the
    ``dna_warmup_epochs`` (no neighbours); ``imd_<m>`` is both directions of
    :func:`i2md_lib.imd.imd_loss` over the teacher's ``imd_topk`` queue neighbours.
    """
    out = cmd(p, emb, queues, epoch) if p.cmd_weight else moco3(p, emb, queues, epoch)
    q, c_q = emb.queries["instance"], emb.queries["cluster"]
    k, c_k = emb.keys["instance"], emb.keys["cluster"]
    queue, c_queue = queues["instance"], queues["cluster"]
    max_neighbors = p.dna_max_neighbors if epoch >= p.dna_warmup_epochs else 0
    topk = min(p.imd_topk, p.queue_size)
    total, terms = out.terms.pop("total"), out.terms
    for m in q:
        rank_space = (k[m], queue[m]) if p.dna_space == "instance" else (None, None)
        terms[f"dna_{m}"], out.dna_selections[m] = dna.dna_loss(
            c_q[m], c_k[m], c_queue[m], max_neighbors, p.dna_threshold, p.dna_margin, p.dna_tau,
            p.temperature, *rank_space, gate=p.dna_gate, zscore=p.dna_zscore)
        if p.imd_weight:     # CMD's teacher of m is IMD's instance teacher when it keeps as many
            shared = out.teachers.get(m) if topk == p.cmd_topk else None
            terms[f"imd_{m}"] = imd.imd_loss(q[m], k[m], queue[m], c_q[m], c_k[m], c_queue[m], topk,
                                            p.cmd_tau_teacher, p.cmd_tau_student, instance_teacher=shared)
    terms["dna"] = sum(terms[f"dna_{m}"] for m in q)
    terms["imd"] = sum(terms[f"imd_{m}"] for m in q) if p.imd_weight else terms["dna"].new_zeros(())
    terms["total"] = total + p.cluster_weight * terms["dna"] + p.imd_weight * terms["imd"]
    return out


#: method name -> its loss (``PretrainConfig.method``).
METHOD_LOSSES: dict[str, Callable[[PretrainConfig, Embeddings, BranchEmbeddings, int], MethodLoss]] = {
    "moco": moco, "moco3": moco3, "posmining": posmining, "cmd": cmd, "i2md": i2md}
assert tuple(METHOD_LOSSES) == METHODS, "every method of config.METHODS needs a loss here"


def method_loss(p: PretrainConfig, emb: Embeddings, queues: BranchEmbeddings, epoch: int) -> MethodLoss:
    """The loss of ``p.method`` for one step (the training loop's entry point)."""
    if p.method not in METHOD_LOSSES:
        raise ValueError(f"unknown pretraining method {p.method!r}; choose one of {', '.join(METHODS)}")
    return METHOD_LOSSES[p.method](p, emb, queues, epoch)
