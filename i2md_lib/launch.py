"""Several local training processes without torchrun (the tests and the book use it).

:func:`pretrain_with_processes` does what ``torchrun --nproc_per_node=N -m i2md_lib
pretrain ...`` does on one machine: it starts ``N`` fresh processes with torchrun's
environment variables set, and each runs :func:`i2md_lib.train.pretrain` as one rank
(:mod:`i2md_lib.distributed` explains what the ranks share).
"""
from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Callable

import torch
import torch.multiprocessing as mp

from .config import ExperimentConfig
from .distributed import shutdown
from .train import pretrain


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
    mp.spawn(_spawned_rank, args=(world_size, free_port(), threads, fn, args), nprocs=world_size, join=True)


def _pretrain_rank(rank: int, cfg: ExperimentConfig, run_dir: str, kwargs: dict[str, Any]) -> None:
    """A rank of :func:`i2md_lib.train.pretrain` (target of :func:`run_local_processes`)."""
    pretrain(cfg, run_dir, progress=False, **kwargs)


def pretrain_with_processes(cfg: ExperimentConfig, run_dir: str | Path, world_size: int, threads: int = 1,
                            **kwargs: Any) -> None:
    """Pretrain ``cfg`` into ``run_dir`` with ``world_size`` local CPU/GPU processes, as
    ``torchrun --nproc_per_node=world_size`` would; ``kwargs`` go to ``pretrain``
    (``arrays``, ``max_steps``, ``resume``, ...). Read the results from ``run_dir``
    (rank 0 wrote them)."""
    run_local_processes(_pretrain_rank, world_size, (cfg, str(run_dir), kwargs), threads)
