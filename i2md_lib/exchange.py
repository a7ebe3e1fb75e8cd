"""How the MoCo model shares a batch with the other processes of a torchrun job.

The model (:class:`~i2md_lib.models.moco.MoCo`) holds one exchange object and calls
it at two points of a step: :meth:`BatchExchange.shuffle` before the key encoder
(MoCo's shuffle BN) and :meth:`BatchExchange.gather` before the keys enter the
queues, so that every process holds the same queues. In one process the exchange
is :class:`BatchExchange`, which does nothing; :func:`i2md_lib.distributed.prepare_model`
installs one of the others under torchrun.

This module sits below both the model and :mod:`i2md_lib.distributed`; it imports
nothing else of the library.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor


class BatchExchange:
    """The single process: nothing is exchanged."""

    def gather(self, rows: Tensor) -> Tensor:
        """All ranks' ``rows (n, ...)`` stacked in rank order: ``(world_size * n, ...)``."""
        return rows

    def shuffle(self, view_k: Tensor) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
        """The key views this rank encodes, and the function that puts their keys back in order."""
        return view_k, _identity

    def set_step(self, step: int) -> None:
        """The optimizer step about to run (seeds the shuffle of :class:`ShuffleExchange`)."""


def _identity(rows: Tensor) -> Tensor:
    return rows


class GatherExchange(BatchExchange):
    """Several processes: :meth:`gather` is an ``all_gather`` (no gradient flows through it).

    Args:
        rank: this process's rank; world_size: the number of processes.
    """

    def __init__(self, rank: int, world_size: int) -> None:
        self.rank, self.world_size = int(rank), int(world_size)

    @torch.no_grad()
    def gather(self, rows: Tensor) -> Tensor:
        rows = rows.contiguous()
        parts = [torch.empty_like(rows) for _ in range(self.world_size)]
        dist.all_gather(parts, rows)
        return torch.cat(parts)


class ShuffleExchange(GatherExchange):
    """MoCo's shuffle BN: the key encoder sees a batch shuffled across all ranks.

    Each rank's BatchNorm statistics then mix clips of other ranks' queries, so the
    key and the query of a clip are not normalised with the same batch (MoCo's remedy
    for BN "cheating" on several GPUs). The permutation of step ``s`` is seeded by
    ``(seed, s)`` on every rank alike, so it needs no communication and resumes exactly.
    Results depend on the number of processes.
    """

    def __init__(self, rank: int, world_size: int, seed: int) -> None:
        super().__init__(rank, world_size)
        self.seed, self.step = int(seed), 0

    def set_step(self, step: int) -> None:
        self.step = int(step)

    @torch.no_grad()
    def shuffle(self, view_k: Tensor) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
        everything = self.gather(view_k)                                     # (N, C, T, V, M)
        n, size = len(everything), len(view_k)
        seed = int(np.random.SeedSequence([self.seed, self.step, 7]).generate_state(1, np.uint64)[0] >> 1)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(view_k.device)
        mine = slice(self.rank * size, (self.rank + 1) * size)

        def unshuffle(keys: Tensor) -> Tensor:
            """This rank's shuffled keys ``(n, D)`` -> the keys of its own clips, in order."""
            shuffled = self.gather(keys)          # row j: the key of clip order[j]
            restored = torch.empty_like(shuffled)
            restored[order] = shuffled
            return restored[mine]

        return everything[order[mine]], unshuffle
