"""Read and write a split in the CMD on-disk layout.

One split ("train" or "val") of one benchmark folder is three files::

    {part}_data_joint.npy   float32 (N, C=3, T, V=25, M=2); frames after num_frame are
                            padding (CMD repeats the clip there) and are never read
    {part}_num_frame.npy    int     (N,) valid frames of each clip
    {part}_label.pkl        pickle of (sample_names: list[str], labels: list[int], 0-based)

This is exactly what the CMD reference's ``data_gen`` writes, so users who already
preprocessed NTU/PKU-MMD with it can point ``DataConfig.root`` at that folder.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..utils import atomic_write

PARTS = ("train", "val")


class DataFormatError(ValueError):
    """A data file exists but is not what the layout promises (names the file)."""


@dataclass
class SkeletonArrays:
    """One split in memory (``data`` may be a read-only memory map).

    Attributes:
        data: ``(N, 3, T, 25, 2)`` float32 joint coordinates.
        num_frame: ``(N,)`` int64 number of valid frames per clip.
        labels: ``(N,)`` int64 0-based class indices.
        names: ``N`` sample names (e.g. ``S001C002P003R002A013``).
    """

    data: np.ndarray
    num_frame: np.ndarray
    labels: np.ndarray
    names: list[str]

    def __post_init__(self) -> None:
        n = len(self.data)
        if self.data.ndim != 5 or self.data.shape[1] != 3:
            raise DataFormatError(f"data must be (N, 3, T, V, M), got shape {self.data.shape}")
        if not (len(self.num_frame) == len(self.labels) == len(self.names) == n):
            raise DataFormatError(
                f"inconsistent split: {n} clips, {len(self.num_frame)} frame counts, "
                f"{len(self.labels)} labels, {len(self.names)} names"
            )

    def __len__(self) -> int:
        return len(self.data)

    def subset(self, index: np.ndarray) -> "SkeletonArrays":
        """The clips at ``index``.

        In-memory data is copied; memory-mapped data (a real dataset) is not: the
        subset reads its clips from the map when they are indexed (:class:`RowView`).
        """
        index = np.asarray(index, dtype=np.int64)
        if isinstance(self.data, (np.memmap, RowView)):
            data = RowView(self.data, index)
        else:
            data = np.ascontiguousarray(self.data[index])
        return SkeletonArrays(data, self.num_frame[index].copy(), self.labels[index].copy(),
                              [self.names[i] for i in index])


class RowView:
    """Rows ``index`` of a (memory-mapped) array, read only when indexed.

    Supports what the datasets do with clip arrays: ``len``, ``shape``, ``ndim``,
    ``dtype``, ``view[i]``, ``view[i, ...]`` and ``np.asarray(view)``.
    """

    def __init__(self, base: "np.ndarray | RowView", index: np.ndarray) -> None:
        if isinstance(base, RowView):            # a view of a view: compose the indices
            base, index = base.base, base.index[index]
        self.base, self.index = base, np.asarray(index, dtype=np.int64)
        self.shape = (len(self.index), *base.shape[1:])
        self.ndim, self.dtype = len(self.shape), base.dtype

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key):
        if isinstance(key, tuple):
            return self.base[(self.index[key[0]], *key[1:])]
        return self.base[self.index[key]]

    def __array__(self, dtype=None, copy=None):
        out = self.base[self.index]
        return out if dtype is None else out.astype(dtype)


def split_paths(folder: str | Path, part: str) -> dict[str, Path]:
    """The three file paths of ``part`` in ``folder``."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    folder = Path(folder)
    return {
        "data": folder / f"{part}_data_joint.npy",
        "num_frame": folder / f"{part}_num_frame.npy",
        "label": folder / f"{part}_label.pkl",
    }


def save_split(folder: str | Path, part: str, arrays: SkeletonArrays) -> None:
    """Write ``arrays`` as ``part`` in ``folder``; each file is written atomically."""
    paths = split_paths(folder, part)
    # np.save appends .npy to names without it, and the temporary names end in .tmp,
    # so write through open file handles.
    atomic_write(paths["data"], lambda p: _save_npy(p, np.asarray(arrays.data, dtype=np.float32)))
    atomic_write(paths["num_frame"], lambda p: _save_npy(p, np.asarray(arrays.num_frame, dtype=np.int64)))
    atomic_write(paths["label"], lambda p: p.write_bytes(
        pickle.dumps((list(arrays.names), [int(x) for x in arrays.labels]))))


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, array, allow_pickle=False)


def load_split(folder: str | Path, part: str, mmap: bool = True) -> SkeletonArrays:
    """Load ``part`` from ``folder``; ``mmap`` maps the big array instead of reading it.

    Raises:
        FileNotFoundError: a file is missing (the message names it).
        DataFormatError: a file is unreadable or inconsistent (the message names it).
    """
    paths = split_paths(folder, part)
    for key, path in paths.items():
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing {key} file of the {part!r} split")
    try:
        data = np.load(paths["data"], mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise DataFormatError(f"{paths['data']}: not a readable .npy array ({e})") from e
    if data.ndim != 5 or data.shape[1] != 3 or data.shape[3] != 25:
        raise DataFormatError(f"{paths['data']}: expected shape (N, 3, T, 25, M), got {data.shape}")
    try:
        num_frame = np.asarray(np.load(paths["num_frame"], allow_pickle=False), dtype=np.int64)
    except (ValueError, OSError) as e:
        raise DataFormatError(f"{paths['num_frame']}: not a readable .npy array ({e})") from e
    try:
        with open(paths["label"], "rb") as f:
            names, labels = pickle.load(f)
    except Exception as e:  # pickle raises many types on garbage
        raise DataFormatError(f"{paths['label']}: expected a pickled (names, labels) tuple ({e})") from e
    labels = np.asarray(labels, dtype=np.int64)
    if len(num_frame) != len(data) or len(labels) != len(data) or len(names) != len(data):
        raise DataFormatError(
            f"{folder}: {part} split has {len(data)} clips but {len(num_frame)} frame counts "
            f"and {len(labels)} labels / {len(names)} names"
        )
    if (labels < 0).any():
        raise DataFormatError(f"{paths['label']}: negative labels (labels must be 0-based)")
    num_frame = np.clip(num_frame, 1, data.shape[2])  # PKU quirk: stored length may exceed T
    return SkeletonArrays(data, num_frame, labels, [str(n) for n in names])
