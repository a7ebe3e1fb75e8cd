"""Raw NTU RGB+D ``.skeleton`` folder -> the CMD on-disk layout, with a report.

``prepare_ntu(raw_dir, out_dir, "ntu60")`` writes ``out_dir/xsub/{train,val}_*`` and
``out_dir/xview/{train,val}_*`` (``xsub``/``xset`` for ``ntu120``) through
:func:`store.save_split`: ``(N, 3, 300, 25, 2)`` float32 normalised joints, the number of
valid frames and ``(names, 0-based labels)``. Each file is parsed once; samples go
through :func:`preprocess.select_bodies` and, in chunks, :func:`preprocess.pre_normalize`,
and are written into memory-mapped ``.npy`` files, so memory stays flat on the full
datasets (disk needs about twice the output size while a split is being saved, plus
the old dataset, which stays until the new one replaces it).

Every file that is not written is listed in the report with its reason: on the
missing-skeleton list, an unknown name, outside the version's ID range, unreadable, a
parse error (with its line; counts that the file is too short for and coordinates that
are not positions are parse errors too), impossibly long, no frames or no body at all,
or a duplicate name; a folder named like a ``.skeleton`` file and an entry that is not a
regular file (a broken link, a pipe) are listed too (other folders are searched). Nothing
is dropped silently. A raw folder that gives no sample at all (empty, or every file
skipped) is an error (:class:`NothingToWriteError`) and ``out_dir`` is left as it was.
Sample names are stored without the ``.skeleton`` extension, in sorted order.

``out_dir`` changes as a whole or not at all (:mod:`.output_folder`): the conversion
writes beside it and swaps the result in, so a killed run leaves the old dataset or the
new one, never a mix, and the next run removes what a killed one left behind.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from numpy.lib.format import open_memmap

from ..skeleton import MAX_BODIES, NTU25, Layout
from ..utils import atomic_write
from .ntu_format import (VERSIONS, NtuNameError, SkeletonFormatError, in_version, is_training,
                         missing_samples, parse_name, read_skeleton)
from .output_folder import staged_folder
from .preprocess import pre_normalize_layout, select_bodies, to_fixed_length
from .store import PARTS, SkeletonArrays, save_split

MAX_FRAMES = 300        # T of the CMD layout
MAX_BODIES_READ = 4     # bodies read per frame, by position (CMD's max_body_kinect)
REPORT_NAME = "prepare_report.json"
#: Frames beyond which a ``.skeleton`` file is skipped as impossible (NTU clips last seconds;
#: 10000 frames are 5.5 minutes at 30 fps) before its frames are expanded in memory.
MAX_FILE_FRAMES = 10_000


class NothingToWriteError(ValueError):
    """A conversion found no sample to write (an empty raw folder, or every file skipped)."""


def skip_non_file(report: "PrepareReport", path: Path, kind: str) -> bool:
    """Record ``path`` in ``report`` as skipped when it is not a regular file named like ``kind``
    (a folder, a broken link, a pipe); ``True`` when it was skipped."""
    if path.is_file():
        return False
    if path.is_dir():
        report.skip(path, f"a folder, not a {kind} file")
    else:
        report.skip(path, "not a regular file (a broken link, a pipe or a device)")
    return True


def require_samples(report: "PrepareReport", expected: str) -> None:
    """Raise :class:`NothingToWriteError` when ``report`` has no sample to write: one line naming
    the raw folder, what was seen and why each kind of file was skipped."""
    if report.samples_written:
        return
    if report.files_seen == 0:
        raise NothingToWriteError(f"{report.raw_dir}: empty raw folder, no file found (expected {expected}); "
                                  f"nothing was written")
    raise NothingToWriteError(f"{report.raw_dir}: no sample to write: {report.files_seen} entries seen, all "
                              f"skipped ({report.reason_counts()}); nothing was written to {report.out_dir}")


@dataclass
class SkippedFile:
    """A raw file (or PKU label row) that was not written, and why."""

    path: str
    reason: str


@dataclass
class PrepareReport:
    """What :func:`prepare_ntu` / ``prepare_pku`` did."""

    dataset: str
    raw_dir: str
    out_dir: str
    files_seen: int = 0
    samples_written: int = 0
    split_sizes: dict[str, dict[str, int]] = field(default_factory=dict)
    skipped: list[SkippedFile] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def skip(self, path: str | Path, reason: str) -> None:
        self.skipped.append(SkippedFile(str(path), reason))

    def reason_counts(self) -> dict[str, int]:
        """Skips per kind of reason (the text before the first ':')."""
        return dict(Counter(s.reason.split(":")[0] for s in self.skipped))

    def format(self, max_listed: int = 20) -> str:
        """A human-readable summary; lists up to ``max_listed`` skipped files."""
        lines = [f"{self.dataset}: {self.files_seen} files seen, {self.samples_written} samples written "
                 f"to {self.out_dir}"]
        for bench, parts in self.split_sizes.items():
            lines.append(f"  {bench}: " + ", ".join(f"{p} {n}" for p, n in parts.items()))
        lines.append(f"  skipped {len(self.skipped)}: {self.reason_counts()}")
        for s in self.skipped[:max_listed]:
            lines.append(f"    {s.path}: {s.reason}")
        if len(self.skipped) > max_listed:
            lines.append(f"    ... {len(self.skipped) - max_listed} more in {REPORT_NAME}")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return asdict(self)


class CmdSplitWriter:
    """Collects samples for several ``(benchmark, part)`` splits and saves them in the CMD layout.

    ``capacity[(benchmark, part)]`` bounds how many samples each split receives. Samples
    are buffered raw, normalised ``chunk`` at a time with :func:`pre_normalize` (the normalisation
    joints of ``layout``; samples are ``(3, T, V, M)`` of that layout), and copied
    into one temporary ``.npy`` memory map per split; :meth:`finish` hands each split to
    :func:`save_split` and removes the temporary files.
    """

    def __init__(self, out_dir: Path, capacity: dict[tuple[str, str], int],
                 max_frames: int = MAX_FRAMES, chunk: int = 64, layout: Layout = NTU25) -> None:
        self.out_dir, self.max_frames, self.chunk, self.layout = out_dir, max_frames, chunk, layout
        joints, bodies = layout.num_joints, layout.num_bodies
        self.buffer = np.zeros((chunk, 3, max_frames, joints, bodies), dtype=np.float32)
        self.pending: list[list[tuple[str, str]]] = []  # targets of each buffered sample
        self.maps: dict[tuple[str, str], np.ndarray] = {}
        self.meta: dict[tuple[str, str], tuple[list[str], list[int], list[int]]] = {}
        self.temp: dict[tuple[str, str], Path] = {}
        for key, n in capacity.items():
            folder = out_dir / key[0]
            folder.mkdir(parents=True, exist_ok=True)
            shape = (n, 3, max_frames, joints, bodies)
            if n == 0:  # an empty file cannot be memory-mapped
                self.maps[key] = np.zeros(shape, dtype=np.float32)
            else:
                self.temp[key] = folder / f".{key[1]}_data_joint.building.npy"
                self.maps[key] = open_memmap(self.temp[key], mode="w+", dtype=np.float32, shape=shape)
            self.meta[key] = ([], [], [])

    def add(self, sample: np.ndarray, name: str, label: int, targets: Sequence[tuple[str, str]]) -> int:
        """Queue one ``(3, T, V, M)`` sample for ``targets``; returns the stored length."""
        for key in targets:
            if len(self.meta[key][0]) >= len(self.maps[key]):
                raise ValueError(f"split {key} already holds its capacity of {len(self.maps[key])} samples")
        k = len(self.pending)
        self.buffer[k], kept = to_fixed_length(sample, self.max_frames)
        self.pending.append(list(targets))
        for key in targets:
            names, labels, frames = self.meta[key]
            names.append(name)
            labels.append(label)
            frames.append(kept)
        if len(self.pending) == self.chunk:
            self._flush()
        return kept

    def _flush(self) -> None:
        k = len(self.pending)
        if k == 0:
            return
        normed = pre_normalize_layout(self.buffer[:k], self.layout)
        filled = {key: len(self.meta[key][0]) for key in self.maps}
        # rows of this chunk go to the end of each split, in order
        for key in self.maps:
            rows = [i for i, targets in enumerate(self.pending) if key in targets]
            if rows:
                self.maps[key][filled[key] - len(rows):filled[key]] = normed[rows]
        self.pending.clear()
        self.buffer[:] = 0

    def finish(self) -> dict[str, dict[str, int]]:
        """Save every split; returns ``{benchmark: {part: count}}``."""
        try:
            self._flush()
            sizes: dict[str, dict[str, int]] = {}
            for (bench, part), mm in self.maps.items():
                names, labels, frames = self.meta[(bench, part)]
                if isinstance(mm, np.memmap):
                    mm.flush()
                arrays = SkeletonArrays(mm[:len(names)], np.asarray(frames, dtype=np.int64),
                                        np.asarray(labels, dtype=np.int64), names)
                save_split(self.out_dir / bench, part, arrays)
                sizes.setdefault(bench, {})[part] = len(names)
            return sizes
        finally:
            self.close()

    def close(self) -> None:
        """Drop the temporary memory maps (also after an error)."""
        for key, path in self.temp.items():
            self.maps.pop(key, None)
            if path.exists():
                os.unlink(path)


def prepare_ntu(raw_dir: str | Path, out_dir: str | Path, version: str = "ntu60",
                benchmarks: Iterable[str] | None = None, max_frames: int = MAX_FRAMES,
                progress: bool = False, verbose: bool = False) -> PrepareReport:
    """Convert a folder of raw ``.skeleton`` files (searched recursively) to the CMD layout.

    Args:
        raw_dir: folder holding ``SsssCcccPpppRrrrAaaa.skeleton`` files.
        out_dir: receives ``<benchmark>/{train,val}_*`` and ``prepare_report.json``.
        version: ``ntu60`` (benchmarks ``xsub``, ``xview``) or ``ntu120`` (``xsub``, ``xset``).
        benchmarks: a subset of the version's benchmarks (default: both).
        max_frames: stored ``T``; longer files are cut (a note in the report).
        progress: show a tqdm bar; verbose: print the report at the end.

    Raises:
        FileNotFoundError: ``raw_dir`` does not exist or is not a folder.
        NothingToWriteError: no sample to write (an empty folder, or every file skipped).
        ValueError: unknown version or benchmark.
    """
    if version not in VERSIONS:
        raise ValueError(f"unknown NTU version {version!r}; choose one of {', '.join(VERSIONS)}")
    spec = VERSIONS[version]
    benchmarks = tuple(benchmarks) if benchmarks is not None else spec.benchmarks
    for b in benchmarks:
        if b not in spec.benchmarks:
            raise ValueError(f"{b!r} is not a {version} benchmark; choose from {', '.join(spec.benchmarks)}")
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    if not raw_dir.is_dir():
        raise FileNotFoundError(f"{raw_dir}: NTU raw skeleton folder not found (expected a folder "
                                f"of .skeleton files, e.g. nturgb+d_skeletons/)")
    report = PrepareReport(version, str(raw_dir), str(out_dir))
    missing = missing_samples(version)

    # Pass 1, names only: which files to parse and which split each one feeds.
    accepted: list[tuple[Path, str, int, list[tuple[str, str]]]] = []
    seen: dict[str, Path] = {}
    entries = (p for p in raw_dir.rglob("*") if not p.is_dir() or p.suffix == ".skeleton")   # folders: searched
    for path in sorted(entries, key=lambda p: (p.name, str(p))):
        report.files_seen += 1
        if skip_non_file(report, path, ".skeleton"):
            continue
        if path.suffix != ".skeleton":
            report.skip(path, "not a .skeleton file")
            continue
        try:
            name = parse_name(path.name)
        except NtuNameError as e:
            report.skip(path, f"unknown name: {e}")
            continue
        key = str(name)
        if key in seen:
            report.skip(path, f"duplicate: same sample as {seen[key]}")
            continue
        seen[key] = path
        if not in_version(name, version):
            report.skip(path, f"outside {version}: {key} is not in S001-S{spec.max_setup:03d}, "
                              f"P001-P{spec.max_subject:03d}, A001-A{spec.num_classes:03d}")
            continue
        if key in missing:
            report.skip(path, f"missing-skeleton list: {key} is listed by the dataset authors")
            continue
        targets = [(b, "train" if is_training(name, b) else "val") for b in benchmarks]
        accepted.append((path, key, name.label, targets))

    capacity = {(b, p): 0 for b in benchmarks for p in PARTS}
    for *_, targets in accepted:
        for key in targets:
            capacity[key] += 1

    expected = "SsssCcccPpppRrrrAaaa.skeleton files"
    if not accepted:
        require_samples(report, expected)
    # Pass 2: parse, select bodies, normalise, write (into a folder that then replaces out_dir).
    with staged_folder(out_dir) as stage:
        _convert_ntu(accepted, CmdSplitWriter(stage, capacity, max_frames), report, progress, version)
        require_samples(report, expected)
        _save_report(stage, report, verbose=False)
    if verbose:
        print(report.format())
    return report


def _convert_ntu(accepted: list[tuple[Path, str, int, list[tuple[str, str]]]], writer: CmdSplitWriter,
                 report: PrepareReport, progress: bool, version: str) -> None:
    """Pass 2 of :func:`prepare_ntu`: every accepted file into ``writer``, or a skip in ``report``."""
    try:
        for path, key, label, targets in _progress(accepted, progress, f"prepare {version}"):
            try:
                skeleton = read_skeleton(path)
            except SkeletonFormatError as e:
                report.skip(path, f"parse error: {e}")
                continue
            except OSError as e:
                report.skip(path, f"unreadable: {e.strerror or e}")
                continue
            if skeleton.num_frames > MAX_FILE_FRAMES:
                report.skip(path, f"impossible: {skeleton.num_frames} frames (more than {MAX_FILE_FRAMES})")
                continue
            if skeleton.num_frames == 0:
                report.skip(path, "no frames: the file declares 0 frames")
                continue
            if skeleton.bodies_per_frame.sum() == 0:
                report.skip(path, f"no body: none of its {skeleton.num_frames} frames lists a body")
                continue
            sample = select_bodies(skeleton.dense(MAX_BODIES_READ), MAX_BODIES)  # (3, T, 25, 2)
            kept = writer.add(sample, key, label, targets)
            if kept < skeleton.num_frames:
                report.notes.append(f"{path}: {skeleton.num_frames} frames cut to {kept}")
            report.samples_written += 1
        report.split_sizes = writer.finish()
    finally:
        writer.close()


def _progress(items: list, enabled: bool, desc: str):
    if not enabled:
        return items
    from tqdm.auto import tqdm
    return tqdm(items, desc=desc)


def _save_report(out_dir: Path, report: PrepareReport, verbose: bool) -> None:
    text = json.dumps(report.to_dict(), indent=1)
    atomic_write(out_dir / REPORT_NAME, lambda p: p.write_text(text))
    if verbose:
        print(report.format())
