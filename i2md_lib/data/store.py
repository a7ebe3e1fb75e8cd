"""Read and write a split in the CMD on-disk layout.

One split ("train" or "val") of one benchmark folder is three files::

    {part}_data_joint.npy   float32 (N, C=3, T, V, M), V and M of the dataset's skeleton layout
                            (NTU/PKU: 25 joints, 2 bodies; MSR Action3D: 20, 1); frames after num_frame are
                            padding (CMD repeats the clip there) and are never read
    {part}_num_frame.npy    int     (N,) valid frames of each clip
    {part}_label.pkl        pickle of (sample_names: list[str], labels: list[int], 0-based)

This is exactly what the CMD reference's ``data_gen`` writes, so users who already
preprocessed NTU/PKU-MMD with it can point ``DataConfig.root`` at that folder.

A downloaded folder is data, never code: :func:`read_labels` unpickles with
:class:`LabelUnpickler`, which builds nothing but lists, tuples, strings and integers
(numpy integer scalars included). :func:`load_split` then checks the split with
:func:`validate_split`, the one check every loader goes through (NTU, PKU-MMD, the
synthetic data): joints and body slots of the layout, frame counts within ``[1, T]``,
labels within ``[0, number of classes)``, and finite coordinates within
:data:`MAX_ABS_COORDINATE` metres in the valid frames (once per file and process, a
chunk of clips at a time). Each failure is one :class:`DataFormatError` line naming the
file, the clip (index and name) and the problem.

One exception to ``num_frame <= T``, for folders written by the CMD reference: its
PKU-MMD ``data_gen`` cuts clips at ``T = 300`` frames but stores the uncut length, so
with ``T ==`` :data:`CMD_FRAMES` a longer count is read as ``T`` (the number of such
clips is logged); with any other ``T`` it is refused.
"""
from __future__ import annotations

import codecs
import io
import logging
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..skeleton import NTU25, Layout
from ..utils import atomic_write

PARTS = ("train", "val")
#: Largest ``|coordinate|`` (metres) a split may hold in the valid frames of a clip. Kinect v2
#: tracks bodies up to about 4.5 m away and a normalised clip is centred on its body, so real
#: data stays within ~10 m; 100 m leaves room for any other sensor, while values such as 1e30
#: (a corrupt file, or units other than metres) are refused. The raw-file parsers use it too.
MAX_ABS_COORDINATE = 100.0
#: ``T`` of the CMD layout; the CMD reference's PKU-MMD ``data_gen`` cuts clips to it.
CMD_FRAMES = 300
#: Joints and body slots of the NTU layout (the defaults of :func:`validate_split`).
#: Joints and body slots a split has when no layout is given: NTU's (``skeleton.NTU25``).
DEFAULT_JOINTS, DEFAULT_BODIES = NTU25.num_joints, NTU25.num_bodies

log = logging.getLogger(__name__)


class DataFormatError(ValueError):
    """A data file exists but is not what the layout promises (names the file)."""


@dataclass
class SkeletonArrays:
    """One split in memory (``data`` may be a read-only memory map).

    Attributes:
        data: ``(N, 3, T, V, M)`` float32 joint coordinates (NTU: ``V=25, M=2``).
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
    bad = first_bad_clip(arrays.data, arrays.num_frame)
    if bad is not None:
        raise DataFormatError(f"{paths['data']}: not written, clip {bad[0]} ({arrays.names[bad[0]]}) {bad[1]}")
    # np.save appends .npy to names without it, and the temporary names end in .tmp,
    # so write through open file handles.
    atomic_write(paths["data"], lambda p: _save_npy(p, np.asarray(arrays.data, dtype=np.float32)))
    atomic_write(paths["num_frame"], lambda p: _save_npy(p, np.asarray(arrays.num_frame, dtype=np.int64)))
    atomic_write(paths["label"], lambda p: p.write_bytes(
        pickle.dumps((list(arrays.names), [int(x) for x in arrays.labels]))))


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, array, allow_pickle=False)


def load_split(folder: str | Path, part: str, mmap: bool = True, num_classes: int | None = None,
               joints: int | Sequence[int] = DEFAULT_JOINTS, bodies: int = DEFAULT_BODIES,
               layout: Layout | None = None) -> SkeletonArrays:
    """Load ``part`` from ``folder``; ``mmap`` maps the big array instead of reading it.

    The split is checked by :func:`validate_split` with ``num_classes`` (``None``: labels
    only need to be >= 0), ``joints`` (one count or the counts allowed) and ``bodies``; a
    ``layout`` (``skeleton.Layout``) gives both counts instead.

    Raises:
        FileNotFoundError: a file is missing (the message names it).
        DataFormatError: a file is unreadable, inconsistent, fails :func:`validate_split` or
            holds a label pickle with anything but names and integer labels (the message names it).
    """
    paths = split_paths(folder, part)
    for key, path in paths.items():
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing {key} file of the {part!r} split")
    try:
        data = np.load(paths["data"], mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise DataFormatError(f"{paths['data']}: not a readable .npy array ({e})") from e
    if data.ndim != 5 or data.shape[1] != 3:
        raise DataFormatError(f"{paths['data']}: expected shape (N, 3, T, V, M), got {data.shape}")
    if data.dtype.kind != "f":
        raise DataFormatError(f"{paths['data']}: expected float coordinates, got dtype {data.dtype}")
    num_frame = _read_frame_counts(paths["num_frame"])
    names, labels = read_labels(paths["label"])
    if len(num_frame) != len(data) or len(labels) != len(data) or len(names) != len(data):
        raise DataFormatError(
            f"{folder}: {part} split has {len(data)} clips but {len(num_frame)} frame counts "
            f"and {len(labels)} labels / {len(names)} names"
        )
    if data.shape[2] == CMD_FRAMES and (num_frame > CMD_FRAMES).any():   # the CMD reference's PKU-MMD folders
        log.info("%s: %d clip(s) count more frames than the %d stored (a CMD reference PKU-MMD folder "
                 "stores the uncut length): read as %d", paths["num_frame"], int((num_frame > CMD_FRAMES).sum()),
                 CMD_FRAMES, CMD_FRAMES)
        num_frame = np.minimum(num_frame, CMD_FRAMES)
    arrays = SkeletonArrays(data, num_frame, labels, names)
    if layout is not None:
        joints, bodies = layout.num_joints, layout.num_bodies
    validate_split(arrays, paths, num_classes, joints, bodies)
    return arrays


def _read_frame_counts(path: Path) -> np.ndarray:
    """``(N,)`` int64 frame counts; integral floats are accepted, anything else is refused."""
    try:
        counts = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise DataFormatError(f"{path}: not a readable .npy array ({e})") from e
    if counts.ndim != 1:
        raise DataFormatError(f"{path}: expected a 1-D array of frame counts, got shape {counts.shape}")
    if counts.dtype.kind == "f" and not (np.isfinite(counts).all() and (counts == np.round(counts)).all()):
        raise DataFormatError(f"{path}: frame counts must be whole numbers, found non-integral or NaN values")
    if counts.dtype.kind not in "iuf":
        raise DataFormatError(f"{path}: frame counts must be integers, got dtype {counts.dtype}")
    if len(counts) and counts.min() < 0:
        raise DataFormatError(f"{path}: negative frame count {counts.min()} at clip {int(counts.argmin())}")
    return counts.astype(np.int64)


# -- labels: a restricted unpickler ---------------------------------------------------
class LabelUnpickler(pickle.Unpickler):
    """Unpickles a CMD label file and nothing else.

    Plain containers, strings and integers need no code at all; the only callables it
    lets a pickle reach are numpy's integer scalars (``numpy.int64(3)`` pickles as
    ``numpy.core.multiarray.scalar(dtype('int64'), b'...')``) and the ``_codecs.encode``
    that protocol-2 pickles use for those bytes, each wrapped so that it accepts only
    what those pickles pass. Any other global is refused, so a crafted file runs nothing.
    """

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SCALAR_GLOBALS:
            return _integer_scalar
        if (module, name) == ("numpy", "dtype"):
            return _integer_dtype
        if (module, name) == ("_codecs", "encode"):
            return _latin1_bytes
        raise _Refused(f"refusing to load {module}.{name}: a label file may hold only sample "
                       f"names and integer labels")


class _Refused(pickle.UnpicklingError):
    """A label pickle asked for something other than the CMD label structure."""


_SCALAR_GLOBALS = {("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")}


def _integer_dtype(spec: Any, align: Any = False, copy: Any = True) -> np.dtype:
    if not isinstance(spec, str) or spec[:1] not in ("i", "u") or not spec[1:].isdigit():
        raise _Refused(f"refusing numpy dtype {spec!r}: labels must be integers")
    return np.dtype(spec)


def _integer_scalar(dtype: Any, data: Any = b"") -> int:
    if isinstance(data, str):
        data = data.encode("latin1")       # a protocol-2 pickle written by Python 2
    if not isinstance(dtype, np.dtype) or dtype.kind not in "iu" or not isinstance(data, bytes) \
            or len(data) != dtype.itemsize:
        raise _Refused(f"refusing a numpy scalar of dtype {dtype!r}: labels must be integers")
    return int(np.frombuffer(data, dtype=dtype)[0])


def _latin1_bytes(text: Any, encoding: Any = "utf-8") -> bytes:
    if not isinstance(text, str) or codecs.lookup(str(encoding)).name != "iso8859-1":
        raise _Refused("refusing _codecs.encode other than latin-1 text to bytes")
    return text.encode("latin1")


def read_labels(path: str | Path) -> tuple[list[str], np.ndarray]:
    """``(names, labels (N,) int64)`` of a ``{part}_label.pkl`` file, through :class:`LabelUnpickler`.

    Raises:
        DataFormatError: not a pickle, a refused global (nothing was run), or not a
            ``(names, labels)`` pair of equal length with string names and integer labels.
    """
    path = Path(path)
    try:
        obj = LabelUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except _Refused as e:
        raise DataFormatError(f"{path}: {e}") from None
    except Exception as e:  # noqa: BLE001  (garbage makes pickle raise many types)
        raise DataFormatError(f"{path}: expected a pickled (names, labels) tuple "
                              f"({type(e).__name__}: {e})") from None
    if not isinstance(obj, (tuple, list)) or len(obj) != 2 \
            or not all(isinstance(x, (tuple, list)) for x in obj):
        raise DataFormatError(f"{path}: expected a pickled (names, labels) pair of lists, "
                              f"got {type(obj).__name__}")
    names, labels = obj
    bad_name = next((i for i, n in enumerate(names) if not isinstance(n, str)), None)
    if bad_name is not None:
        raise DataFormatError(f"{path}: sample name {bad_name} is a {type(names[bad_name]).__name__}, "
                              f"not a string")
    bad_label = next((i for i, y in enumerate(labels) if isinstance(y, bool) or not isinstance(y, int)), None)
    if bad_label is not None:
        raise DataFormatError(f"{path}: label {bad_label} is {labels[bad_label]!r}, not an integer")
    if len(names) != len(labels):
        raise DataFormatError(f"{path}: {len(names)} names but {len(labels)} labels")
    if labels and not all(-2**63 <= y < 2**63 for y in (min(labels), max(labels))):
        raise DataFormatError(f"{path}: labels must fit 64 bits, got {max(labels, key=abs)}")
    return list(names), np.asarray(labels, dtype=np.int64)


# -- the checks of a split ------------------------------------------------------------
_CHUNK_BYTES = 64 * 2**20            # coordinates checked at a time
_COORDINATES_CHECKED: set[tuple] = set()  # files found good in this process (path, inode, size, mtime, ...)


def validate_split(arrays: SkeletonArrays, files: Mapping[str, str | Path] | str | Path,
                   num_classes: int | None = None, joints: int | Sequence[int] = DEFAULT_JOINTS,
                   bodies: int = DEFAULT_BODIES, max_abs: float = MAX_ABS_COORDINATE) -> None:
    """Raise :class:`DataFormatError` at the first problem of a split, else return.

    Checks, in this order: ``data (N, 3, T, V, M)`` has ``V`` in ``joints`` and ``M == bodies``;
    every frame count is within ``[1, T]``; every label within ``[0, num_classes)`` (``>= 0``
    when ``num_classes`` is ``None``); the coordinates of every clip's valid frames are finite
    and within ``max_abs`` metres (:data:`MAX_ABS_COORDINATE`; the padding after ``num_frame``
    is never read).

    Args:
        arrays: the split.
        files: ``{"data", "num_frame", "label"}`` -> the file each part came from
            (:func:`split_paths`), or one name for all three (arrays built in memory).
        num_classes: the dataset's number of classes.
        joints: the layout's joint count, or the counts allowed.
        bodies: the layout's body slots per frame.

    Each message is one line naming the file, the clip (index and name) and the problem.
    A data file found good is not read again in this process while it stays the same.
    """
    where = {k: str(files) for k in ("data", "num_frame", "label")} if isinstance(files, (str, Path)) \
        else {k: str(v) for k, v in files.items()}
    data, num_frame, labels, names = arrays.data, np.asarray(arrays.num_frame), np.asarray(arrays.labels), arrays.names
    allowed = (joints,) if isinstance(joints, int) else tuple(joints)
    if data.shape[3] not in allowed:
        raise DataFormatError(f"{where['data']}: clips have {data.shape[3]} joints per body, the layout has "
                              f"{' or '.join(map(str, allowed))}; shape {tuple(data.shape)}")
    if data.shape[4] != bodies:
        raise DataFormatError(f"{where['data']}: clips have {data.shape[4]} body slot(s) per frame, the layout "
                              f"has {bodies}; shape {tuple(data.shape)} (re-create the split for this layout)")
    frames = data.shape[2]
    bad = np.flatnonzero((num_frame < 1) | (num_frame > frames))
    if len(bad):
        i = int(bad[0])
        raise DataFormatError(f"{where['num_frame']}: clip {i} ({names[i]}) has a frame count of "
                              f"{int(num_frame[i])}, outside [1, {frames}] (the stored frames T); "
                              f"{len(bad)} clip(s) in all")
    top = f"[0, {num_classes})" if num_classes is not None else "[0, ...)"
    bad = np.flatnonzero((labels < 0) | (labels >= (num_classes if num_classes is not None else np.inf)))
    if len(bad):
        i = int(bad[0])
        raise DataFormatError(f"{where['label']}: clip {i} ({names[i]}) has label {int(labels[i])}, outside "
                              f"{top} (labels are 0-based class indices); {len(bad)} clip(s) in all")
    check_coordinates(where["data"], data, num_frame, names, max_abs)


def check_coordinates(path: str | Path, data: np.ndarray, num_frame: np.ndarray, names: list[str] | None = None,
                      max_abs: float = MAX_ABS_COORDINATE) -> None:
    """Raise :class:`DataFormatError` naming ``path`` and the first clip with a NaN/inf value,
    or one beyond ``max_abs`` metres, in its ``num_frame`` valid frames.

    Reads ``data`` (a memory map, say) a chunk of clips at a time; a file found good
    is not read again in this process while its size and modification time stay the same.
    """
    key = None
    if os.path.isfile(path):
        stat = os.stat(path)
        key = (str(Path(path).resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns,
               hash(np.asarray(num_frame).tobytes()), max_abs)
        if key in _COORDINATES_CHECKED:
            return
    bad = first_bad_clip(data, num_frame, max_abs)
    if bad is not None:
        clip, problem = bad
        name = f" ({names[clip]})" if names is not None else ""
        raise DataFormatError(f"{path}: clip {clip}{name} {problem}; re-create the split from the raw files")
    if key is not None:
        _COORDINATES_CHECKED.add(key)


def first_bad_clip(data: np.ndarray, num_frame: np.ndarray, max_abs: float = MAX_ABS_COORDINATE
                   ) -> tuple[int, str] | None:
    """``(clip index, what is wrong)`` of the first clip of ``data (N, C, T, V, M)`` with a
    non-finite value, or one beyond ``max_abs``, in its first ``num_frame`` frames, or ``None``;
    reads a chunk of clips (about 64 MB) at a time."""
    row_bytes = max(1, int(np.prod(data.shape[1:])) * data.dtype.itemsize)
    step = max(1, _CHUNK_BYTES // row_bytes)
    frames = np.arange(data.shape[2])
    for start in range(0, len(data), step):
        chunk = np.asarray(data[start:start + step])
        valid = (frames[None, :] < np.asarray(num_frame[start:start + len(chunk)])[:, None])[:, None, :, None, None]
        bad = ~(np.abs(chunk) <= max_abs) & valid        # (n, C, T, V, M); NaN compares False
        bad_clips = bad.reshape(len(chunk), -1).any(axis=1)
        if bad_clips.any():
            row = int(np.argmax(bad_clips))
            values = chunk[row][bad[row]]
            non_finite = int((~np.isfinite(values)).sum())
            if non_finite:
                return start + row, f"holds {non_finite} NaN/inf coordinate(s)"
            return start + row, (f"holds {len(values)} coordinate(s) beyond {max_abs:g} m (first "
                                 f"{float(values[0]):g}): not positions in metres")
    return None
