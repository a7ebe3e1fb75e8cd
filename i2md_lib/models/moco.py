"""MoCo with one stream per modality, and the methods built on it.

:class:`MoCo` follows the shape of facebookresearch/moco's ``builder.py`` (query
encoder, momentum key encoder, queue); tensors follow the inputs' device. Its
multi-GPU parts live in :mod:`i2md_lib.distributed`: the model only calls its
``exchange`` (a :class:`~i2md_lib.distributed.BatchExchange`) to gather the keys of
all processes before they enter the queues and, for MoCo's shuffle BN, to shuffle
the key batch. In one process the exchange does nothing.

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
* ``i2md``      -- ``cmd`` + a cluster-level branch per modality (a second head,
  its momentum copy and its own queue on the shared encoder) trained with Dynamic
  Neighbours Aggregation (:mod:`i2md_lib.dna`, weight ``cluster_weight``) and
  intra-modal mutual distillation between the instance and cluster branches
  (weight ``imd_weight``). Setting a weight to 0 removes that term (ablations).

The CMD chapter of the book walks through this file;
``shared/reference/method-cmd-i2md.md`` section 1 describes the reference.
"""
from __future__ import annotations

import copy
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import dna, losses
from ..config import EncoderConfig, ExperimentConfig, PretrainConfig
from ..data.modalities import MODALITIES, to_modality
from ..distributed import BatchExchange
from .encoders import ProjectionHead, build_encoder

METHODS: tuple[str, ...] = ("moco", "moco3", "posmining", "cmd", "i2md")


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
        cluster_head_q, cluster_head_k: (``i2md`` only) the cluster-level branch heads.
        queue_<modality>: buffers ``(K, D)`` of L2-normalised keys.
        cluster_queue_<modality>: (``i2md`` only) the cluster branch's queues ``(K, D)``.
        queue_ptr: buffer ``()`` long, the next slot to write (shared by all queues).
        queue_index: buffer ``(K,)`` long, the dataset index of the clip in each slot
            (-1 while empty); used only for diagnostics.
        last_stats: detached per-step diagnostics of the last forward (for logging).
        exchange: how keys are shared with other processes (set by
            :func:`i2md_lib.distributed.prepare_model`; a no-op in one process).
    """

    def __init__(self, pcfg: PretrainConfig, enc_cfg: EncoderConfig) -> None:
        super().__init__()
        self.pcfg, self.enc_cfg = pcfg, enc_cfg
        self.modalities = method_modalities(pcfg)
        self.encoder_q = nn.ModuleDict({m: build_encoder(enc_cfg) for m in self.modalities})
        self.head_q = nn.ModuleDict({m: ProjectionHead.from_config(enc_cfg) for m in self.modalities})
        # key encoders start as exact copies and are never touched by the optimiser
        self.has_cluster_branch = pcfg.method == "i2md"
        if self.has_cluster_branch:
            self.cluster_head_q = nn.ModuleDict(
                {m: ProjectionHead.from_config(enc_cfg) for m in self.modalities})
        self.encoder_k = copy.deepcopy(self.encoder_q)
        self.head_k = copy.deepcopy(self.head_q)
        if self.has_cluster_branch:
            self.cluster_head_k = copy.deepcopy(self.cluster_head_q)
        for param in self.key_parameters():
            param.requires_grad = False
        for name in self.queue_names():
            queue = F.normalize(torch.randn(pcfg.queue_size, enc_cfg.out_dim), dim=1)  # (K, D)
            self.register_buffer(name, queue)
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("queue_index", torch.full((pcfg.queue_size,), -1, dtype=torch.long))
        # labels of the training clips, for diagnostics only (never used by a loss)
        self.register_buffer("label_lookup", torch.empty(0, dtype=torch.long), persistent=False)
        self.last_stats: dict[str, Tensor] = {}
        self.exchange = BatchExchange()

    # -- pieces ---------------------------------------------------------------
    def queue_names(self) -> list[str]:
        """Buffer names of all queues: ``queue_<m>`` and, for ``i2md``, ``cluster_queue_<m>``."""
        names = [f"queue_{m}" for m in self.modalities]
        if self.has_cluster_branch:
            names += [f"cluster_queue_{m}" for m in self.modalities]
        return names

    def queues(self, branch: str = "instance") -> dict[str, Tensor]:
        """modality -> queue ``(K, D)`` of ``branch`` ("instance" or "cluster"); the buffers, not copies."""
        prefix = {"instance": "queue_", "cluster": "cluster_queue_"}[branch]
        return {m: getattr(self, prefix + m) for m in self.modalities}

    def query_modules(self) -> list[nn.Module]:
        """The modules trained by SGD, in the order :meth:`key_modules` mirrors."""
        return [self.encoder_q, self.head_q] + ([self.cluster_head_q] if self.has_cluster_branch else [])

    def key_modules(self) -> list[nn.Module]:
        """The momentum copies of :meth:`query_modules`."""
        return [self.encoder_k, self.head_k] + ([self.cluster_head_k] if self.has_cluster_branch else [])

    def key_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the momentum encoders and heads, in the order of the query ones."""
        for module in self.key_modules():
            yield from module.parameters()

    def set_label_lookup(self, labels: Tensor) -> None:
        """Give the model the training labels ``(num_clips,)`` so that it can log how
        often DNA's neighbours share the anchor's class. Diagnostics only."""
        self.label_lookup = torch.as_tensor(labels, dtype=torch.long, device=self.queue_ptr.device)

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
        query_params = [p for module in self.query_modules() for p in module.parameters()]
        for param_k, param_q in zip(self.key_parameters(), query_params):
            param_k.mul_(m).add_(param_q.detach(), alpha=1.0 - m)

    @torch.no_grad()
    def enqueue(self, keys: dict[str, Tensor], cluster_keys: dict[str, Tensor] | None = None,
                index: Tensor | None = None) -> None:
        """Write the batch's keys ``(N, D)`` at the shared pointer, wrapping around the end.

        ``cluster_keys`` fill the cluster queues (``i2md``); ``index`` ``(N,)`` records
        which clips now sit in the written slots.
        """
        n, size = len(next(iter(keys.values()))), self.pcfg.queue_size
        if n > size:
            raise ValueError(f"batch of {n} keys does not fit a queue of size {size}")
        ptr = int(self.queue_ptr)
        slots = (ptr + torch.arange(n, device=self.queue_ptr.device)) % size   # (N,)
        for m, queue in self.queues().items():
            queue[slots] = keys[m].to(queue.dtype)
        if self.has_cluster_branch:
            for m, queue in self.queues("cluster").items():
                queue[slots] = cluster_keys[m].to(queue.dtype)
        self.queue_index[slots] = -1 if index is None else index.to(self.queue_index.device)
        self.queue_ptr.fill_((ptr + n) % size)

    # -- the method -------------------------------------------------------------
    def forward(self, view_q: Tensor, view_k: Tensor, epoch: int = 0,
                index: Tensor | None = None) -> dict[str, Tensor]:
        """One MoCo step on two augmented joint views, each ``(N, C, T, V, M)``.

        Motion and bone are derived inside from each view, so the three modalities of
        a view share its augmentation. Updates the key encoders and the queues.
        ``index`` ``(N,)`` (the clips' dataset indices) is used only for diagnostics.

        Returns:
            Loss terms (scalars): ``nce_<modality>``, for ``cmd`` also
            ``cmd_<teacher>_<student>`` and ``cmd``, for ``i2md`` also ``dna_<m>``,
            ``imd_<m>``, ``dna`` and ``imd``; and ``total`` (the one to minimise).
        """
        branches = self.branch_embeddings(view_q, view_k)
        queries, keys = branches["instance"]
        queues = {m: queue.clone() for m, queue in self.queues().items()}  # enqueue edits in place
        cluster = None
        if self.has_cluster_branch:
            cluster_queues = {m: q.clone() for m, q in self.queues("cluster").items()}
            cluster = (*branches["cluster"], cluster_queues)
        with torch.autocast(view_q.device.type, enabled=False):  # losses in float32
            terms = self.loss_terms(queries, keys, queues, epoch, cluster)
            self.last_stats = contrast_stats(queries, keys, queues)
            self.last_stats.update(self.cluster_stats(index, queues))
        # after the losses: the queue never holds this batch's keys; with several processes
        # the keys of every rank's clips, in global batch order, so all queues stay equal
        gather = self.exchange.gather
        self.enqueue({m: gather(k) for m, k in keys.items()},
                     {m: gather(k) for m, k in branches["cluster"][1].items()} if cluster else None,
                     None if index is None else gather(index.to(self.queue_index.device)))
        return terms

    def branch_embeddings(self, view_q: Tensor, view_k: Tensor) -> dict[str, tuple[dict, dict]]:
        """``{"instance": (queries, keys)}`` (+ ``"cluster"`` for ``i2md``), each modality -> ``(N, D)``.

        Each modality's encoder runs once per view; both heads share its feature.
        Also performs the momentum update, between the query and the key passes.
        """
        feats_q = {m: self.encoder_q[m](to_modality(view_q, m)) for m in self.modalities}  # (N, F)
        out = {"instance": ({m: _unit(self.head_q[m](f)) for m, f in feats_q.items()}, {})}
        if self.has_cluster_branch:
            out["cluster"] = ({m: _unit(self.cluster_head_q[m](f)) for m, f in feats_q.items()}, {})
        self.momentum_update()
        view_k, unshuffle = self.exchange.shuffle(view_k)   # shuffle BN across processes (else as is)
        with torch.no_grad():
            for m in self.modalities:
                feat_k = self.encoder_k[m](to_modality(view_k, m))                         # (N, F)
                out["instance"][1][m] = unshuffle(_unit(self.head_k[m](feat_k)))
                if self.has_cluster_branch:
                    out["cluster"][1][m] = unshuffle(_unit(self.cluster_head_k[m](feat_k)))
        return out

    def loss_terms(self, queries: dict[str, Tensor], keys: dict[str, Tensor],
                   queues: dict[str, Tensor], epoch: int,
                   cluster: tuple[dict, dict, dict] | None = None) -> dict[str, Tensor]:
        """All loss terms of the method, and their weighted sum under ``"total"``.

        ``cluster`` = (queries, keys, queues) of the cluster-level branch (``i2md``).
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
        if p.method == "cmd" or (p.method == "i2md" and p.cmd_weight):
            cmd_total, pairs = losses.cmd_loss(keys, queries, queues, p.cmd_topk,
                                               p.cmd_tau_teacher, p.cmd_tau_student)
            terms.update({"cmd_" + pair.replace("->", "_"): v for pair, v in pairs.items()})
            terms["cmd"] = cmd_total
            total = total + p.cmd_weight * cmd_total
        if p.method == "i2md":
            i2md_terms = self.i2md_terms(queries, keys, queues, *cluster, epoch)
            terms.update(i2md_terms)
            total = total + p.cluster_weight * i2md_terms["dna"] + p.imd_weight * i2md_terms["imd"]
        terms["total"] = total
        return terms

    def i2md_terms(self, queries: dict, keys: dict, queues: dict, c_queries: dict, c_keys: dict,
                   c_queues: dict, epoch: int) -> dict[str, Tensor]:
        """I²MD's intra-modal terms per modality (our design, see :mod:`i2md_lib.dna`).

        ``dna_<m>``: cluster-level InfoNCE with DNA positives (plain instance contrast in
        the cluster branch during the ``dna_warmup_epochs``). ``imd_<m>``: mutual
        distillation between the branches, instance -> cluster plus cluster -> instance,
        each CMD's ``KL(P_T || P_S)`` over the teacher's ``imd_topk`` queue neighbours.
        """
        p, terms, self._dna_selection = self.pcfg, {}, {}
        k = p.dna_max_neighbors if epoch >= p.dna_warmup_epochs else 0
        topk = min(p.imd_topk, p.queue_size)
        for m in self.modalities:
            rank_key, rank_queue = ((c_keys[m], c_queues[m]) if p.dna_space == "cluster"
                                    else (keys[m], queues[m]))
            index, similarity, selected = dna.select_neighbors(rank_key, rank_queue, k,
                                                               p.dna_threshold, p.dna_margin)
            if p.dna_space != "cluster":   # similarities of the chosen slots in the cluster space
                similarity = (c_keys[m].unsqueeze(1) * c_queues[m][index]).sum(2)
            positive = dna.aggregate_neighbors(c_keys[m], c_queues[m], index, similarity, selected, p.dna_tau)
            terms[f"dna_{m}"] = dna.cluster_infonce(c_queries[m], positive, c_queues[m], index, selected,
                                                    p.temperature)
            self._dna_selection[m] = (index, selected)
            if p.imd_weight:
                terms[f"imd_{m}"] = (
                    losses.neighbor_distillation(keys[m], queues[m], c_queries[m], c_queues[m], topk,
                                                 p.cmd_tau_teacher, p.cmd_tau_student)
                    + losses.neighbor_distillation(c_keys[m], c_queues[m], queries[m], queues[m], topk,
                                                   p.cmd_tau_teacher, p.cmd_tau_student))
        terms["dna"] = sum(terms[f"dna_{m}"] for m in self.modalities)
        terms["imd"] = (sum(terms[f"imd_{m}"] for m in self.modalities) if p.imd_weight
                        else terms["dna"].new_zeros(()))
        return terms

    @torch.no_grad()
    def cluster_stats(self, index: Tensor | None, queues: dict[str, Tensor]) -> dict[str, Tensor]:
        """DNA diagnostics of the last step (``i2md`` only), per modality.

        ``dna_neighbors_<m>``: mean number of neighbours kept per anchor;
        ``dna_purity_<m>``: fraction of kept neighbours whose clip has the anchor's class,
        not counting the anchor's own key from an earlier epoch (needs
        :meth:`set_label_lookup` and ``index``; NaN otherwise or without neighbours).
        """
        if not self.has_cluster_branch:
            return {}
        stats = {}
        labels_known = index is not None and len(self.label_lookup) > 0
        for m, (slots, selected) in self._dna_selection.items():
            stats[f"dna_neighbors_{m}"] = selected.float().sum(1).mean() if selected.numel() \
                else torch.zeros((), device=self.queue_ptr.device)
            purity = torch.full((), float("nan"), device=self.queue_ptr.device)
            if labels_known and selected.any():
                clip = self.queue_index[slots]                                   # (N, k)
                own = clip == index.to(clip.device).unsqueeze(1)   # the anchor's own earlier key
                known = selected & (clip >= 0) & ~own
                if known.any():
                    anchor = self.label_lookup[index.to(clip.device)].unsqueeze(1)   # (N, 1)
                    same = self.label_lookup[clip.clamp_min(0)] == anchor
                    purity = (same & known).sum().float() / known.sum()
            stats[f"dna_purity_{m}"] = purity
        return stats


def _unit(z: Tensor) -> Tensor:
    """L2-normalise rows in float32 (the losses run in float32 even under autocast)."""
    return F.normalize(z.float(), dim=1)


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
