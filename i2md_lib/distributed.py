"""Data-parallel pretraining: one process per GPU (or CPU rank), launched by ``torchrun``.

``torchrun --nproc_per_node=N -m i2md_lib pretrain ...`` starts N copies of the
training loop. :func:`i2md_lib.train.pretrain` then

* joins the process group described by torchrun's environment variables
  (:func:`process_group`; backend ``nccl`` on CUDA, ``gloo`` on the CPU);
* cuts every *global* batch of ``pretrain.batch_size`` clips into N contiguous shards,
  one per rank (:func:`shard_batch`), so the order of the clips is still a function of
  ``(seed, epoch)`` alone and a run resumes exactly, with any number of processes;
* wraps the model in ``DistributedDataParallel``: gradients of the query side are
  averaged over the ranks, so every rank takes the same SGD step;
* gathers the keys of all ranks before they enter the queues (:class:`GatherExchange`),
  so every rank holds the same queues -- the CMD/I²MD losses need the whole queue and
  only the rank's own queries;
* normalises with statistics of the *global* batch (:class:`GlobalBatchNorm`, for the
  encoders' input BatchNorm), so that N processes compute what one process computes
  with the whole batch, up to float rounding. MoCo's shuffle BN
  (:class:`ShuffleExchange`, ``dist_bn="shuffle"``) is the alternative: per-rank
  statistics, and the key encoder sees a batch shuffled across the ranks.

A single process (no torchrun, or ``--nproc_per_node=1``) never touches
``torch.distributed``: :class:`BatchExchange` does nothing and the model is not wrapped.
"""
from __future__ import annotations

import contextlib
import datetime
import inspect
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from .utils import get_device

#: ``dist_bn`` choices: global batch statistics (matches one process) or MoCo's shuffle BN.
BN_MODES: tuple[str, ...] = ("global", "shuffle")


# ----------------------------------------------------------------------------
# The process group
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank among ``world_size`` processes and its device.

    ``world_size == 1`` is the plain single-process run (``enabled`` is false).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        """More than one process: collectives are needed."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files and shows progress."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Run the body on rank 0 first, then on the others (e.g. building a data cache)."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()

    def check_same(self, value: int, what: str) -> None:
        """Raise ``RuntimeError`` naming the ranks if ``value`` differs between them."""
        if not self.enabled:
            return
        mine = torch.tensor([int(value)], device=self.device)
        values = [torch.empty_like(mine) for _ in range(self.world_size)]
        dist.all_gather(values, mine)
        seen = [int(v) for v in values]
        if len(set(seen)) > 1:
            raise RuntimeError(f"the processes disagree on {what}: {seen} (rank 0 first)")

    def mean_over_ranks(self, values: Tensor) -> Tensor:
        """The mean of ``values`` (any shape) over the ranks, ignoring NaN entries."""
        if not self.enabled:
            return values
        finite = ~torch.isnan(values)
        both = torch.stack([torch.where(finite, values, torch.zeros_like(values)), finite.to(values.dtype)])
        dist.all_reduce(both)
        return both[0] / both[1]   # NaN where no rank had a number


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None


def launch_environment() -> dict[str, int]:
    """``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE`` as torchrun sets them (defaults: one process)."""
    world = _env_int("WORLD_SIZE", 1)
    return {"rank": _env_int("RANK", 0), "world_size": world, "local_rank": _env_int("LOCAL_RANK", 0),
            "local_world_size": _env_int("LOCAL_WORLD_SIZE", world)}


def _rank_device(preferred: str | None, local_rank: int) -> torch.device:
    """The device of this rank: the device type asked for (else CUDA when available) at ``local_rank``."""
    device = get_device(preferred)
    if device.type != "cuda":
        return device
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise RuntimeError(
            f"LOCAL_RANK {local_rank} needs a CUDA device {local_rank}, but this node has {count}; "
            f"start at most {count} processes per node (torchrun --nproc_per_node={count})")
    return torch.device("cuda", local_rank)


#: True once :func:`process_group` has initialised the default group (then it owns it).
_OWN_GROUP = False


@contextlib.contextmanager
def process_group(preferred_device: str | None = None,
                  timeout: datetime.timedelta | None = None) -> Iterator[DistContext]:
    """Join the process group torchrun describes; yield this process's :class:`DistContext`.

    Without torchrun (or with ``WORLD_SIZE=1``) nothing is initialised and the context
    is the single process on ``get_device(preferred_device)``. The group is initialised
    on first use and then kept, so a process may train several runs in a row (a group
    cannot be re-created on the same port); :func:`shutdown` destroys it at the end.
    A group the caller initialised is used as it is.

    Raises:
        RuntimeError: ``MASTER_ADDR``/``MASTER_PORT`` missing, or more ranks than GPUs.
    """
    global _OWN_GROUP
    env = launch_environment()
    if dist.is_available() and dist.is_initialized():
        env.update(rank=dist.get_rank(), world_size=dist.get_world_size())
    if env["world_size"] <= 1:
        yield DistContext(device=get_device(preferred_device))
        return
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    device = _rank_device(preferred_device, env["local_rank"])
    if not dist.is_initialized():
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
        if missing:
            raise RuntimeError(
                f"WORLD_SIZE={env['world_size']} but {' and '.join(missing)} not set: launch with "
                f"`torchrun --nproc_per_node=N -m i2md_lib pretrain ...` (it sets them)")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method="env://",
                                rank=env["rank"], world_size=env["world_size"],
                                **({"timeout": timeout} if timeout else {}))
        _OWN_GROUP = True
    backend = dist.get_backend()
    if (device.type == "cuda") != (backend == "nccl"):
        raise RuntimeError(f"the process group uses {backend} but this rank trains on {device}: "
                           f"nccl needs CUDA devices, gloo is for the CPU")
    yield DistContext(env["rank"], env["world_size"], env["local_rank"], env["local_world_size"], device)


def shutdown() -> None:
    """Destroy the process group if :func:`process_group` created it (end of a torchrun job)."""
    global _OWN_GROUP
    if _OWN_GROUP and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _OWN_GROUP = False


def loader_workers(num_workers: int, ctx: DistContext | None = None) -> int:
    """DataLoader workers of this rank: ``num_workers``, or for ``-1`` the machine's usable
    CPUs shared by the ranks of this node (at most 8, at least 1)."""
    if num_workers == -1:
        try:
            cpus = len(os.sched_getaffinity(0))   # what this process may use (containers, taskset)
        except AttributeError:                    # not on Linux
            cpus = os.cpu_count() or 1
        per_rank = cpus // (ctx.local_world_size if ctx else 1)
        return max(1, min(per_rank, 8))
    if num_workers < 0:
        raise ValueError(f"data.num_workers must be >= 0 or -1 (auto), got {num_workers}")
    return num_workers


# ----------------------------------------------------------------------------
# Sharding the global batch
# ----------------------------------------------------------------------------


def shard_batch(batch: Sequence[int], rank: int, world_size: int) -> list[int]:
    """Rank ``rank``'s contiguous share of a global ``batch``: ``len(batch) / world_size`` clips.

    Concatenating the shards of ranks ``0 .. world_size-1`` gives ``batch`` back, so the
    rows gathered by :meth:`GatherExchange.gather` are in the global batch's order.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not one of {world_size} ranks")
    if len(batch) % world_size:
        raise ValueError(
            f"a global batch of {len(batch)} clips cannot be split evenly over {world_size} processes; "
            f"choose pretrain.batch_size as a multiple of the number of processes")
    size = len(batch) // world_size
    return list(batch[rank * size:(rank + 1) * size])


# ----------------------------------------------------------------------------
# Exchanging rows between ranks (used inside MoCo.forward)
# ----------------------------------------------------------------------------


class BatchExchange:
    """How :class:`~i2md_lib.models.moco.MoCo` shares a batch with other processes.

    This base class is the single process: nothing is exchanged.
    """

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
    """Several processes: :meth:`gather` is an ``all_gather`` (no gradient flows through it)."""

    def __init__(self, ctx: DistContext) -> None:
        self.ctx = ctx

    @torch.no_grad()
    def gather(self, rows: Tensor) -> Tensor:
        rows = rows.contiguous()
        parts = [torch.empty_like(rows) for _ in range(self.ctx.world_size)]
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

    def __init__(self, ctx: DistContext, seed: int) -> None:
        super().__init__(ctx)
        self.seed, self.step = int(seed), 0

    def set_step(self, step: int) -> None:
        self.step = int(step)

    @torch.no_grad()
    def shuffle(self, view_k: Tensor) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
        everything = self.gather(view_k)                                     # (N, C, T, V, M)
        n, size = len(everything), len(view_k)
        seed = int(np.random.SeedSequence([self.seed, self.step, 7]).generate_state(1, np.uint64)[0] >> 1)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(view_k.device)
        mine = slice(self.ctx.rank * size, (self.ctx.rank + 1) * size)

        def unshuffle(keys: Tensor) -> Tensor:
            """This rank's shuffled keys ``(n, D)`` -> the keys of its own clips, in order."""
            shuffled = self.gather(keys)          # row j: the key of clip order[j]
            restored = torch.empty_like(shuffled)
            restored[order] = shuffled
            return restored[mine]

        return everything[order[mine]], unshuffle


# ----------------------------------------------------------------------------
# BatchNorm over the global batch
# ----------------------------------------------------------------------------


class _AllReduceSum(torch.autograd.Function):
    """``sum over ranks`` with the matching backward (the gradient is summed over ranks too)."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor) -> Tensor:
        out = tensor.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Differentiable sum of ``tensor`` over all ranks."""
    return _AllReduceSum.apply(tensor)


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics come from the batch of *all* ranks.

    Input ``(N, C, *)``; statistics per channel over ``N`` and the trailing dims, as
    ``nn.BatchNorm1d``. Same parameters, buffers and state-dict keys as the BatchNorm
    it replaces (:func:`convert_to_global_batchnorm`). With one process, or in eval
    mode, it *is* ``nn.BatchNorm1d``. Works on every backend (``SyncBatchNorm`` needs
    CUDA): two all-reduces of ``C`` numbers (sum, then the centred sum of squares, so
    the variance is as accurate as a one-process two-pass one), differentiable.
    """

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"GlobalBatchNorm expects (N, C, ...) input, got shape {tuple(x.shape)}")

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        self._check_input_dim(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, x.shape[1]] + [1] * (x.dim() - 2)
        xf = x.float()
        local_count = xf.new_full((1,), xf.numel() // xf.shape[1])
        sums = all_reduce_sum(torch.cat([xf.sum(dims), local_count]))        # (C + 1,)
        count = sums[-1].detach()
        mean = sums[:-1] / count                                             # (C,)
        centred = xf - mean.view(shape)
        var = all_reduce_sum((centred * centred).sum(dims)) / count          # (C,) biased
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                            else self.momentum)
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), momentum)
                unbiased = var.detach() * count / (count - 1).clamp_min(1)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        return out.to(x.dtype)


def convert_to_global_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm1d/2d/3d`` inside ``module`` by a :class:`GlobalBatchNorm`
    holding the *same* parameter and buffer objects (state dicts keep their keys)."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
            module, (GlobalBatchNorm, nn.SyncBatchNorm)):
        new = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats)
        if module.affine:
            new.weight, new.bias = module.weight, module.bias
        if module.track_running_stats:
            new.running_mean, new.running_var = module.running_mean, module.running_var
            new.num_batches_tracked = module.num_batches_tracked
        new.train(module.training)
        return new
    for name, child in module.named_children():
        module.add_module(name, convert_to_global_batchnorm(child))
    return module


# ----------------------------------------------------------------------------
# Putting it together for the training loop
# ----------------------------------------------------------------------------


def prepare_model(model: nn.Module, ctx: DistContext, bn_mode: str, seed: int) -> nn.Module:
    """Make a :class:`~i2md_lib.models.moco.MoCo` ready for ``ctx`` (in place; returns it).

    One process: unchanged. Several: ``bn_mode="global"`` converts the BatchNorms to
    :class:`GlobalBatchNorm` and gathers keys; ``"shuffle"`` keeps per-rank BatchNorm and
    shuffles the key batch across ranks (MoCo). Call before building the optimizer.
    """
    if bn_mode not in BN_MODES:
        raise ValueError(f"dist_bn must be one of {', '.join(BN_MODES)}, got {bn_mode!r}")
    if not ctx.enabled:
        return model
    if bn_mode == "global":
        convert_to_global_batchnorm(model)
        model.exchange = GatherExchange(ctx)
    else:
        model.exchange = ShuffleExchange(ctx, seed)
    return model


def wrap_ddp(model: nn.Module, ctx: DistContext) -> nn.Module:
    """``DistributedDataParallel(model)`` when ``ctx`` has several processes, else ``model``.

    Only parameters with ``requires_grad`` (the query side) are synchronised; buffers
    (queues, BN statistics) are not broadcast: the global BN and the gathered keys keep
    them equal on every rank already.
    """
    if not ctx.enabled:
        return model
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    ddp = nn.parallel.DistributedDataParallel
    no_buffer_sync = ({"forward_sync_buffers": False}
                      if "forward_sync_buffers" in inspect.signature(ddp.__init__).parameters
                      else {"broadcast_buffers": False})   # older torch
    return ddp(model, device_ids=device_ids, **no_buffer_sync)


# ----------------------------------------------------------------------------
# Running several local processes without torchrun (tests, the book)
# ----------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port that was free a moment ago (for ``MASTER_PORT``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawned_rank(rank: int, world_size: int, port: int, threads: int, fn: Callable, args: tuple) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank),
                       "LOCAL_WORLD_SIZE": str(world_size)})
    torch.set_num_threads(threads)
    try:
        fn(rank, *args)
    finally:
        shutdown()


def run_local_processes(fn: Callable[..., None], world_size: int, args: tuple = (), threads: int = 1) -> None:
    """Run ``fn(rank, *args)`` in ``world_size`` fresh processes with torchrun's environment
    variables set (one node, CPU or one GPU each), and wait for all of them.

    ``fn`` must be importable (a module-level function). If one process fails, the
    others are stopped and the error is raised here.
    """
    import torch.multiprocessing as mp

    mp.spawn(_spawned_rank, args=(world_size, free_port(), threads, fn, args), nprocs=world_size, join=True)


def _pretrain_rank(rank: int, cfg: Any, run_dir: str | Path, kwargs: dict[str, Any]) -> None:
    """A rank of :func:`i2md_lib.train.pretrain` (target of :func:`run_local_processes`)."""
    from .train import pretrain

    pretrain(cfg, run_dir, progress=False, **kwargs)


def pretrain_with_processes(cfg: Any, run_dir: str | Path, world_size: int, threads: int = 1,
                            **kwargs: Any) -> None:
    """Pretrain ``cfg`` into ``run_dir`` with ``world_size`` local CPU/GPU processes, as
    ``torchrun --nproc_per_node=world_size`` would; ``kwargs`` go to ``pretrain``
    (``arrays``, ``max_steps``, ``dist_bn``, ``resume``, ...). Read the results from
    ``run_dir`` (rank 0 wrote them)."""
    run_local_processes(_pretrain_rank, world_size, (cfg, str(run_dir), kwargs), threads)
