"""MoCo's mechanism with one stream per skeleton modality: encoders, momentum copies, queues.

:class:`MoCo` follows the shape of facebookresearch/moco's ``builder.py`` (query
encoder, momentum key encoder, queue). It knows nothing about losses: the methods
(:mod:`i2md_lib.methods`) turn its embeddings and queues into loss terms, and the
training loop (:func:`i2md_lib.train.train_step`) strings the pieces together.

One *stream* per modality (joint, motion, bone) holds a query encoder + projection
head, a momentum copy of both, and a queue ``(K, D)``. ``i2md`` adds a *cluster*
branch per modality: a second head on the same encoder, its momentum copy and its
own queue. All queues share one pointer and are filled with the same batch, so slot
``i`` holds the same clip in every modality and branch -- CMD's and IMD's
distillation rely on this.

Embeddings are nested dicts ``branch -> modality -> (N, D)``, L2-normalised in
float32; ``branch`` is ``"instance"`` (and ``"cluster"`` for ``i2md``).

With several processes the model calls its ``exchange``
(:class:`~i2md_lib.exchange.BatchExchange`) to shuffle the key batch (MoCo's
shuffle BN) and to gather all ranks' keys before they enter the queues; in one
process the exchange does nothing.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import EncoderConfig, ExperimentConfig, PretrainConfig
from ..data.modalities import to_modality
from ..exchange import BatchExchange
from .encoders import ProjectionHead, build_encoder, encode_streams

BRANCHES: tuple[str, ...] = ("instance", "cluster")
SIDES: tuple[str, ...] = ("query", "key")

#: branch -> modality -> ``(N, D)`` L2-normalised embeddings.
BranchEmbeddings = dict[str, dict[str, Tensor]]


@dataclass
class Embeddings:
    """The two halves of one MoCo step: queries (with gradient) and keys (without)."""

    queries: BranchEmbeddings
    keys: BranchEmbeddings


class MoCo(nn.Module):
    """Momentum contrast over one or three skeleton modalities.

    Attributes:
        modalities: the streams, ``pcfg.modalities``.
        encoder_q, head_q: modality -> query encoder / projection head (trained by SGD).
        encoder_k, head_k: modality -> momentum copies (EMA of the query parameters).
        cluster_head_q, cluster_head_k: (``i2md`` only) the cluster branch's heads.
        queue_<modality>: buffers ``(K, D)`` of L2-normalised keys.
        cluster_queue_<modality>: (``i2md`` only) the cluster branch's queues ``(K, D)``.
        queue_ptr: buffer ``()`` long, the next slot to write (shared by all queues).
        queue_index: buffer ``(K,)`` long, the dataset index of the clip in each slot
            (-1 while empty); read it with :meth:`queue_clips`.
        exchange: how keys are shared with other processes (set by
            :func:`i2md_lib.distributed.prepare_model`; a no-op in one process).
    """

    def __init__(self, pcfg: PretrainConfig, enc_cfg: EncoderConfig) -> None:
        super().__init__()
        self.pcfg, self.enc_cfg = pcfg, enc_cfg
        self.modalities = pcfg.modalities
        self.has_cluster_branch = pcfg.has_cluster_branch
        self.encoder_q = nn.ModuleDict({m: build_encoder(enc_cfg) for m in self.modalities})
        self.head_q = nn.ModuleDict({m: ProjectionHead.from_config(enc_cfg) for m in self.modalities})
        if self.has_cluster_branch:
            self.cluster_head_q = nn.ModuleDict(
                {m: ProjectionHead.from_config(enc_cfg) for m in self.modalities})
        # key encoders start as exact copies and are never touched by the optimiser
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
        self.exchange = BatchExchange()

    # -- the parts ------------------------------------------------------------------
    @property
    def branches(self) -> tuple[str, ...]:
        """``("instance",)``, or ``("instance", "cluster")`` for ``i2md``."""
        return BRANCHES if self.has_cluster_branch else BRANCHES[:1]

    def queue_names(self) -> list[str]:
        """Buffer names of all queues: ``queue_<m>`` and, for ``i2md``, ``cluster_queue_<m>``."""
        return [_QUEUE_PREFIX[b] + m for b in self.branches for m in self.modalities]

    def queues(self, branch: str = "instance") -> dict[str, Tensor]:
        """modality -> queue ``(K, D)`` of ``branch``: the buffers themselves, not copies."""
        if branch not in self.branches:
            raise ValueError(f"this model has no {branch!r} branch; it has {', '.join(self.branches)}")
        return {m: getattr(self, _QUEUE_PREFIX[branch] + m) for m in self.modalities}

    def queue_snapshot(self) -> BranchEmbeddings:
        """branch -> modality -> a copy of the queue ``(K, D)`` (the losses of a step read it
        while :meth:`enqueue` writes the buffers)."""
        return {b: {m: q.clone() for m, q in self.queues(b).items()} for b in self.branches}

    def queue_clips(self) -> Tensor:
        """``(K,)`` the dataset index of the clip whose keys sit in each slot (-1: empty)."""
        return self.queue_index

    def heads(self, side: str, branch: str) -> nn.ModuleDict:
        """The projection heads of one side (``query``/``key``) and branch."""
        if branch not in self.branches:
            raise ValueError(f"this model has no {branch!r} branch; it has {', '.join(self.branches)}")
        prefix = "head_" if branch == "instance" else "cluster_head_"
        return getattr(self, prefix + {"query": "q", "key": "k"}[side])

    def encoders(self, side: str = "query") -> nn.ModuleDict:
        """modality -> encoder of ``side``; the query encoders are what downstream tasks use."""
        return {"query": self.encoder_q, "key": self.encoder_k}[side]

    def query_modules(self) -> list[nn.Module]:
        """The modules trained by SGD, in the order :meth:`key_modules` mirrors."""
        return [self.encoder_q, *(self.heads("query", b) for b in self.branches)]

    def key_modules(self) -> list[nn.Module]:
        """The momentum copies of :meth:`query_modules`."""
        return [self.encoder_k, *(self.heads("key", b) for b in self.branches)]

    def key_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the momentum encoders and heads, in the order of the query ones."""
        for module in self.key_modules():
            yield from module.parameters()

    # -- embeddings -------------------------------------------------------------------
    def encode(self, x: Tensor, side: str) -> BranchEmbeddings:
        """Joint clips ``x (N, C, T, V, M)`` -> branch -> modality -> ``(N, D)`` embeddings.

        Motion and bone are derived from ``x`` inside, so the three modalities of a view
        share its augmentation. Each modality's encoder runs once (all of them in one
        grouped time loop where their recurrence allows, :func:`encode_streams`); the
        branches' heads share its feature. Runs in the model's current mode (BatchNorm statistics move in
        training mode); gradients follow the usual rules, so wrap the key side in ``no_grad``.
        """
        encoders, out = self.encoders(side), {b: {} for b in self.branches}
        features = encode_streams([encoders[m] for m in self.modalities],
                                  [to_modality(x, m) for m in self.modalities])       # (N, F) each
        for m, feature in zip(self.modalities, features):
            for b in self.branches:
                out[b][m] = F.normalize(self.heads(side, b)[m](feature).float(), dim=1)
        return out

    @torch.no_grad()
    def embed(self, x: Tensor, modality: str, side: str = "query", branch: str = "instance") -> Tensor:
        """``(N, D)`` embeddings of joint clips ``x (N, C, T, V, M)``, changing nothing.

        For chapters and diagnostics: BatchNorm uses its running statistics (the model is
        put in eval mode for the call and back afterwards), no gradient, no momentum
        update, nothing enqueued.
        """
        if side not in SIDES:
            raise ValueError(f"side must be one of {', '.join(SIDES)}, got {side!r}")
        was_training = self.training
        self.eval()
        try:
            feature = self.encoders(side)[modality](to_modality(x, modality))
            return F.normalize(self.heads(side, branch)[modality](feature).float(), dim=1)
        finally:
            self.train(was_training)

    # -- one step -----------------------------------------------------------------------
    def forward(self, view_q: Tensor, view_k: Tensor) -> Embeddings:
        """The encoding half of a MoCo step on two augmented joint views ``(N, C, T, V, M)``.

        Queries of ``view_q`` (with gradient), then the momentum update, then keys of
        ``view_k`` with the updated key encoders (as MoCo does). The queues are not
        touched: the losses read them first, then :meth:`enqueue_keys` adds the keys.
        """
        queries = self.encode(view_q, "query")
        self.momentum_update()
        view_k, unshuffle = self.exchange.shuffle(view_k)   # shuffle BN across processes (else as is)
        with torch.no_grad():
            keys = self.encode(view_k, "key")
        keys = {b: {m: unshuffle(k) for m, k in per_m.items()} for b, per_m in keys.items()}
        return Embeddings(queries, keys)

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

    @torch.no_grad()
    def enqueue_keys(self, keys: BranchEmbeddings, index: Tensor | None = None) -> None:
        """:meth:`enqueue` the keys of a step (all ranks' keys, in global batch order, so
        that the queues of every process stay equal)."""
        gather = self.exchange.gather
        cluster = keys.get("cluster")
        self.enqueue({m: gather(k) for m, k in keys["instance"].items()},
                     None if cluster is None else {m: gather(k) for m, k in cluster.items()},
                     None if index is None else gather(index.to(self.queue_index.device)))


_QUEUE_PREFIX = {"instance": "queue_", "cluster": "cluster_queue_"}


def build_model(cfg: ExperimentConfig) -> MoCo:
    """The pretraining model of ``cfg.pretrain.method`` (on the CPU)."""
    return MoCo(cfg.pretrain, cfg.encoder)


def encoders_for_eval(model: MoCo) -> dict[str, nn.Module]:
    """modality -> query encoder (without its projection head), what downstream tasks use."""
    return dict(model.encoders("query"))
