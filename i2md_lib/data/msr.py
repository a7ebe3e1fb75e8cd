"""MSR Action3D skeleton files -> the CMD on-disk layout, with a report.

MSR Action3D (Li, Zhang and Liu, CVPR Workshops 2010) records 20 actions by 10 subjects, 2-3
repetitions each, with a Kinect v1: one body of 20 joints (:data:`skeleton.KINECT_V1_20`). Its
skeleton files are named ``aAA_sSS_eEE_skeleton3D.txt`` (action, subject, repetition) and hold
one joint per line, ``x y z confidence`` in metres, 20 lines a frame.

``prepare_msr(raw_dir, out_dir)`` writes ``out_dir/xsub/{train,val}_*`` and
``out_dir/xsub_val/{train,val}_*`` through the NTU writer (:class:`.ntu.CmdSplitWriter`):
``(N, 3, T, 20, 1)`` float32 clips normalised with the layout's joints, frame counts and
``(names, 0-based labels)``.

* ``xsub``: the standard cross-subject benchmark, odd subjects (1, 3, 5, 7, 9) train, even
  subjects test (the ``val`` part, as in every benchmark folder of the CMD layout).
* ``xsub_val``: the training subjects only, subject :data:`VAL_SUBJECT` held out as ``val``:
  every choice of settings is made here, never on the test subjects.

What real files hold, and what happens to it:

* blank lines are ignored (one release file has thousands); the confidence column is read and
  checked but not stored (the share of joints tracked with confidence 0 is in the report);
* a clip that is all zeros (no skeleton tracked) or has no frames is **skipped** and listed in the
  report with its reason, never padded into the data; a clip longer than ``max_frames`` is cut, with
  a note;
* a malformed file -- a line that is not four numbers, a value that is not finite, joint lines that
  do not fill whole frames -- stops the conversion with :class:`SkeletonFormatError`, one line that names
  the file and the line: the release is a fixed set of files, so a malformed one is a damaged copy.

``out_dir`` changes as a whole or not at all (:mod:`.output_folder`).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from ..skeleton import KINECT_V1_20
from .ntu import CmdSplitWriter, NothingToWriteError, PrepareReport, _progress, _save_report
from .ntu_format import SkeletonFormatError
from .output_folder import staged_folder
from .preprocess import select_bodies
from .store import PARTS

NUM_ACTIONS = 20
#: The actions of MSR Action3D in label order (action ``a01`` is label 0), as the dataset's authors list them.
ACTION_NAMES: tuple[str, ...] = (
    "high arm wave", "horizontal arm wave", "hammer", "hand catch", "forward punch", "high throw",
    "draw x", "draw tick", "draw circle", "hand clap", "two hand wave", "side boxing", "bend",
    "forward kick", "side kick", "jogging", "tennis swing", "tennis serve", "golf swing", "pick up and throw",
)
NUM_SUBJECTS = 10
#: Stored ``T``: the longest clip of the release has 196 frames.
MAX_FRAMES = 200
#: The training subject held out of ``xsub`` for the ``xsub_val`` benchmark.
VAL_SUBJECT = 9
BENCHMARKS = ("xsub", "xsub_val")
#: Values per line: x, y, z (metres) and the tracking confidence.
FIELDS = 4

_NAME = re.compile(r"a(\d{2})_s(\d{2})_e(\d{2})_skeleton3D\.txt")


@dataclass(frozen=True)
class MsrName:
    """The parts of ``aAA_sSS_eEE_skeleton3D.txt``: action and subject 1-based, as in the name."""

    action: int
    subject: int
    repetition: int

    @property
    def label(self) -> int:
        """0-based class index."""
        return self.action - 1

    def __str__(self) -> str:
        return f"a{self.action:02d}_s{self.subject:02d}_e{self.repetition:02d}"


def parse_msr_name(file_name: str) -> MsrName:
    """``"a13_s09_e02_skeleton3D.txt"`` -> ``MsrName(13, 9, 2)``; ``ValueError`` for anything else."""
    match = _NAME.fullmatch(file_name)
    if not match:
        raise ValueError(f"{file_name!r} is not named aAA_sSS_eEE_skeleton3D.txt")
    name = MsrName(*(int(g) for g in match.groups()))
    if not 1 <= name.action <= NUM_ACTIONS or not 1 <= name.subject <= NUM_SUBJECTS or name.repetition < 1:
        raise ValueError(f"{file_name!r}: action must be 1-{NUM_ACTIONS}, subject 1-{NUM_SUBJECTS}, "
                         f"repetition >= 1")
    return name


def read_msr_skeleton(path: str | Path, joints: int = KINECT_V1_20.num_joints) -> np.ndarray:
    """The frames of one skeleton file: ``(T, joints, 4)`` float64 (x, y, z, confidence).

    Blank lines are skipped. Raises :class:`SkeletonFormatError` naming the file and line for a line
    that is not four numbers, a value that is not finite, or joint lines that do not make whole
    frames of ``joints``.
    """
    rows: list[list[float]] = []
    last = 0
    with open(path, encoding="ascii", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            last = number
            if len(fields) != FIELDS:
                raise SkeletonFormatError(path, number, f"expected {FIELDS} numbers (x y z confidence), "
                                                        f"got {len(fields)} field(s)")
            try:
                values = [float(v) for v in fields]
            except ValueError:
                raise SkeletonFormatError(path, number, f"not a number in {line.strip()[:60]!r}") from None
            if not all(math.isfinite(v) for v in values):
                raise SkeletonFormatError(path, number, f"non-finite value in {line.strip()[:60]!r}")
            rows.append(values)
    if len(rows) % joints:
        raise SkeletonFormatError(path, last, f"{len(rows)} joint lines do not make whole frames of {joints} "
                                              f"joints ({len(rows) % joints} left over)")
    return np.asarray(rows, dtype=np.float64).reshape(-1, joints, FIELDS)


def split_targets(name: MsrName, benchmarks: Iterable[str]) -> list[tuple[str, str]]:
    """The ``(benchmark, part)`` splits a clip feeds (``xsub_val`` takes training subjects only)."""
    train = name.subject % 2 == 1
    targets = []
    for bench in benchmarks:
        if bench == "xsub":
            targets.append((bench, "train" if train else "val"))
        elif bench == "xsub_val" and train:
            targets.append((bench, "val" if name.subject == VAL_SUBJECT else "train"))
        elif bench != "xsub_val":
            raise ValueError(f"{bench!r} is not an MSR Action3D benchmark; choose from {', '.join(BENCHMARKS)}")
    return targets


def prepare_msr(raw_dir: str | Path, out_dir: str | Path, benchmarks: Iterable[str] = BENCHMARKS,
                max_frames: int = MAX_FRAMES, progress: bool = False, verbose: bool = False) -> PrepareReport:
    """Convert a folder of MSR Action3D skeleton files (searched recursively) to the CMD layout.

    Args:
        raw_dir: folder holding ``aAA_sSS_eEE_skeleton3D.txt`` files.
        out_dir: receives ``<benchmark>/{train,val}_*`` and ``prepare_report.json``.
        benchmarks: a subset of :data:`BENCHMARKS`.
        max_frames: stored ``T``; longer clips are cut (a note in the report).

    Raises:
        FileNotFoundError: ``raw_dir`` is not a folder.
        NothingToWriteError: no skeleton file in ``raw_dir`` (a ``ValueError``).
        ValueError: an unknown benchmark.
        SkeletonFormatError: a malformed file (names the file and line); ``out_dir`` is left as it was.
    """
    benchmarks = tuple(benchmarks)
    unknown = [b for b in benchmarks if b not in BENCHMARKS]
    if unknown or not benchmarks:
        raise ValueError(f"unknown MSR Action3D benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}")
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    if not raw_dir.is_dir():
        raise FileNotFoundError(f"{raw_dir}: MSR Action3D skeleton folder not found (expected a folder of "
                                f"aAA_sSS_eEE_skeleton3D.txt files)")
    report = PrepareReport("msr", str(raw_dir), str(out_dir))
    accepted: list[tuple[Path, MsrName]] = []
    seen: dict[str, Path] = {}
    for path in sorted(raw_dir.rglob("*"), key=lambda p: (p.name, str(p))):
        if path.is_dir():
            if _NAME.fullmatch(path.name):
                report.skip(path, "a folder, not a file: it is named like a skeleton file")
            continue
        report.files_seen += 1
        try:
            name = parse_msr_name(path.name)
        except ValueError as e:
            report.skip(path, f"unknown name: {e}")
            continue
        if str(name) in seen:
            report.skip(path, f"duplicate: same clip as {seen[str(name)]}")
            continue
        seen[str(name)] = path
        accepted.append((path, name))
    if not accepted:
        raise NothingToWriteError(f"{raw_dir}: no MSR Action3D skeleton file (aAA_sSS_eEE_skeleton3D.txt) among its "
                         f"{report.files_seen} file(s)")

    clips, inferred, joints_read = [], 0, 0
    for path, name in _progress(accepted, progress, "read msr"):
        frames = read_msr_skeleton(path)                                        # (T, 20, 4)
        if len(frames) == 0:
            report.skip(path, "no frames: the file holds no joint lines")
            continue
        xyz = frames[..., :3]
        if not xyz.any():
            report.skip(path, f"no skeleton: all {len(frames)} frames are zeros (nothing tracked)")
            continue
        inferred += int((frames[..., 3] == 0).sum())
        joints_read += frames.shape[0] * frames.shape[1]
        clips.append((path, name, xyz))
    capacity = {(b, p): 0 for b in benchmarks for p in PARTS}
    for _, name, _ in clips:
        for key in split_targets(name, benchmarks):
            capacity[key] += 1
    with staged_folder(out_dir) as stage:
        writer = CmdSplitWriter(stage, capacity, max_frames, layout=KINECT_V1_20)
        try:
            for path, name, xyz in clips:
                sample = select_bodies(xyz[:, None].astype(np.float32), 1)       # (3, T, 20, 1)
                kept = writer.add(sample, str(name), name.label, split_targets(name, benchmarks))
                if kept < len(xyz):
                    report.notes.append(f"{path}: {len(xyz)} frames cut to {kept}")
                report.samples_written += 1
            report.split_sizes = writer.finish()
        finally:
            writer.close()
        lengths = [len(xyz) for *_, xyz in clips]
        report.notes.append(f"clip lengths {min(lengths)}-{max(lengths)} frames (median "
                            f"{int(np.median(lengths))}); {inferred} of {joints_read} joints "
                            f"({100 * inferred / max(joints_read, 1):.1f} %) have confidence 0 (not stored)")
        _save_report(stage, report, verbose=False)
    if verbose:
        print(report.format())
    return report


# ----------------------------------------------------------------------------- fixture files
#: The NTU joint (``skeleton.NTU25``) at each Kinect v1 joint of MSR Action3D, by name.
NTU_JOINT_OF_KINECT_V1: tuple[int, ...] = (4, 8, 20, 1, 12, 16, 0, 5, 9, 6, 10, 7, 11, 13, 17, 14, 18, 15, 19, 3)


def write_msr_corpus(folder: str | Path, subjects: int = NUM_SUBJECTS, seed: int = 0, min_frames: int = 13,
                     max_frames: int = 40, quirks: bool = True) -> list[Path]:
    """Write synthetic one-person clips as MSR Action3D skeleton files, for tests and chapters
    that have no copy of the dataset.

    The synthetic actions (:mod:`.synthetic`, version 1, one-person classes) are performed once per
    subject ``1..subjects`` and seen by camera 1; their NTU joints are mapped onto the 20 joints of
    :data:`skeleton.KINECT_V1_20` and written in the release's format: ``x y z confidence`` per line,
    20 lines a frame, confidence 1 or (for occluded joints) 0. Class ``k`` is action ``k + 1``.
    With ``quirks``, the files carry what real ones do: blank lines inside one clip, one clip whose
    frames are all zeros, and clips as short as ``min_frames``. Returns the written paths.
    """
    from .synthetic import SyntheticConfig, generate_camera_space

    cfg = SyntheticConfig(seed=seed, num_subjects=subjects, num_cameras=1, repetitions=1, two_person=False,
                          min_frames=min_frames, max_frames=max_frames, stored_frames=max_frames)
    cam, length, labels, names, occluded = generate_camera_space(cfg)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    performers = [re.search(r"P(\d{3})", n).group(1) for n in names]            # NTU-style synthetic names
    subject_of = {p: k + 1 for k, p in enumerate(sorted(set(performers)))}
    paths = []
    for i in range(len(cam)):
        name = MsrName(action=int(labels[i]) + 1, subject=subject_of[performers[i]], repetition=1)
        t = int(length[i])
        xyz = cam[i, 0, :t][:, NTU_JOINT_OF_KINECT_V1]                            # (T, 20, 3)
        confidence = (~occluded[i, 0, :t][:, NTU_JOINT_OF_KINECT_V1]).astype(float)
        if quirks and i == 1:
            xyz = np.zeros_like(xyz)                                               # nothing tracked
        lines = [f"{x:.6f} {y:.6f} {z:.6f} {c:.6f}" for (x, y, z), c in
                 zip(xyz.reshape(-1, 3), confidence.reshape(-1))]
        if quirks and i == 2:
            lines[20:20] = [""] * 40                                               # blank lines mid-clip
        path = folder / f"{name}_skeleton3D.txt"
        path.write_text("\n".join(lines) + "\n")
        paths.append(path)
    return paths
