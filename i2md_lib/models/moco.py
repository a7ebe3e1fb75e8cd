"""MoCo with one stream per modality, and the methods built on it.

:class:`MoCo` follows the shape of facebookresearch/moco's ``builder.py`` (query
encoder, momentum key encoder, queue) without its multi-GPU parts: there is no
``torch.distributed`` and no ``.cuda()``; tensors follow the inputs' device.

One *stream* per modality (joint, motion, bone) holds a query encoder + projection
head, a momentum copy of both, and a queue ``(K, D)``. All queues share one pointer
and are filled with the same batch, so slot ``i`` holds the same clip in every
modality -- CMD's distillation relies on this.

The methods (``PretrainConfig.method``) differ only in which streams exist and in
:meth:`MoCo.loss_terms`:

* ``moco``      -- one stream (``PretrainConfig.modality``), InfoNCE.
* ``moco3``     -- three independent streams, the sum of their InfoNCE losses.
* ``posmining`` -- ``moco3``, and from ``posmining_start_epoch`` each stream's
  InfoNCE takes the other streams' nearest queue neighbours as extra positives
  (CrosSCLR-style).
* ``cmd``       -- ``moco3`` + ``cmd_weight`` x CMD's cross-modal distillation.

Room for I²MD: its cluster-level branch would add, per modality, a second head and
queue next to ``head_q``/``queue_<m>`` and its terms (cluster InfoNCE, intra-modal
distillation) in :meth:`MoCo.loss_terms`, behind ``method == "i2md"``.

The CMD chapter of the book walks through this file;
``shared/reference/method-cmd-i2md.md`` section 1 describes the reference.
"""
from __future__ import annotations

import copy
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import losses
from ..config import EncoderConfig, ExperimentConfig, PretrainConfig
from ..data.modalities import MODALITIES, to_modality
from .encoders import ProjectionHead, build_encoder

METHODS: tuple[str, ...] = ("moco", "moco3", "posmining", "cmd")


def method_modalities(pcfg: PretrainConfig) -> tuple[str, ...]:
    """The modalities a method trains: one for ``moco``, all three otherwise."""
    if pcfg.method not in METHODS:
        raise ValueError(f"unknown pretraining method {pcfg.method!r}; choose one of {', '.join(METHODS)}")
    if pcfg.method == "moco":
        if pcfg.modality not in MODALITIES:
            raise ValueError(f"unknown modality {pcfg.modality!r}; choose one of {', '.join(MODALITIES)}")
        return (pcfg.modality,)
    return MODALITIES


class MoCo(nn.Module):
    """Momentum contrast over one or three skeleton modalities.

    Attributes:
        encoder_q, head_q: modality -> query encoder / projection head (trained by SGD).
        encoder_k, head_k: modality -> momentum copies (EMA of the query parameters).
        queue_<modality>: buffers ``(K, D)`` of L2-normalised keys.
        queue_ptr: buffer ``()`` long, the next slot to write (shared by all queues).
        last_stats: detached per-step diagnostics of the last forward (for logging).
    """

    def __init__(self, pcfg: PretrainConfig, enc_cfg: EncoderConfig) -> None:
        super().__init__()
        self.pcfg, self.enc_cfg = pcfg, enc_cfg
        self.modalities = method_modalities(pcfg)
        self.encoder_q = nn.ModuleDict({m: build_encoder(enc_cfg) for m in self.modalities})
        self.head_q = nn.ModuleDict({m: ProjectionHead.from_config(enc_cfg) for m in self.modalities})
        # key encoders start as exact copies and are never touched by the optimiser
        self.encoder_k = copy.deepcopy(self.encoder_q)
        self.head_k = copy.deepcopy(self.head_q)
        for param in self.key_parameters():
            param.requires_grad = False
        for m in self.modalities:
            queue = F.normalize(torch.randn(pcfg.queue_size, enc_cfg.out_dim), dim=1)  # (K, D)
            self.register_buffer(f"queue_{m}", queue)
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.last_stats: dict[str, Tensor] = {}

    # -- pieces ---------------------------------------------------------------
    def queues(self) -> dict[str, Tensor]:
        """modality -> its queue ``(K, D)`` (the buffers themselves, not copies)."""
        return {m: getattr(self, f"queue_{m}") for m in self.modalities}

    def key_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the momentum encoders and heads, in the order of the query ones."""
        yield from self.encoder_k.parameters()
        yield from self.head_k.parameters()

    def embed_query(self, x: Tensor, modality: str) -> Tensor:
        """Joint clips ``x (N, C, T, V, M)`` -> L2-normalised queries ``(N, D)`` of ``modality``."""
        z = self.head_q[modality](self.encoder_q[modality](to_modality(x, modality)))
        return F.normalize(z.float(), dim=1)

    @torch.no_grad()
    def embed_key(self, x: Tensor, modality: str) -> Tensor:
        """Joint clips ``x (N, C, T, V, M)`` -> L2-normalised keys ``(N, D)`` (momentum encoder)."""
        z = self.head_k[modality](self.encoder_k[modality](to_modality(x, modality)))
        return F.normalize(z.float(), dim=1)

    @torch.no_grad()
    def momentum_update(self) -> None:
        """``key <- m * key + (1 - m) * query`` over parameters only (BN buffers are not copied)."""
        m = self.pcfg.momentum
        query_params = [*self.encoder_q.parameters(), *self.head_q.parameters()]
        for param_k, param_q in zip(self.key_parameters(), query_params):
            param_k.mul_(m).add_(param_q.detach(), alpha=1.0 - m)

    @torch.no_grad()
    def enqueue(self, keys: dict[str, Tensor]) -> None:
        """Write the batch's keys ``(N, D)`` at the shared pointer, wrapping around the end."""
        n, size = len(next(iter(keys.values()))), self.pcfg.queue_size
        if n > size:
            raise ValueError(f"batch of {n} keys does not fit a queue of size {size}")
        ptr = int(self.queue_ptr)
        slots = (ptr + torch.arange(n, device=self.queue_ptr.device)) % size   # (N,)
        for m, queue in self.queues().items():
            queue[slots] = keys[m].to(queue.dtype)
        self.queue_ptr.fill_((ptr + n) % size)

    # -- the method -------------------------------------------------------------
    def forward(self, view_q: Tensor, view_k: Tensor, epoch: int = 0) -> dict[str, Tensor]:
        """One MoCo step on two augmented joint views, each ``(N, C, T, V, M)``.

        Motion and bone are derived inside from each view, so the three modalities of
        a view share its augmentation. Updates the key encoders and the queues.

        Returns:
            Loss terms (scalars): ``nce_<modality>``, for ``cmd`` also
            ``cmd_<teacher>_<student>`` and ``cmd``, and ``total`` (the one to minimise).
        """
        queries = {m: self.embed_query(view_q, m) for m in self.modalities}   # each (N, D)
        self.momentum_update()
        keys = {m: self.embed_key(view_k, m) for m in self.modalities}        # each (N, D)
        queues = {m: queue.clone() for m, queue in self.queues().items()}  # enqueue edits in place
        with torch.autocast(view_q.device.type, enabled=False):  # losses in float32
            terms = self.loss_terms(queries, keys, queues, epoch)
            self.last_stats = contrast_stats(queries, keys, queues)
        self.enqueue(keys)   # after the losses: the queue never holds this batch's keys
        return terms

    def loss_terms(self, queries: dict[str, Tensor], keys: dict[str, Tensor],
                   queues: dict[str, Tensor], epoch: int) -> dict[str, Tensor]:
        """All loss terms of the method, and their weighted sum under ``"total"``.

        A new method (e.g. I²MD's cluster branch) adds its terms here.
        """
        p, terms = self.pcfg, {}
        mining = p.method == "posmining" and epoch >= p.posmining_start_epoch
        for m in self.modalities:
            if mining:
                others = [o for o in self.modalities if o != m]
                terms[f"nce_{m}"] = losses.positive_mining_infonce(
                    queries[m], keys[m], queues[m], [keys[o] for o in others],
                    [queues[o] for o in others], p.posmining_topk, p.temperature)
            else:
                terms[f"nce_{m}"] = losses.infonce(queries[m], keys[m], queues[m], p.temperature)
        total = sum(terms.values())
        if p.method == "cmd":
            cmd_total, pairs = losses.cmd_loss(keys, queries, queues, p.cmd_topk,
                                               p.cmd_tau_teacher, p.cmd_tau_student)
            terms.update({"cmd_" + pair.replace("->", "_"): v for pair, v in pairs.items()})
            terms["cmd"] = cmd_total
            total = total + p.cmd_weight * cmd_total
        terms["total"] = total
        return terms


def contrast_stats(queries: dict[str, Tensor], keys: dict[str, Tensor],
                   queues: dict[str, Tensor]) -> dict[str, Tensor]:
    """Cheap per-step diagnostics per modality (detached scalars).

    ``pos_sim_<m>``: mean cosine ``q.k``; ``neg_sim_<m>``: mean cosine ``q.queue``;
    ``acc_<m>``: fraction of clips whose key beats every queue entry (instance
    discrimination accuracy).
    """
    stats = {}
    with torch.no_grad():
        for m, q in queries.items():
            positive = (q * keys[m]).sum(1)        # (N,)
            negatives = q @ queues[m].T            # (N, K)
            stats[f"pos_sim_{m}"] = positive.mean()
            stats[f"neg_sim_{m}"] = negatives.mean()
            stats[f"acc_{m}"] = (positive > negatives.max(1).values).float().mean()
    return stats


def build_model(cfg: ExperimentConfig) -> MoCo:
    """The pretraining model of ``cfg.pretrain.method`` (on the CPU)."""
    return MoCo(cfg.pretrain, cfg.encoder)


def encoders_for_eval(model: MoCo) -> dict[str, nn.Module]:
    """modality -> query encoder (without its projection head), what downstream tasks use."""
    return {m: model.encoder_q[m] for m in model.modalities}


@torch.no_grad()
def neighbor_distributions(model: MoCo, view_q: Tensor, view_k: Tensor, teacher: str, student: str,
                           topk: int | None = None) -> dict[str, Any]:
    """CMD's teacher and student neighbour distributions for one batch (for plots).

    Runs the model in eval mode (BatchNorm uses running statistics) and changes
    nothing: no momentum update, no enqueue.

    Args:
        view_q, view_k: joint views ``(N, C, T, V, M)``; the student sees ``view_q``,
            the teacher ``view_k``.
        teacher, student: modalities, e.g. ``"joint"`` and ``"motion"``.
        topk: neighbours kept (default ``cfg.pretrain.cmd_topk``).

    Returns:
        ``p_teacher`` and ``p_student`` ``(N, K')`` probabilities over the teacher's
        nearest queue slots (nearest first), ``index`` ``(N, K')`` those slots, and
        ``kl`` ``(N,)`` the per-clip ``KL(P_T || P_S)``.
    """
    p = model.pcfg
    was_training = model.training
    model.eval()
    try:
        key = model.embed_key(view_k, teacher)
        query = model.embed_query(view_q, student)
        queues = model.queues()
        p_teacher, log_p_student, index = losses.neighbor_distribution_pair(
            key, queues[teacher], query, queues[student], topk or p.cmd_topk,
            p.cmd_tau_teacher, p.cmd_tau_student)
    finally:
        model.train(was_training)
    kl = (p_teacher * (p_teacher.clamp_min(1e-30).log() - log_p_student)).sum(1)
    return {"p_teacher": p_teacher, "p_student": log_p_student.exp(), "index": index, "kl": kl}
