"""PKU-MMD part I / II skeleton and label files -> the CMD on-disk layout.

Input layout (``root`` is the dataset folder)::

    skeleton/<video>.txt   one frame per line, 150 floats = 2 bodies x 25 joints x (x, y, z)
    label/<video>.txt      one action per line: class,start,end,confidence (class 1-based)
    <split file>           line 2 lists the training video ids, separated by ", "

Part I ships ``cross-subject.txt`` / ``cross-view.txt``, part II ``cross_subject_v2.txt``
/ ``cross_view_v2.txt`` (override with ``split_files``). Every label row becomes one
sample ``frames[start:end]`` named ``<video>_<row>`` (row 0-based), label ``class - 1``;
videos not on the training line are validation. Bodies are kept in file order (no
activity ranking, as CMD), the clip is cut at ``max_frames`` and -- unlike CMD, which
stores the uncut length -- ``num_frame`` records the length actually stored. The
normalisation is :func:`preprocess.pre_normalize`, the writer the one of :mod:`.ntu`.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from ..skeleton import MAX_BODIES, NUM_JOINTS
from .ntu import MAX_FRAMES, CmdSplitWriter, PrepareReport, _progress, _save_report, require_samples, \
    skip_non_file
from .ntu_format import SkeletonFormatError, check_coordinates, check_number_line
from .output_folder import staged_folder
from .store import PARTS

VALUES_PER_FRAME = MAX_BODIES * NUM_JOINTS * 3  # 150
NUM_CLASSES = 51
_INT_RE = re.compile(r"[+-]?\d+")
DEFAULT_SPLIT_FILES: dict[str, dict[str, str]] = {
    "pku1": {"xsub": "cross-subject.txt", "xview": "cross-view.txt"},
    "pku2": {"xsub": "cross_subject_v2.txt", "xview": "cross_view_v2.txt"},
}


def read_pku_skeleton(path: str | Path) -> np.ndarray:
    """``(T, 150)`` float64 frames of one video; errors name the file and line."""
    path = Path(path)
    lines = path.read_bytes().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if not any(ln.strip() for ln in lines):
        raise SkeletonFormatError(path, None, "empty skeleton file (no frames)")
    try:
        values = np.loadtxt(lines, dtype=np.float64, ndmin=2, comments=None)
        ok = values.shape == (len(lines), VALUES_PER_FRAME)
    except ValueError:
        ok = False
    if not ok:  # slow path, only to name the offending line
        for i, line in enumerate(lines):
            check_number_line(path, i + 1, line, VALUES_PER_FRAME, f"a frame line needs {VALUES_PER_FRAME} "
                              "values (2 bodies x 25 joints x xyz)")
        raise SkeletonFormatError(path, None, "could not parse the frame lines")  # pragma: no cover
    bad = ~np.isfinite(values)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise SkeletonFormatError(path, int(row) + 1, f"value {col + 1} is {values[row, col]} (must be finite)")
    check_coordinates(path, values.reshape(-1, 3), np.repeat(np.arange(len(values)), VALUES_PER_FRAME // 3),
                      "joint")
    return values


def read_pku_labels(path: str | Path) -> np.ndarray:
    """``(R, 4)`` int64 rows ``class, start, end, confidence`` (blank lines ignored)."""
    path = Path(path)
    rows = []
    for i, line in enumerate(path.read_text(encoding="ascii", errors="replace").splitlines()):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 4:
            raise SkeletonFormatError(path, i + 1, f"expected class,start,end,confidence; found "
                                                   f"{len(fields)} comma-separated values")
        if not all(_INT_RE.fullmatch(f) and len(f) <= 10 for f in fields):
            raise SkeletonFormatError(path, i + 1, f"label values must be integers of at most 10 digits, "
                                                   f"got {line.strip()[:80]!r}")
        rows.append([int(f) for f in fields])
    return np.array(rows, dtype=np.int64).reshape(-1, 4)


def read_training_videos(path: str | Path) -> frozenset[str]:
    """Training video ids from line 2 of a PKU-MMD split file (``"id, id, ..."``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: PKU-MMD split file not found (pass split_files= to name it)")
    lines = path.read_text(encoding="ascii", errors="replace").splitlines()
    ids = [t.strip() for t in lines[1].split(",")] if len(lines) >= 2 else []
    ids = [t for t in ids if t]
    if not ids:
        raise SkeletonFormatError(path, 2, "expected the training video ids on line 2, separated by ', '")
    return frozenset(ids)


def prepare_pku(root: str | Path, out_dir: str | Path, version: str = "pku2",
                benchmarks: Iterable[str] = ("xsub", "xview"), split_files: Mapping[str, str] | None = None,
                skeleton_dir: str = "skeleton", label_dir: str = "label", max_frames: int = MAX_FRAMES,
                num_classes: int = NUM_CLASSES, progress: bool = False, verbose: bool = False) -> PrepareReport:
    """Convert PKU-MMD part I (``pku1``) or II (``pku2``) to ``out_dir/<benchmark>/{train,val}_*``.

    Args:
        root: dataset folder with ``skeleton_dir``, ``label_dir`` and the split files.
        split_files: ``{benchmark: file}``, relative to ``root`` or absolute; defaults to
            :data:`DEFAULT_SPLIT_FILES` of ``version``.
        max_frames: stored ``T``; longer actions are cut and ``num_frame`` says so.

    Returns the report (also saved as ``out_dir/prepare_report.json``). Videos that fail
    to parse, label rows that cannot give a sample and entries of the skeleton folder that
    are not files (a folder, a broken link) are listed there with the reason. No sample at
    all (an empty skeleton folder, every row skipped) is an error and ``out_dir`` stays as it was.

    Raises:
        FileNotFoundError: ``root``, a data folder or a split file is missing.
        SkeletonFormatError: a split file has no training ids on line 2.
        NothingToWriteError: no sample to write.
    """
    if version not in DEFAULT_SPLIT_FILES:
        raise ValueError(f"unknown PKU-MMD version {version!r}; choose pku1 or pku2")
    root, out_dir = Path(root), Path(out_dir)
    benchmarks = tuple(benchmarks)
    files = dict(DEFAULT_SPLIT_FILES[version], **(split_files or {}))
    for b in benchmarks:
        if b not in files:
            raise ValueError(f"no split file known for benchmark {b!r}; pass split_files={{{b!r}: ...}}")
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: PKU-MMD folder not found")
    skel_root, label_root = root / skeleton_dir, root / label_dir
    for folder, what in ((skel_root, "skeleton"), (label_root, "label")):
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: PKU-MMD {what} folder not found")
    training = {b: read_training_videos(root / files[b]) for b in benchmarks}
    report = PrepareReport(version, str(root), str(out_dir))

    # Pass 1: labels -> the samples of every video and their splits.
    jobs: list[tuple[Path, str, np.ndarray, np.ndarray]] = []  # path, video, labels, usable rows
    videos: set[str] = set()
    for path in sorted(skel_root.iterdir()):
        report.files_seen += 1
        if skip_non_file(report, path, "skeleton .txt"):
            continue
        if path.suffix != ".txt":
            report.skip(path, "not a .txt file")
            continue
        videos.add(path.stem)
        label_path = label_root / path.name
        if not label_path.is_file():
            report.skip(path, f"no label file: {label_path} is missing")
            continue
        try:
            labels = read_pku_labels(label_path)
        except SkeletonFormatError as e:
            report.skip(path, f"label parse error: {e}")
            continue
        except OSError as e:
            report.skip(path, f"unreadable label file: {label_path}: {e.strerror or e}")
            continue
        good = np.ones(len(labels), dtype=bool)
        for row, (cls, start, end, _) in enumerate(labels):
            where = f"{label_path}, row {row + 1}"
            if not 1 <= cls <= num_classes:
                report.skip(where, f"bad label: class {cls} is outside 1..{num_classes}")
                good[row] = False
            elif not 0 <= start < end:
                report.skip(where, f"bad interval: start {start}, end {end}")
                good[row] = False
        jobs.append((path, path.stem, labels, np.where(good)[0]))
    for path in sorted(label_root.glob("*.txt")):
        if path.stem not in videos:
            report.skip(path, "label without skeleton file")
    for b in benchmarks:
        absent = sorted(training[b] - videos)
        if absent:
            report.notes.append(f"{b}: {len(absent)} training ids of {files[b]} have no skeleton file "
                                f"(e.g. {absent[0]})")

    capacity = {(b, p): 0 for b in benchmarks for p in PARTS}
    for _, video, _, rows in jobs:
        for b in benchmarks:
            capacity[(b, "train" if video in training[b] else "val")] += len(rows)

    expected = f"<video>.txt skeleton files in {skel_root}"
    if not any(len(rows) for *_, rows in jobs):
        require_samples(report, expected)
    # Pass 2: frames -> samples (into a folder that then replaces out_dir).
    with staged_folder(out_dir) as stage:
        _convert_pku(jobs, training, benchmarks, label_root, CmdSplitWriter(stage, capacity, max_frames),
                     report, progress, version)
        require_samples(report, expected)
        _save_report(stage, report, verbose=False)
    if verbose:
        print(report.format())
    return report


def _convert_pku(jobs: list[tuple[Path, str, np.ndarray, np.ndarray]], training: Mapping[str, frozenset[str]],
                 benchmarks: tuple[str, ...], label_root: Path, writer: CmdSplitWriter, report: PrepareReport,
                 progress: bool, version: str) -> None:
    """Pass 2 of :func:`prepare_pku`: the usable label rows of every video into ``writer``."""
    max_frames = writer.max_frames
    try:
        cut_end, cut_long = [], []
        for path, video, labels, rows in _progress(jobs, progress, f"prepare {version}"):
            if len(rows) == 0:
                continue
            try:
                frames = read_pku_skeleton(path)
            except SkeletonFormatError as e:
                report.skip(path, f"parse error: {e} ({len(rows)} labelled actions lost)")
                continue
            except OSError as e:
                report.skip(path, f"unreadable: {e.strerror or e} ({len(rows)} labelled actions lost)")
                continue
            targets = [(b, "train" if video in training[b] else "val") for b in benchmarks]
            for row in rows:
                cls, start, end, _ = labels[row]
                if start >= len(frames):
                    report.skip(f"{label_root / path.name}, row {row + 1}",
                                f"bad interval: start {start} is past the last of {len(frames)} frames")
                    continue
                if end > len(frames):
                    cut_end.append(f"{video}_{row}")
                clip = frames[start:end].reshape(-1, MAX_BODIES, NUM_JOINTS, 3)   # (T, M, V, C)
                kept = writer.add(clip.transpose(3, 0, 2, 1), f"{video}_{row}", int(cls) - 1, targets)
                if kept < len(clip):
                    cut_long.append(f"{video}_{row}")
                report.samples_written += 1
        report.split_sizes = writer.finish()
        if cut_end:
            report.notes.append(f"{len(cut_end)} action(s) end after the last frame and were cut "
                                f"there: {', '.join(cut_end[:10])}")
        if cut_long:
            report.notes.append(f"{len(cut_long)} action(s) longer than {max_frames} frames were cut "
                                f"to {max_frames} (num_frame records the stored length): "
                                f"{', '.join(cut_long[:10])}")
    finally:
        writer.close()
