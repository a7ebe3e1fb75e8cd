"""The one pretraining loop every method uses, with logging and exact resume.

:func:`pretrain` trains the model of ``cfg.pretrain.method`` and writes into ``run_dir``:

* ``config.yaml`` -- the resolved config (``ExperimentConfig.from_dict`` reads it back);
* ``log.csv``     -- one row per optimizer step: step, epoch, lr, every loss term and
  the diagnostics of :func:`i2md_lib.diagnostics.step_stats`;
* ``checkpoint.pt`` -- see :mod:`i2md_lib.checkpoint`, written every
  ``checkpoint_every`` epochs, at the end, and where ``max_steps`` stops a run.

Exact resume: the batches of epoch ``e`` are a permutation seeded by ``(seed, e)``,
the two views of clip ``i`` are drawn from ``(seed, e, i)`` (see
:mod:`i2md_lib.data.datasets`), and a checkpoint records how many batches of the
current epoch are done. A resumed run therefore sees exactly the batches the
uninterrupted run would have seen, and ends with identical weights.

Several processes (``torchrun --nproc_per_node=N -m i2md_lib pretrain ...``, see
:mod:`i2md_lib.distributed`): ``pretrain.batch_size`` stays the *global* batch; each
rank trains on its contiguous shard of it, the keys of all ranks enter the queues and
BatchNorm uses the global batch's statistics, so N processes give the losses, queues
and weights of one process up to float rounding (and a run may resume with a
different N). Only rank 0 writes files; logged numbers are averages over the ranks.

Mixed precision (``pretrain.amp``): ``bf16`` (CPU or GPU) or ``fp16`` (CUDA only, with a
``GradScaler`` whose state is checkpointed). The encoders run under ``torch.autocast``;
embeddings are normalised and every loss is computed in float32. There is no gradient
clipping; adding it needs ``scaler.unscale_(optimizer)`` right before the clip.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import yaml
from torch.utils.data import DataLoader

from .checkpoint import (CHECKPOINT_FORMAT, CONFIG_NAME, ConfigMismatchError, capture_rng_state,
                         check_resume_config, checkpoint_path, load_checkpoint, load_weights,
                         restore_rng_state, save_checkpoint)
from .config import AMP_MODES, ExperimentConfig, check_trainable
from . import diagnostics, distributed
from .data.datasets import EpochShuffleSampler, PretrainDataset, load_arrays
from .data.store import SkeletonArrays
from .methods import method_loss
from .progress import progress_bar
from .models.moco import MoCo, build_model
from .utils import atomic_write, set_seed

LOG_NAME = "log.csv"


class NonFiniteLossError(RuntimeError):
    """Training stopped at a NaN or infinite loss; the last checkpoint was left as it was."""


def pretrain(
    cfg: ExperimentConfig,
    run_dir: str | Path,
    resume: bool = True,
    max_steps: int | None = None,
    progress: bool = True,
    allow_changes: Iterable[str] = (),
    arrays: SkeletonArrays | None = None,
) -> list[dict[str, float]]:
    """Pretrain ``cfg.pretrain.method`` on the train split of ``cfg.data``.

    Args:
        cfg: the whole experiment config.
        run_dir: folder for config, log and checkpoint (created if needed).
        resume: continue from ``run_dir/checkpoint.pt`` if it exists; ``False``
            starts over (the old checkpoint and log are discarded).
        max_steps: stop after this many optimizer steps in total (counted from the
            start of the run, not of this call) and checkpoint there.
        progress: show a tqdm bar per epoch.
        allow_changes: dotted config keys that may differ from the checkpoint's
            config on resume (e.g. ``["pretrain.epochs"]``).
        arrays: train on these clips instead of ``load_arrays(cfg.data, "train")``.

    Returns:
        The whole run's log so far: one dict per step (``pandas.DataFrame(history)``).
    """
    with distributed.process_group(cfg.pretrain.device) as ctx:
        return training_loop(cfg, Path(run_dir), resume, max_steps, progress, allow_changes, arrays, ctx)


def training_loop(cfg: ExperimentConfig, run_dir: Path, resume: bool, max_steps: int | None, progress: bool,
                  allow_changes: Iterable[str], arrays: SkeletonArrays | None,
                  ctx: distributed.DistContext) -> list[dict[str, float]]:
    """:func:`pretrain` in the process ``ctx`` (one of several under torchrun)."""
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    p = cfg.pretrain
    check_trainable(cfg)
    set_seed(p.seed)
    device = ctx.device
    autocast_dtype = amp_dtype(p.amp, device)
    if arrays is None:
        with ctx.main_first():   # rank 0 builds any data cache before the others read it
            arrays = load_arrays(cfg.data, "train")
    dataset = PretrainDataset.from_config(arrays, cfg)
    batches_per_epoch = len(dataset) // p.batch_size   # drop_last
    if batches_per_epoch == 0:
        raise ValueError(f"{len(dataset)} training clips are fewer than one batch of {p.batch_size}")
    if p.batch_size % ctx.world_size:
        raise ValueError(f"pretrain.batch_size {p.batch_size} (the global batch) is not a multiple of "
                         f"the {ctx.world_size} processes")

    model = build_model(cfg).to(device)
    labels = torch.as_tensor(dataset.arrays.labels, dtype=torch.long, device=device)   # diagnostics only
    distributed.prepare_model(model, ctx, p.dist_bn, p.seed)   # several processes: global BN, key gather
    run_layout = {"world_size": ctx.world_size, "dist_bn": p.dist_bn if ctx.enabled else "none"}
    optimizer = torch.optim.SGD([q for q in model.parameters() if q.requires_grad], lr=p.lr,
                                momentum=p.sgd_momentum, weight_decay=p.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(p.lr_milestones), p.lr_gamma)
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype == torch.float16)
    epoch = batch_in_epoch = step = 0
    ckpt = checkpoint_path(run_dir)
    if not resume and ctx.is_main:
        ckpt.unlink(missing_ok=True)   # starting over: an old checkpoint must not pair with the new log
    ctx.barrier()                      # every rank sees the same checkpoint (or none)
    if ckpt.exists():
        state = load_checkpoint(ckpt, map_location=device)
        check_resume_config(ckpt, state["config"], cfg, allow_changes)
        load_weights(ckpt, model, state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        restore_rng_state(state["rng"])
        check_resume_layout(ckpt, state.get("distributed"), run_layout)
        epoch, batch_in_epoch, step = state["epoch"], state["batch_in_epoch"], state["step"]
    ctx.check_same(step, f"the step to resume from in {ckpt} (several machines need a run folder they all share)")
    step_model = distributed.wrap_ddp(model, ctx)   # DDP: averages the query side's gradients
    if ctx.is_main:
        write_config(run_dir / CONFIG_NAME, cfg)
    log = CsvLog(run_dir / LOG_NAME, keep_until_step=step, write=ctx.is_main)

    def checkpoint() -> None:
        if ctx.is_main:
            save_checkpoint(ckpt, {
                "format": CHECKPOINT_FORMAT, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler.is_enabled() else {},
                "epoch": epoch, "batch_in_epoch": batch_in_epoch, "step": step,
                "rng": capture_rng_state(), "config": cfg.to_dict(), "distributed": run_layout})
        ctx.barrier()

    def stop() -> bool:
        return max_steps is not None and step >= max_steps

    with log:
        while epoch < p.epochs and not stop():
            model.train()
            loader = epoch_loader(dataset, cfg, epoch, skip_batches=batch_in_epoch, ctx=ctx)
            bar = progress_bar(loader, desc=f"{p.method} epoch {epoch + 1}/{p.epochs}",
                       disable=not (progress and ctx.is_main),
                       initial=batch_in_epoch, total=batches_per_epoch, leave=False)
            for view_q, view_k, index in bar:
                view_q, view_k = view_q.to(device, non_blocking=True), view_k.to(device, non_blocking=True)
                model.exchange.set_step(step)
                with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                    terms, stats = train_step(model, step_model, view_q, view_k, epoch, index, labels)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(terms["total"]).backward()
                scaler.step(optimizer)
                scaler.update()
                step, batch_in_epoch = step + 1, batch_in_epoch + 1
                row = {"step": step, "epoch": epoch, "lr": optimizer.param_groups[0]["lr"],
                       **to_floats({**terms, **stats}, ctx.mean_over_ranks)}
                log.append(row)
                if not math.isfinite(row["total"]):
                    raise non_finite_loss(run_dir, row, list(terms), ckpt)
                bar.set_postfix(loss=f"{row['total']:.3f}")
                if stop():
                    break
            epoch_done = batch_in_epoch == batches_per_epoch
            if epoch_done:
                scheduler.step()
                epoch, batch_in_epoch = epoch + 1, 0
            if (epoch_done and (epoch % p.checkpoint_every == 0 or epoch == p.epochs)) or stop():
                checkpoint()
    return log.rows


def train_step(model: MoCo, step_model: torch.nn.Module, view_q: torch.Tensor, view_k: torch.Tensor,
               epoch: int, index: torch.Tensor | None = None, labels: torch.Tensor | None = None
               ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """One MoCo step of the method: embeddings, loss terms, diagnostics, then the keys enter the queues.

    Args:
        model: the :class:`~i2md_lib.models.moco.MoCo`; ``step_model`` is the same model or
            its ``DistributedDataParallel`` wrapper (what runs the forward pass).
        view_q, view_k: two augmented joint views ``(N, C, T, V, M)``.
        epoch: the current epoch (warm-ups and start epochs of the methods).
        index: ``(N,)`` the clips' dataset indices and ``labels`` ``(num_clips,)`` the training
            labels: diagnostics only (which clip sits in which queue slot, neighbour purity).

    Returns:
        ``(terms, stats)``: the method's loss terms (``"total"`` is the one to minimise) and
        the detached diagnostics of :func:`i2md_lib.diagnostics.step_stats`.
    """
    emb = step_model(view_q, view_k)        # queries (with grad), momentum update, keys
    queues = model.queue_snapshot()        # the losses see the queues before this batch's keys
    with torch.autocast(view_q.device.type, enabled=False):   # losses in float32
        loss = method_loss(model.pcfg, emb, queues, epoch)
        stats = diagnostics.step_stats(emb, queues, loss.dna_selections, index, model.queue_clips(), labels)
    model.enqueue_keys(emb.keys, index)
    return loss.terms, stats


def to_floats(scalars: dict[str, torch.Tensor],
              reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, float]:
    """Scalar tensors -> Python floats, with one device sync (and one ``reduce``, e.g. the
    mean over processes, of the stacked values) for all of them."""
    values = torch.stack([v.detach().float() for v in scalars.values()])
    if reduce is not None:
        values = reduce(values)
    return dict(zip(scalars, values.tolist()))


def non_finite_loss(run_dir: Path, row: dict[str, float], loss_names: list[str],
                    ckpt: Path) -> NonFiniteLossError:
    """The error of a step whose loss is NaN or infinite (its row is the log's last)."""
    bad = ", ".join(f"{k}={row[k]}" for k in loss_names if not math.isfinite(row[k]))
    kept = f"{ckpt} is kept as it was" if ckpt.exists() else "no checkpoint was written"
    return NonFiniteLossError(
        f"{run_dir}: non-finite loss at step {row['step']} (epoch {row['epoch'] + 1}): {bad}; training "
        f"stopped and {kept}. Check the data for NaN/inf values and lower pretrain.lr or raise the "
        f"temperatures")


def check_resume_layout(path: Path, saved: dict[str, Any] | None, now: dict[str, Any]) -> None:
    """Refuse to resume a shuffle-BN run with another number of processes (its maths
    depend on it); global BN and single-process runs resume with any number."""
    saved = saved or {"world_size": 1, "dist_bn": "none"}
    if "shuffle" in (saved["dist_bn"], now["dist_bn"]) and saved != now:
        raise ConfigMismatchError(
            f"{path}: the run used {saved['world_size']} process(es) with dist_bn={saved['dist_bn']!r}, "
            f"now {now['world_size']} with dist_bn={now['dist_bn']!r}; shuffle BN depends on the number "
            f"of processes: resume with the same launch, or start over")


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``PretrainConfig.amp`` on ``device`` (``None``: full precision)."""
    if amp not in AMP_MODES:
        raise ValueError(f"pretrain.amp must be one of {', '.join(map(repr, AMP_MODES))}, got {amp!r}")
    if amp == "none":
        return None
    if amp == "bf16":
        return torch.bfloat16
    if device.type != "cuda":   # fp16
        raise ValueError(f"pretrain.amp='fp16' needs a CUDA device, got {device}; use 'bf16' or 'none'")
    return torch.float16


def epoch_batches(num_clips: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The batches of ``epoch``: a permutation seeded by ``(seed, epoch)``, cut into full batches."""
    sampler = EpochShuffleSampler(num_clips, seed)
    sampler.set_epoch(epoch)
    order = list(sampler)
    return [order[i:i + batch_size] for i in range(0, num_clips - batch_size + 1, batch_size)]


def epoch_loader(dataset: PretrainDataset, cfg: ExperimentConfig, epoch: int,
                 skip_batches: int = 0, ctx: distributed.DistContext | None = None) -> DataLoader:
    """A DataLoader over the batches of ``epoch`` after the first ``skip_batches`` (for resume).

    With several processes (``ctx``) it yields this rank's shard of each global batch.
    """
    p = cfg.pretrain
    dataset.set_epoch(epoch)
    batches = epoch_batches(len(dataset), p.batch_size, p.seed, epoch)[skip_batches:]
    if ctx is not None and ctx.enabled:
        batches = [distributed.shard_batch(b, ctx.rank, ctx.world_size) for b in batches]
    # the generator only seeds worker processes; the views are seeded per clip by the dataset
    generator = torch.Generator().manual_seed(p.seed * 100_003 + epoch)
    return DataLoader(dataset, batch_sampler=batches,
                      num_workers=distributed.loader_workers(cfg.data.num_workers, ctx),
                      pin_memory=torch.cuda.is_available(), generator=generator)


# -- run-folder files --------------------------------------------------------------
def config_to_yaml(cfg: ExperimentConfig) -> str:
    """``cfg`` as YAML (tuples written as lists; ``ExperimentConfig.from_dict`` reads it back)."""
    return yaml.safe_dump(_plain(cfg.to_dict()), sort_keys=False)


def write_config(path: Path, cfg: ExperimentConfig) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(config_to_yaml(cfg)))


def read_config(path: str | Path) -> ExperimentConfig:
    """An :class:`ExperimentConfig` from a YAML file written by :func:`write_config`."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of config sections, got {type(data).__name__}")
    try:
        return ExperimentConfig.from_dict(data)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


class CsvLog:
    """``log.csv`` of a run: rows kept in memory (``rows``) and appended to the file.

    Opening it keeps only the rows with ``step <= keep_until_step`` (the rows a resumed
    checkpoint has seen), so steps trained after the last checkpoint are not duplicated.
    ``write=False`` (ranks other than 0) reads the file but never writes it.
    """

    def __init__(self, path: Path, keep_until_step: int = 0, write: bool = True) -> None:
        self.path, self.write = path, write
        self.rows = [r for r in read_log(path, allow_partial_last_row=True) if r["step"] <= keep_until_step] if path.exists() else []
        self._fields = list(self.rows[0]) if self.rows else None
        if write:
            atomic_write(path, lambda tmp: self._write_all(tmp))
        self._file = None

    def _write_all(self, tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            if self._fields:
                writer = csv.DictWriter(f, self._fields)
                writer.writeheader()
                writer.writerows(self.rows)

    def __enter__(self) -> "CsvLog":
        if self.write:
            self._file = open(self.path, "a", newline="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def append(self, row: dict[str, float]) -> None:
        new_file = self._fields is None
        if new_file:
            self._fields = list(row)
        if list(row) != self._fields:
            raise ValueError(f"{self.path}: log columns changed from {self._fields} to {list(row)}")
        if self._file is not None:
            if new_file:
                csv.DictWriter(self._file, self._fields).writeheader()
            csv.DictWriter(self._file, self._fields).writerow(row)
            self._file.flush()
        self.rows.append(row)


def read_log(path: str | Path, allow_partial_last_row: bool = False) -> list[dict[str, float]]:
    """The rows of a run's ``log.csv`` (``step`` and ``epoch`` as int, the rest float).

    ``allow_partial_last_row`` drops a cut-off last row (a run killed mid-write)
    instead of raising ``ValueError``.
    """
    path = Path(path)
    with open(path, newline="") as f:
        return log_rows(f, str(path), allow_partial_last_row)


def log_rows(lines: Iterable[str], source: str, allow_partial_last_row: bool = False) -> list[dict[str, float]]:
    """The rows of CSV ``lines`` of a training log; errors name ``source`` and the line."""
    rows: list[dict[str, float]] = []
    records = list(csv.DictReader(lines))
    for i, r in enumerate(records):
        try:
            rows.append({k: int(v) if k in ("step", "epoch") else float(v) for k, v in r.items()})
        except (TypeError, ValueError) as e:
            if allow_partial_last_row and i == len(records) - 1:
                break
            raise ValueError(f"{source}, line {i + 2}: not a row of a training log ({e})") from e
    return rows
