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
* gathers the keys of all ranks before they enter the queues
  (:class:`~i2md_lib.exchange.GatherExchange`),
  so every rank holds the same queues -- the CMD/I²MD losses need the whole queue and
  only the rank's own queries;
* normalises with statistics of the *global* batch (:class:`GlobalBatchNorm`, for the
  encoders' input BatchNorm), so that N processes compute what one process computes
  with the whole batch, up to float rounding. MoCo's shuffle BN
  (:class:`~i2md_lib.exchange.ShuffleExchange`, ``pretrain.dist_bn="shuffle"``) is the alternative: per-rank
  statistics, and the key encoder sees a batch shuffled across the ranks.

A single process (no torchrun, or ``--nproc_per_node=1``) never touches
``torch.distributed``: the model's :class:`~i2md_lib.exchange.BatchExchange` does nothing
and the model is not wrapped. :mod:`i2md_lib.launch` starts several local processes
without torchrun (tests, the book).
"""
from __future__ import annotations

import contextlib
import datetime
import inspect
import os
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .config import DIST_BN_MODES, launch_environment
from .exchange import GatherExchange, ShuffleExchange
from .utils import get_device



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


def _rank_device(preferred: str | None, local_rank: int) -> torch.device:
    """The device of this rank: the device type asked for (else CUDA when available) at ``local_rank``."""
    device = get_device(preferred, "pretrain.device")
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
        yield DistContext(device=get_device(preferred_device, "pretrain.device"))
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
    if bn_mode not in DIST_BN_MODES:
        raise ValueError(f"pretrain.dist_bn must be one of {', '.join(DIST_BN_MODES)}, got {bn_mode!r}")
    if not ctx.enabled:
        return model
    if bn_mode == "global":
        convert_to_global_batchnorm(model)
        model.exchange = GatherExchange(ctx.rank, ctx.world_size)
    else:
        model.exchange = ShuffleExchange(ctx.rank, ctx.world_size, seed)
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
