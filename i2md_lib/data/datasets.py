"""Torch Datasets for pretraining and evaluation, and the dataset dispatch by config.

* :func:`load_arrays` turns a :class:`~i2md_lib.config.DataConfig` into the arrays
  of one split: the synthetic dataset or a folder in the CMD layout (``store.py``),
  checked by :func:`store.validate_split` (labels against the dataset's class count).
* :class:`PretrainDataset` gives two independently augmented *joint* views of a clip;
  the model derives motion and bone from each view (as the CMD reference does).
* :class:`EvalDataset` gives one cropped clip and its label.
* :func:`make_loader` wraps either in a DataLoader whose shuffling is seeded per epoch.

Randomness: item ``i`` of epoch ``e`` draws only from
``np.random.default_rng([seed, e, i])``, so the views do not depend on the number
of workers or on the order items are read, and a resumed run re-creates exactly the
views it would have seen. Call :func:`set_epoch` (or ``dataset.set_epoch``) at the
start of every epoch.

Clips shorter than the window: a clip whose used frames ``min(num_frame, max_frames)``
are fewer than ``window`` is kept and *stretched* to the window by the same linear
interpolation in time that resizes every crop (the CMD reference's rule: its crop is
clamped to ``[window, n]``, i.e. the whole clip, then resized). No frame of zeros is padded
and no clip is refused; :func:`load_arrays` logs how many clips of the split are short
(logger ``i2md_lib.data.datasets``, shown by the command line).

Large arrays stay memory-mapped: a dataset indexes one clip at a time and reads
only the frames it uses; pickling a dataset (to spawned workers) re-opens the map
instead of copying the data.
"""
from __future__ import annotations

import logging
import mmap
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..config import BENCHMARKS, AugmentConfig, DataConfig, ExperimentConfig
from . import store
from .augment import PretrainAugment, center_crop_resize, random_crop_resize
from .store import RowView, SkeletonArrays

#: The command that writes each real dataset's folders.
_PREPARE_COMMAND = {
    "ntu60": "python -m i2md_lib prepare-ntu",
    "ntu120": "python -m i2md_lib prepare-ntu",
    "pku1": "python -m i2md_lib prepare-pku",
    "pku2": "python -m i2md_lib prepare-pku",
    "msr": "python -m i2md_lib prepare-msr",
}

#: Classes of each real dataset (labels must lie in ``[0, count)``); PKU-MMD numbers its
#: actions 1..51 in both parts, MSR Action3D 1..20.
NUM_CLASSES = {"ntu60": 60, "ntu120": 120, "pku1": 51, "pku2": 51, "msr": 20}

log = logging.getLogger(__name__)

#: Folder names the CMD reference's data_gen uses where ours differ.
_REFERENCE_FOLDER_ALIASES = {"xset": "xsetup"}


# ----------------------------------------------------------------------------
# Dispatch
# ----------------------------------------------------------------------------


def load_arrays(data_cfg: DataConfig, part: str) -> SkeletonArrays:
    """The ``part`` ("train" or "val") split of the dataset ``data_cfg`` names.

    ``synthetic`` is generated (and cached) by :mod:`i2md_lib.data.synthetic`; the real
    datasets are read from ``{root}/{benchmark}/`` in the CMD layout, memory-mapped
    when ``data_cfg.mmap``.

    Raises:
        ValueError: unknown dataset, part or benchmark, or no ``root`` for a real dataset.
        FileNotFoundError: ``root`` or the benchmark folder does not exist.
    """
    dataset = data_cfg.dataset
    if dataset not in BENCHMARKS:
        raise ValueError(f"unknown dataset {dataset!r} (data.dataset); choose one of {', '.join(BENCHMARKS)}")
    if part not in store.PARTS:
        raise ValueError(f"part must be one of {store.PARTS}, got {part!r}")
    if data_cfg.benchmark not in BENCHMARKS[dataset]:
        raise ValueError(
            f"benchmark {data_cfg.benchmark!r} (data.benchmark) does not exist for {dataset}; "
            f"choose one of {', '.join(BENCHMARKS[dataset])}"
        )
    if dataset == "synthetic":
        from .synthetic import synthetic_split  # lazy: generating data is not always needed

        arrays = synthetic_split(data_cfg.synthetic, data_cfg.benchmark, part)
    else:
        arrays = store.load_split(_benchmark_folder(data_cfg), part, mmap=data_cfg.mmap,
                                  num_classes=NUM_CLASSES[dataset], layout=data_cfg.layout)
    log_short_clips(arrays, data_cfg, part)
    return arrays


def short_clips(num_frame: np.ndarray, window: int, max_frames: int) -> np.ndarray:
    """``(N,)`` bool: the clips whose used frames ``min(num_frame, max_frames)`` are fewer than
    ``window`` (each is stretched to the window, see the module docstring)."""
    return np.minimum(np.asarray(num_frame), max_frames) < window


def log_short_clips(arrays: SkeletonArrays, data_cfg: DataConfig, part: str) -> None:
    """Log (INFO) how many clips of ``arrays`` are shorter than ``data_cfg.window``."""
    short = short_clips(arrays.num_frame, data_cfg.window, data_cfg.max_frames)
    if short.any():
        used = np.minimum(arrays.num_frame[short], data_cfg.max_frames)
        log.info("%s %s %s: %d of %d clips have fewer frames than the %d-frame window (shortest %d); "
                 "each is stretched to the window by linear interpolation, as CMD does",
                 data_cfg.dataset, data_cfg.benchmark, part, int(short.sum()), len(arrays),
                 data_cfg.window, int(used.min()))


def _benchmark_folder(data_cfg: DataConfig) -> Path:
    prepare = f"{_PREPARE_COMMAND[data_cfg.dataset]} --help"
    if not data_cfg.root:
        raise ValueError(
            f"data.root is not set for dataset {data_cfg.dataset!r}: preprocess the raw data "
            f"first (see `{prepare}`) and set data.root to its output folder"
        )
    root = Path(data_cfg.root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root}: data.root of dataset {data_cfg.dataset!r} does not exist; create it "
            f"with `{prepare}`"
        )
    folder = root / data_cfg.benchmark
    alias = _REFERENCE_FOLDER_ALIASES.get(data_cfg.benchmark)
    if not folder.is_dir() and alias and (root / alias).is_dir():
        folder = root / alias                    # a folder written by the reference's data_gen
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder}: no {data_cfg.benchmark!r} benchmark folder for {data_cfg.dataset!r} "
            f"under data.root; create it with `{prepare}`"
        )
    return folder


# ----------------------------------------------------------------------------
# Datasets
# ----------------------------------------------------------------------------


class _SkeletonDataset(Dataset):
    """Shared parts: per-item generators, epochs, frame limits and cheap pickling."""

    def __init__(self, arrays: SkeletonArrays, seed: int, max_frames: int):
        if max_frames < 1:
            raise ValueError(f"max_frames must be positive, got {max_frames}")
        self.arrays = arrays
        self.seed = int(seed)
        self.max_frames = int(max_frames)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.arrays)

    def set_epoch(self, epoch: int) -> None:
        """Select the random views of ``epoch`` (call before iterating each epoch)."""
        self.epoch = int(epoch)

    def item_rng(self, index: int) -> np.random.Generator:
        """The generator of item ``index`` in the current epoch."""
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    def clip(self, index: int) -> tuple[np.ndarray, int]:
        """The used frames of clip ``index``: ``(C, n, V, M)`` and ``n = min(num_frame, max_frames, T)``."""
        n = min(int(self.arrays.num_frame[index]), self.max_frames, self.arrays.data.shape[2])
        n = max(n, 1)
        return np.asarray(self.arrays.data[index, :, :n]), n

    # Pickling (spawned DataLoader workers): re-open a memory map instead of copying it.
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        data, rows = self.arrays.data, None
        if isinstance(data, RowView):                   # a subset of a memory-mapped split
            data, rows = data.base, data.index
        if isinstance(data, np.memmap) and isinstance(data.base, mmap.mmap) and data.filename:
            state["arrays"] = (_MappedData(data), rows, self.arrays.num_frame, self.arrays.labels,
                               self.arrays.names)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        arrays = state["arrays"]
        if isinstance(arrays, tuple):
            mapped, rows, num_frame, labels, names = arrays
            data = mapped.open() if rows is None else RowView(mapped.open(), rows)
            state["arrays"] = SkeletonArrays(data, num_frame, labels, names)
        self.__dict__.update(state)


class _MappedData:
    """How to re-open a read-only memory-mapped array (file, offset, dtype, shape)."""

    def __init__(self, data: np.memmap):
        self.filename = str(data.filename)
        self.offset = int(data.offset)
        self.dtype = data.dtype
        self.shape = tuple(data.shape)
        self.order = "F" if data.flags.f_contiguous and not data.flags.c_contiguous else "C"

    def open(self) -> np.memmap:
        return np.memmap(self.filename, dtype=self.dtype, mode="r", offset=self.offset,
                         shape=self.shape, order=self.order)


class PretrainDataset(_SkeletonDataset):
    """Two CMD-augmented joint views of each clip.

    Item ``i`` is ``(view_q, view_k, i)``: two float32 tensors ``(C, window, V, M)``
    and the index. Batched by a DataLoader: ``(N, C, window, V, M)`` twice and ``(N,)``.
    """

    def __init__(
        self,
        arrays: SkeletonArrays,
        aug_cfg: AugmentConfig,
        window: int,
        seed: int = 0,
        max_frames: int = 300,
    ):
        super().__init__(arrays, seed, max_frames)
        self.augment = PretrainAugment(aug_cfg, window)
        self.window = window

    @classmethod
    def from_config(cls, arrays: SkeletonArrays, cfg: ExperimentConfig) -> "PretrainDataset":
        """The pretraining dataset of ``cfg`` (window, frame limit, augmentations, seed)."""
        return cls(arrays, cfg.augment, cfg.data.window, cfg.pretrain.seed, cfg.data.max_frames)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        clip, n = self.clip(index)
        rng = self.item_rng(index)
        view_q = self.augment(clip, n, rng)
        view_k = self.augment(clip, n, rng)
        return torch.from_numpy(view_q), torch.from_numpy(view_k), int(index)


class EvalDataset(_SkeletonDataset):
    """One cropped clip and its label, for linear/kNN/semi-supervised evaluation.

    ``mode="test"``: centre crop ``crop_ratio`` (deterministic; features, testing).
    ``mode="train"``: random crop with ratio ``~ U(crop_range)`` (classifier training).
    Item ``i`` is ``(clip (C, window, V, M) float32 tensor, label int)``.
    """

    MODES = ("test", "train")

    def __init__(
        self,
        arrays: SkeletonArrays,
        window: int,
        mode: str = "test",
        crop_ratio: float = 0.95,
        crop_range: Sequence[float] = (0.5, 1.0),
        seed: int = 0,
        max_frames: int = 300,
    ):
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        super().__init__(arrays, seed, max_frames)
        self.window = window
        self.mode = mode
        self.crop_ratio = float(crop_ratio)
        self.crop_range = (float(crop_range[0]), float(crop_range[1]))

    @classmethod
    def from_config(cls, arrays: SkeletonArrays, cfg: ExperimentConfig, mode: str = "test") -> "EvalDataset":
        """The evaluation dataset of ``cfg`` (window, frame limit, crops, eval seed)."""
        return cls(arrays, cfg.data.window, mode, cfg.eval.test_crop_ratio,
                   cfg.eval.train_crop_range, cfg.eval.seed, cfg.data.max_frames)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        clip, n = self.clip(index)
        if self.mode == "test":
            view = center_crop_resize(clip, n, self.crop_ratio, self.window)
        else:
            view = random_crop_resize(clip, n, self.crop_range, self.window, rng=self.item_rng(index))
        return torch.from_numpy(view), int(self.arrays.labels[index])


# ----------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------


class EpochShuffleSampler(Sampler[int]):
    """A random permutation of ``range(n)`` that depends only on ``(seed, epoch)``."""

    def __init__(self, n: int, seed: int):
        self.n = n
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        generator = torch.Generator().manual_seed(_mix_seed(self.seed, self.epoch))
        return iter(torch.randperm(self.n, generator=generator).tolist())

    def __len__(self) -> int:
        return self.n


def _mix_seed(seed: int, epoch: int) -> int:
    """A 63-bit torch seed from ``(seed, epoch)``, decorrelated by NumPy's SeedSequence."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def resolve_num_workers(num_workers: int) -> int:
    """``num_workers`` as given, or ``min(cpu_count, 8)`` for ``-1``."""
    if num_workers == -1:
        return min(os.cpu_count() or 1, 8)
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0 or -1 (auto), got {num_workers}")
    return num_workers


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    drop_last: bool = False,
    seed: int = 0,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader over ``dataset`` whose order depends only on ``(seed, epoch)``.

    ``num_workers``: 0 reads in the main process, -1 picks ``min(cpu_count, 8)``.
    Workers are not persistent, so each epoch's workers see the current epoch;
    call :func:`set_epoch` on the loader before every epoch.
    """
    workers = resolve_num_workers(num_workers)
    sampler = EpochShuffleSampler(len(dataset), seed) if shuffle else None
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, shuffle=False, drop_last=drop_last,
        num_workers=workers, pin_memory=pin_memory, persistent_workers=False,
    )


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Set ``epoch`` on the loader's sampler and dataset (shuffle order and views)."""
    for part in (loader.sampler, loader.dataset):
        if hasattr(part, "set_epoch"):
            part.set_epoch(epoch)
