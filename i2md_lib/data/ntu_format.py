"""The NTU RGB+D ``.skeleton`` text format, sample names, split rules and missing lists.

File grammar (one record per line, whitespace-separated, CRLF allowed)::

    <numFrames>
    repeat numFrames times:
      <numBodies>
      repeat numBodies times:
        <bodyID:int64> <clippedEdges> <handLeftConfidence> <handLeftState>
            <handRightConfidence> <handRightState> <isRestricted> <leanX> <leanY> <trackingState>
        <numJoints = 25>
        repeat 25 times:
          <x> <y> <z> <depthX> <depthY> <colorX> <colorY> <orientW> <orientX> <orientY> <orientZ> <trackingState>

``x y z`` are Kinect-v2 camera coordinates in metres; a value beyond
:data:`MAX_ABS_COORDINATE` is refused as impossible. Bodies carry no slot number:
the CMD reference (and :meth:`SkeletonFile.dense`) reads them *by position* in the frame.
The parser checks that every line of the file is consumed; any problem raises
:class:`SkeletonFormatError` naming the file and the 1-based line.

Sample names read ``SsssCcccPpppRrrrAaaa`` (setup, camera, performer, replication,
action); the label is ``action - 1``. Splits: ``xsub`` trains on the 53 performers of
:data:`TRAINING_SUBJECTS`, ``xview`` on cameras 2 and 3, ``xset`` on even setups.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..skeleton import NUM_JOINTS
from ..utils import atomic_write
from . import store
from .store import DataFormatError

#: printf format of every float written by :func:`write_skeleton`: 7 significant digits,
#: the precision of the released files. A file written once round-trips exactly.
FLOAT_FORMAT = "%.7g"

BODY_INFO_FIELDS: tuple[str, ...] = (
    "bodyID", "clippedEdges", "handLeftConfidence", "handLeftState", "handRightConfidence",
    "handRightState", "isRestricted", "leanX", "leanY", "trackingState",
)
JOINT_FIELDS: tuple[str, ...] = (
    "x", "y", "z", "depthX", "depthY", "colorX", "colorY",
    "orientationW", "orientationX", "orientationY", "orientationZ", "trackingState",
)
# Columns of SkeletonFile.body_info (the info line without bodyID) that are integers.
_BODY_INFO_INT_COLUMNS = (0, 1, 2, 3, 4, 5, 8)
_JOINT_INT_COLUMNS = (11,)
_NUM_INFO = len(BODY_INFO_FIELDS) - 1
_NUM_JOINT_FIELDS = len(JOINT_FIELDS)
_MAX_BODY_ID = 2**64 - 1
#: Largest ``|x|``, ``|y|``, ``|z|`` (metres) a parser accepts, the bound of the stored splits
#: (:data:`.store.MAX_ABS_COORDINATE`, 100 m). Kinect v2 tracks bodies up to about 4.5 m away;
#: anything beyond is not a position but a corrupt value (1e39 would even overflow the float32
#: arrays to inf).
MAX_ABS_COORDINATE = store.MAX_ABS_COORDINATE


class SkeletonFormatError(DataFormatError):
    """A ``.skeleton`` (or PKU-MMD text) file breaks its grammar; names file and line."""

    def __init__(self, path: str | Path, line: int | None, problem: str) -> None:
        self.path, self.line, self.problem = str(path), line, problem
        where = f"{path}, line {line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")


class NtuNameError(ValueError):
    """A string is not a valid NTU RGB+D sample name."""


# --------------------------------------------------------------------------- parse / write
@dataclass(eq=False)
class SkeletonFile:
    """The content of one ``.skeleton`` file; bodies are stored flat in file order.

    Attributes:
        bodies_per_frame: ``(T,)`` int64, bodies listed in each frame (0 for an empty frame).
        body_ids: ``(B,)`` uint64 Kinect tracking IDs, ``B = bodies_per_frame.sum()``.
        body_info: ``(B, 9)`` float64, the info-line fields after ``bodyID``
            (``BODY_INFO_FIELDS[1:]``; integer fields hold integral values).
        joints: ``(B, 25, 12)`` float64, every field of every joint line (``JOINT_FIELDS``).
        path: the file it was read from, if any.
    """

    bodies_per_frame: np.ndarray
    body_ids: np.ndarray
    body_info: np.ndarray
    joints: np.ndarray
    path: Path | None = None

    def __post_init__(self) -> None:
        b = int(np.sum(self.bodies_per_frame))
        if self.body_ids.shape != (b,) or self.body_info.shape != (b, _NUM_INFO) \
                or self.joints.shape != (b, NUM_JOINTS, _NUM_JOINT_FIELDS):
            raise ValueError(
                f"inconsistent SkeletonFile: {b} bodies by frame count, ids {self.body_ids.shape}, "
                f"info {self.body_info.shape}, joints {self.joints.shape}"
            )

    @property
    def num_frames(self) -> int:
        return len(self.bodies_per_frame)

    @property
    def xyz(self) -> np.ndarray:
        """``(B, 25, 3)`` camera coordinates of every body, file order."""
        return self.joints[..., :3]

    @property
    def frame_of_body(self) -> np.ndarray:
        """``(B,)`` frame index of each body."""
        return np.repeat(np.arange(self.num_frames), self.bodies_per_frame)

    @property
    def slot_of_body(self) -> np.ndarray:
        """``(B,)`` position of each body inside its frame (0 = listed first)."""
        starts = np.cumsum(self.bodies_per_frame) - self.bodies_per_frame
        return np.arange(len(self.body_ids)) - np.repeat(starts, self.bodies_per_frame)

    def bodies_in_frame(self, t: int) -> slice:
        """Slice of the flat body arrays that belongs to frame ``t``."""
        start = int(np.sum(self.bodies_per_frame[:t]))
        return slice(start, start + int(self.bodies_per_frame[t]))

    def dense(self, max_bodies: int | None = None) -> np.ndarray:
        """``(T, M, 25, 3)`` xyz with bodies placed by their position in the frame.

        ``M`` is ``max_bodies`` (bodies listed later are dropped, as CMD's
        ``max_body_kinect = 4``) or the largest body count of any frame. Absent
        bodies are zeros.
        """
        m = int(self.bodies_per_frame.max(initial=0)) if max_bodies is None else max_bodies
        out = np.zeros((self.num_frames, m, NUM_JOINTS, 3), dtype=np.float64)
        slot = self.slot_of_body
        keep = slot < m
        out[self.frame_of_body[keep], slot[keep]] = self.xyz[keep]
        return out

    @classmethod
    def from_dense(
        cls, xyz: np.ndarray, body_ids: Iterable[int] | None = None, present: np.ndarray | None = None
    ) -> "SkeletonFile":
        """Build a file from ``(T, M, 25, 3)`` xyz; slot ``m`` of every frame gets ``body_ids[m]``.

        A body is listed in frame ``t`` where ``present[t, m]`` (default: any non-zero
        coordinate). Fields other than xyz are zero, except both tracking states = 2.
        """
        xyz = np.asarray(xyz, dtype=np.float64)
        if xyz.ndim != 4 or xyz.shape[2:] != (NUM_JOINTS, 3):
            raise ValueError(f"xyz must be (T, M, 25, 3), got {xyz.shape}")
        t, m = xyz.shape[:2]
        ids = np.asarray(list(body_ids) if body_ids is not None
                         else [72057594037927936 + i for i in range(m)], dtype=np.uint64)
        if ids.shape != (m,):
            raise ValueError(f"need {m} body ids, got {ids.shape[0]}")
        if present is None:
            present = (xyz != 0).any(axis=(2, 3))
        present = np.asarray(present, dtype=bool)
        frame_idx, slot_idx = np.nonzero(present)  # row-major: frame by frame, slots in order
        joints = np.zeros((len(frame_idx), NUM_JOINTS, _NUM_JOINT_FIELDS))
        joints[..., :3] = xyz[frame_idx, slot_idx]
        joints[..., 11] = 2
        info = np.zeros((len(frame_idx), _NUM_INFO))
        info[:, 8] = 2
        return cls(present.sum(axis=1).astype(np.int64), ids[slot_idx], info, joints)


def read_skeleton(path: str | Path) -> SkeletonFile:
    """Parse one ``.skeleton`` file (grammar in the module docstring).

    Raises:
        FileNotFoundError: no such file.
        SkeletonFormatError: truncated file, wrong counts, a joint count other than 25,
            non-numeric or non-finite values, or lines left over after the last frame.
    """
    path = Path(path)
    lines = path.read_bytes().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the terminator of the last line is not a line
    if not lines:
        raise SkeletonFormatError(path, None, "empty file (expected the frame count on line 1)")
    reader = _LineReader(path, lines)

    num_frames = reader.count(0, "the frame count")
    if num_frames > len(lines) - 1:   # every frame needs at least its body-count line
        raise SkeletonFormatError(path, 1, f"the file declares {num_frames} frames but has only "
                                           f"{len(lines) - 1} line(s) after the frame count")
    bodies_per_frame = np.zeros(num_frames, dtype=np.int64)
    body_ids: list[int] = []
    info_rows: list[list[bytes]] = []
    joint_starts: list[int] = []  # 0-based index of each body's first joint line
    i = 1
    for t in range(num_frames):
        nb = reader.count(i, f"the body count of frame {t + 1}")
        bodies_per_frame[t] = nb
        i += 1
        for b in range(nb):
            where = f"body {b + 1} of frame {t + 1}"
            fields = reader.fields(i, _NUM_INFO + 1, f"the info line of {where}")
            if not fields[0].isdigit() or len(fields[0]) > 20 or int(fields[0]) > _MAX_BODY_ID:
                raise SkeletonFormatError(path, i + 1, f"bodyID of {where} must be an unsigned "
                                                       f"64-bit integer, got {fields[0]!r}")
            body_ids.append(int(fields[0]))
            info_rows.append(fields[1:])
            nj = reader.count(i + 1, f"the joint count of {where}")
            if nj != NUM_JOINTS:
                raise SkeletonFormatError(path, i + 2, f"{where} has {nj} joints; NTU files have {NUM_JOINTS}")
            first_missing = len(lines) - (i + 2)  # 0-based joint that would lie past the end
            if first_missing < NUM_JOINTS:
                reader.require(len(lines), f"joint {first_missing + 1} of {where}")
            joint_starts.append(i + 2)
            i += 2 + NUM_JOINTS
    if i != len(lines):
        raise SkeletonFormatError(path, i + 1, f"{len(lines) - i} line(s) left after the last of "
                                               f"{num_frames} frames (expected end of file)")

    info = _to_floats(path, info_rows, [s - 2 for s in joint_starts], "body info")
    joint_lines = [ln for s in joint_starts for ln in lines[s:s + NUM_JOINTS]]
    joints = _parse_joint_lines(path, lines, joint_starts, joint_lines)
    _check_values(path, info, [s - 2 for s in joint_starts], 1, _BODY_INFO_INT_COLUMNS, "body info")
    joint_line_index = [s + j for s in joint_starts for j in range(NUM_JOINTS)]
    _check_values(path, joints.reshape(-1, _NUM_JOINT_FIELDS), joint_line_index, 0, _JOINT_INT_COLUMNS, "joint")
    check_coordinates(path, joints.reshape(-1, _NUM_JOINT_FIELDS)[:, :3], joint_line_index, "joint")
    return SkeletonFile(bodies_per_frame, np.array(body_ids, dtype=np.uint64), info,
                        joints.reshape(-1, NUM_JOINTS, _NUM_JOINT_FIELDS), path)


def write_skeleton(path: str | Path, skeleton: SkeletonFile, newline: str = "\n") -> Path:
    """Write ``skeleton`` in the exact ``.skeleton`` grammar (atomically).

    Floats use :data:`FLOAT_FORMAT` (7 significant digits); integer fields are written
    as integers. ``newline="\\r\\n"`` writes Windows line endings like the released files.
    """
    int_info = set(_BODY_INFO_INT_COLUMNS)
    info_fmt = " ".join(["%d"] + ["%d" if c in int_info else FLOAT_FORMAT for c in range(_NUM_INFO)])
    joint_fmt = " ".join("%d" if c in _JOINT_INT_COLUMNS else FLOAT_FORMAT
                         for c in range(_NUM_JOINT_FIELDS))
    out = [str(skeleton.num_frames)]
    b = 0
    joints = skeleton.joints.tolist()
    info = skeleton.body_info.tolist()
    for nb in skeleton.bodies_per_frame.tolist():
        out.append(str(nb))
        for _ in range(nb):
            # %d of a Python int keeps all 64 bits of the ID
            out.append(info_fmt % (int(skeleton.body_ids[b]), *info[b]))
            out.append(str(NUM_JOINTS))
            out.extend(joint_fmt % tuple(row) for row in joints[b])
            b += 1
    text = newline.join(out) + newline
    return atomic_write(path, lambda p: p.write_bytes(text.encode("ascii")))


class _LineReader:
    """Index-checked access to the lines of one file, with line-numbered errors."""

    def __init__(self, path: Path, lines: list[bytes]) -> None:
        self.path, self.lines = path, lines

    def require(self, i: int, what: str) -> None:
        if i >= len(self.lines):
            raise SkeletonFormatError(self.path, len(self.lines),
                                      f"file ends after line {len(self.lines)}, expected {what} on line {i + 1}")

    def fields(self, i: int, n: int, what: str) -> list[bytes]:
        self.require(i, what)
        fields = self.lines[i].split()
        if len(fields) != n:
            raise SkeletonFormatError(self.path, i + 1, f"expected {n} value(s) for {what}, found {len(fields)}")
        return fields

    def count(self, i: int, what: str) -> int:
        (token,) = self.fields(i, 1, what)
        if not token.isdigit() or len(token) > 18:
            raise SkeletonFormatError(self.path, i + 1, f"{what} must be a non-negative integer below "
                                                        f"10**18, got {token[:40]!r}")
        return int(token)


def _to_floats(path: Path, rows: list[list[bytes]], line_index: list[int], what: str) -> np.ndarray:
    """``(R, F)`` float64 from rows of byte tokens; bad tokens raise with their line."""
    if not rows:
        return np.zeros((0, _NUM_INFO))
    try:
        return np.array(rows, dtype=np.float64)
    except ValueError:
        for row, i in zip(rows, line_index):
            for tok in row:
                try:
                    float(tok)
                except ValueError:
                    raise SkeletonFormatError(path, i + 1, f"{what} value {tok!r} is not a number") from None
        raise


def _parse_joint_lines(path: Path, lines: list[bytes], starts: list[int], joint_lines: list[bytes]) -> np.ndarray:
    """``(B*25, 12)`` float64 via numpy's C parser; on failure find the bad line."""
    if not joint_lines:
        return np.zeros((0, _NUM_JOINT_FIELDS))
    try:
        values = np.loadtxt(joint_lines, dtype=np.float64, ndmin=2, comments=None)
        if values.shape == (len(joint_lines), _NUM_JOINT_FIELDS):
            return values
    except ValueError:
        pass
    for s in starts:  # slow path, only to name the offending line
        for i in range(s, s + NUM_JOINTS):
            check_number_line(path, i + 1, lines[i], _NUM_JOINT_FIELDS,
                              f"a joint line needs {_NUM_JOINT_FIELDS} values", "joint value")
    raise SkeletonFormatError(path, None, "joint lines could not be parsed")  # pragma: no cover


def check_number_line(path: Path, line_no: int, line: str | bytes, expected: int, need: str,
                      what: str = "value") -> None:
    """Raise :class:`SkeletonFormatError` at ``line_no`` unless ``line`` holds ``expected`` numbers.

    ``need`` starts the message about a wrong count (``"<need>, found <n>"``), ``what``
    names a value that is not a number. Used on the slow path that locates a bad line.
    """
    fields = line.split()
    if len(fields) != expected:
        raise SkeletonFormatError(path, line_no, f"{need}, found {len(fields)}")
    for tok in fields:
        try:
            float(tok)
        except ValueError:
            raise SkeletonFormatError(path, line_no, f"{what} {tok!r} is not a number") from None


def check_coordinates(path: Path, xyz: np.ndarray, line_index: Sequence[int], what: str) -> None:
    """Raise :class:`SkeletonFormatError` at the first ``|coordinate| > MAX_ABS_COORDINATE``
    of ``xyz (R, 3)``, whose row ``r`` sits on the 0-based line ``line_index[r]``."""
    bad = ~(np.abs(xyz) <= MAX_ABS_COORDINATE)       # NaN counts as bad too
    if bad.any():
        r, c = np.argwhere(bad)[0]
        line = int(line_index[r]) + 1
        raise SkeletonFormatError(path, int(line), f"{what} coordinate {'xyz'[c % 3]} = {xyz[r, c]:g} "
                                                   f"is not a position in metres (|value| <= "
                                                   f"{MAX_ABS_COORDINATE:g})")


def _check_values(path: Path, values: np.ndarray, line_index: list[int], first_col: int,
                  int_columns: tuple[int, ...], what: str) -> None:
    """Reject NaN/inf anywhere and non-integral values in integer columns."""
    bad = ~np.isfinite(values)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise SkeletonFormatError(path, line_index[r] + 1,
                                  f"{what} field {c + 1 + first_col} is {values[r, c]} (must be finite)")
    ints = values[:, list(int_columns)]
    frac = ints != np.round(ints)
    if frac.any():
        r, c = np.argwhere(frac)[0]
        raise SkeletonFormatError(path, line_index[r] + 1,
                                  f"{what} field {int_columns[c] + 1 + first_col} must be an integer, "
                                  f"got {ints[r, c]}")


# --------------------------------------------------------------------------- names and splits
_NAME_RE = re.compile(r"S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})")

#: xsub training performers (the NTU-120 list; on NTU-60 it gives the NTU-60 split).
TRAINING_SUBJECTS: frozenset[int] = frozenset({
    1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38,
    45, 46, 47, 49, 50, 52, 53, 54, 55, 56, 57, 58, 59, 70, 74, 78, 80, 81, 82,
    83, 84, 85, 86, 89, 91, 92, 93, 94, 95, 97, 98, 100, 103,
})
TRAINING_CAMERAS: frozenset[int] = frozenset({2, 3})  # xview; camera 1 is the test view


@dataclass(frozen=True)
class NtuVersion:
    """The ID ranges of one NTU release."""

    name: str
    max_setup: int
    max_subject: int
    num_classes: int
    benchmarks: tuple[str, ...]


VERSIONS: dict[str, NtuVersion] = {
    "ntu60": NtuVersion("ntu60", 17, 40, 60, ("xsub", "xview")),
    "ntu120": NtuVersion("ntu120", 32, 106, 120, ("xsub", "xset")),
}


@dataclass(frozen=True)
class NtuName:
    """Fields of ``SsssCcccPpppRrrrAaaa`` (all 1-based as in the name)."""

    setup: int
    camera: int
    subject: int
    replication: int
    action: int

    @property
    def label(self) -> int:
        """0-based class index (``action - 1``)."""
        return self.action - 1

    def __str__(self) -> str:
        return (f"S{self.setup:03d}C{self.camera:03d}P{self.subject:03d}"
                f"R{self.replication:03d}A{self.action:03d}")


def parse_name(name: str | Path) -> NtuName:
    """Parse a sample name, a file name (``.skeleton`` is dropped) or a path.

    >>> parse_name("S001C002P003R002A013").label
    12
    """
    stem = Path(str(name)).name
    if stem.endswith(".skeleton"):
        stem = stem[: -len(".skeleton")]
    m = _NAME_RE.fullmatch(stem)
    if m is None:
        raise NtuNameError(f"{name!r} is not an NTU RGB+D sample name "
                           f"(expected SsssCcccPpppRrrrAaaa, e.g. S001C002P003R002A013)")
    parsed = NtuName(*(int(g) for g in m.groups()))
    limits = VERSIONS["ntu120"]
    checks = (("setup", parsed.setup, limits.max_setup), ("camera", parsed.camera, 3),
              ("performer", parsed.subject, limits.max_subject), ("replication", parsed.replication, 2),
              ("action", parsed.action, limits.num_classes))
    for what, value, top in checks:
        if not 1 <= value <= top:
            raise NtuNameError(f"{name!r}: unknown {what} {value} (NTU RGB+D uses 1..{top})")
    return parsed


def in_version(name: str | NtuName, version: str) -> bool:
    """Whether the sample belongs to ``version`` (``ntu60``: S001-S017, P001-P040, A001-A060)."""
    n = name if isinstance(name, NtuName) else parse_name(name)
    v = _version(version)
    return n.setup <= v.max_setup and n.subject <= v.max_subject and n.action <= v.num_classes


def is_training(name: str | NtuName, benchmark: str) -> bool:
    """Training-part membership under ``benchmark`` (``xsub``, ``xview`` or ``xset``)."""
    n = name if isinstance(name, NtuName) else parse_name(name)
    if benchmark == "xsub":
        return n.subject in TRAINING_SUBJECTS
    if benchmark == "xview":
        return n.camera in TRAINING_CAMERAS
    if benchmark == "xset":
        return n.setup % 2 == 0
    raise ValueError(f"unknown NTU benchmark {benchmark!r}; choose xsub, xview or xset")


def _version(version: str) -> NtuVersion:
    if version not in VERSIONS:
        raise ValueError(f"unknown NTU version {version!r}; choose one of {', '.join(VERSIONS)}")
    return VERSIONS[version]


@lru_cache(maxsize=None)
def _resource_lines(filename: str) -> tuple[str, ...]:
    text = resources.files(__package__).joinpath("resources", filename).read_text(encoding="utf-8")
    return tuple(s for s in (ln.strip() for ln in text.splitlines()) if s and not s.startswith("#"))


def missing_samples(version: str) -> frozenset[str]:
    """Names the dataset authors list as having missing/incomplete skeletons (302 / 535)."""
    return frozenset(_resource_lines(f"{_version(version).name}_missing_skeletons.txt"))


def class_names(version: str) -> tuple[str, ...]:
    """Official action names; ``class_names(v)[label]`` (60 for ``ntu60``, 120 for ``ntu120``)."""
    return _resource_lines("ntu120_class_names.txt")[: _version(version).num_classes]
