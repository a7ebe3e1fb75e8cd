"""prepare_ntu: raw .skeleton folder -> CMD layout, checked against an independent loop pipeline."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks._preprocess_reference import pre_normalize_loop, read_xyz_loop, select_bodies_loop
from i2md_lib.data.ntu import REPORT_NAME, prepare_ntu
from i2md_lib.data.ntu_format import SkeletonFile, read_skeleton, write_skeleton
from i2md_lib.data.preprocess import body_energy, select_bodies
from i2md_lib.data.store import load_split

T_STORED = 40  # a short stored length keeps the loop reference fast


def moving_bodies(t: int, m: int, seed: int) -> np.ndarray:
    """``(T, M, 25, 3)`` bodies in metres, each drifting and waving differently."""
    rng = np.random.default_rng(seed)
    base = rng.normal(0, 0.25, (m, 25, 3)) + np.array([0.0, 0.0, 3.0])
    amp = rng.uniform(0.01, 0.2, (m, 1, 1))
    wave = amp * np.sin(np.linspace(0, 6, t))[:, None, None, None] * rng.normal(size=(1, m, 25, 3))
    return base[None] + wave


def write(folder: Path, name: str, xyz: np.ndarray, present: np.ndarray | None = None) -> Path:
    return write_skeleton(folder / name, SkeletonFile.from_dense(xyz, present=present))


@pytest.fixture()
def raw60(tmp_path: Path) -> Path:
    raw = tmp_path / "raw"
    raw.mkdir()
    write(raw, "S001C001P001R001A001.skeleton", moving_bodies(25, 1, 0))             # xsub train, xview val
    three = moving_bodies(30, 3, 1)
    three[:, 2] = three[:, 2].mean(axis=0) * 0.2 + [0, 0, 2.4]                     # a static "chair" body
    present = np.ones((30, 3), bool)
    present[:10, 2] = False
    write(raw, "S001C002P003R001A050.skeleton", three, present)                      # xsub val, xview train
    late = moving_bodies(20, 2, 2)
    present = np.ones((20, 2), bool)
    present[:2] = False                                                              # two empty frames
    present[12:, 1] = False
    write(raw, "S002C003P002R002A008.skeleton", late, present)                       # both train
    write(raw, "S003C001P004R001A013.skeleton", moving_bodies(T_STORED + 15, 2, 3))  # longer than stored T
    # files that must be skipped, each for its own reason
    write(raw, "S001C002P005R002A008.skeleton", moving_bodies(10, 1, 4))             # missing-skeleton list
    write(raw, "S018C001P001R001A001.skeleton", moving_bodies(10, 1, 5))             # NTU-120 setup
    write(raw, "S001C001P001R001A061.skeleton", moving_bodies(10, 1, 6))             # NTU-120 action
    write(raw, "bogus.skeleton", moving_bodies(10, 1, 7))                            # unknown name
    broken = write(raw, "S001C003P007R001A002.skeleton", moving_bodies(10, 1, 8))
    broken.write_bytes(b"\n".join(broken.read_bytes().split(b"\n")[:40]) + b"\n")   # truncated
    (raw / "S004C001P008R001A003.skeleton").write_text("0\n")                       # no frames
    (raw / "S004C002P008R001A004.skeleton").write_text("3\n0\n0\n0\n")              # frames, no body
    (raw / "notes.txt").write_text("not data")
    (raw / "sub").mkdir()
    write(raw / "sub", "S001C001P001R001A001.skeleton", moving_bodies(5, 1, 9))      # duplicate name
    return raw


def expected_sample(path: Path) -> tuple[np.ndarray, int]:
    """The loop pipeline: parse -> 2 most active bodies -> cut/pad to T_STORED -> normalise."""
    sample = select_bodies_loop(read_xyz_loop(path))                 # (3, T, 25, 2)
    fixed = np.zeros((1, 3, T_STORED, 25, 2), dtype=np.float32)
    kept = min(sample.shape[1], T_STORED)
    fixed[0, :, :kept] = sample[:, :kept]
    return pre_normalize_loop(fixed)[0], kept


def test_prepare_ntu60_writes_both_benchmarks_and_reports_every_skip(raw60, tmp_path):
    out = tmp_path / "out"
    report = prepare_ntu(raw60, out, "ntu60", max_frames=T_STORED)
    assert report.files_seen == 13 and report.samples_written == 4
    assert report.split_sizes == {"xsub": {"train": 3, "val": 1}, "xview": {"train": 2, "val": 2}}
    reasons = {Path(s.path).relative_to(raw60).as_posix(): s.reason for s in report.skipped}
    assert reasons["S001C002P005R002A008.skeleton"].startswith("missing-skeleton list")
    assert reasons["S018C001P001R001A001.skeleton"].startswith("outside ntu60")
    assert reasons["S001C001P001R001A061.skeleton"].startswith("outside ntu60")
    assert reasons["bogus.skeleton"].startswith("unknown name")
    assert reasons["S001C003P007R001A002.skeleton"].startswith("parse error")
    assert "line 40" in reasons["S001C003P007R001A002.skeleton"]
    assert reasons["S004C001P008R001A003.skeleton"].startswith("no frames")
    assert reasons["S004C002P008R001A004.skeleton"].startswith("no body")
    assert reasons["notes.txt"] == "not a .skeleton file"
    assert reasons["sub/S001C001P001R001A001.skeleton"].startswith("duplicate")
    assert len(report.skipped) == 9 == report.files_seen - report.samples_written
    assert any("S003C001P004R001A013" in n and "cut to 40" in n for n in report.notes)
    saved = json.loads((out / REPORT_NAME).read_text())
    assert saved["samples_written"] == 4 and len(saved["skipped"]) == 9
    assert "missing-skeleton list" in report.format()
    assert not list(out.rglob(".*building*"))                # temporary memmaps removed

    xsub_train = load_split(out / "xsub", "train", mmap=False)
    assert xsub_train.names == ["S001C001P001R001A001", "S002C003P002R002A008", "S003C001P004R001A013"]
    assert xsub_train.labels.tolist() == [0, 7, 12]
    assert xsub_train.data.shape == (3, 3, T_STORED, 25, 2) and xsub_train.data.dtype == np.float32
    assert load_split(out / "xsub", "val").names == ["S001C002P003R001A050"]
    assert load_split(out / "xview", "train").names == ["S001C002P003R001A050", "S002C003P002R002A008"]
    assert load_split(out / "xview", "val").names == ["S001C001P001R001A001", "S003C001P004R001A013"]

    for split in (xsub_train, load_split(out / "xsub", "val")):
        for i, name in enumerate(split.names):
            want, kept = expected_sample(raw60 / f"{name}.skeleton")
            assert split.num_frame[i] == kept
            np.testing.assert_allclose(split.data[i], want, atol=1e-5)
    # the low-activity "chair" (third body, slot 2 from frame 10) is not among the two kept
    dense = read_skeleton(raw60 / "S001C002P003R001A050.skeleton").dense(4)
    energy = body_energy(dense)
    assert energy[2] < energy[:2].min()
    top = [0, 1] if energy[0] > energy[1] else [1, 0]
    np.testing.assert_array_equal(select_bodies(dense), dense[:, top].transpose(3, 0, 2, 1))


def test_prepare_ntu120_uses_xset_and_its_own_missing_list(tmp_path):
    raw = tmp_path / "raw120"
    raw.mkdir()
    for i, name in enumerate(["S018C001P044R001A061", "S017C002P001R002A120", "S019C001P046R001A075",
                              "S033C001P001R001A001"]):
        write(raw, f"{name}.skeleton", moving_bodies(12, 2, i))
    report = prepare_ntu(raw, tmp_path / "out", "ntu120", max_frames=16)
    assert report.split_sizes == {"xsub": {"train": 1, "val": 1}, "xset": {"train": 1, "val": 1}}
    assert load_split(tmp_path / "out" / "xset", "train").names == ["S018C001P044R001A061"]
    assert load_split(tmp_path / "out" / "xset", "val").labels.tolist() == [119]
    reasons = {Path(s.path).stem: s.reason for s in report.skipped}
    assert reasons["S019C001P046R001A075"].startswith("missing-skeleton list")   # only on the 120 list
    assert reasons["S033C001P001R001A001"].startswith("unknown name")


def test_one_benchmark_and_empty_parts(raw60, tmp_path):
    report = prepare_ntu(raw60, tmp_path / "o", "ntu60", benchmarks=["xview"], max_frames=T_STORED)
    assert set(report.split_sizes) == {"xview"} and not (tmp_path / "o" / "xsub").exists()
    only_val = tmp_path / "only_val"
    only_val.mkdir()
    write(only_val, "S001C001P003R001A001.skeleton", moving_bodies(8, 1, 0))
    report = prepare_ntu(only_val, tmp_path / "o2", "ntu60", max_frames=T_STORED)
    assert report.split_sizes["xsub"] == {"train": 0, "val": 1}
    assert len(load_split(tmp_path / "o2" / "xsub", "train")) == 0


def test_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        prepare_ntu(tmp_path / "nowhere", tmp_path / "out")
    with pytest.raises(ValueError, match="ntu90"):
        prepare_ntu(tmp_path, tmp_path / "out", "ntu90")
    with pytest.raises(ValueError, match="xset"):
        prepare_ntu(tmp_path, tmp_path / "out", "ntu60", benchmarks=["xset"])


def test_split_writer_across_chunks(tmp_path):
    """More samples than one chunk, each split filled out of order: rows must not mix up."""
    from i2md_lib.data.ntu import CmdSplitWriter
    from i2md_lib.data.preprocess import pre_normalize

    rng = np.random.default_rng(0)
    # the part of each sample in benchmark x and in benchmark y
    plan = [("train", "val"), ("val", "val"), ("val", "val"), ("train", "val"), ("val", "val"),
            ("train", "val"), ("val", "val"), ("train", "val")]
    capacity = {("x", "train"): 0, ("x", "val"): 0, ("y", "train"): 0, ("y", "val"): 0}
    jobs = []
    for i, (x_part, y_part) in enumerate(plan):
        keys = [("x", x_part), ("y", y_part)]
        for key in keys:
            capacity[key] += 1
        jobs.append((rng.normal(size=(3, int(rng.integers(3, 12)), 25, 2)), f"s{i}", i, keys))
    writer = CmdSplitWriter(tmp_path, capacity, max_frames=10, chunk=3)
    for sample, name, label, keys in jobs:
        writer.add(sample, name, label, keys)
    sizes = writer.finish()
    assert sizes == {"x": {"train": 4, "val": 4}, "y": {"train": 0, "val": 8}}
    for (bench, part) in capacity:
        split = load_split(tmp_path / bench, part, mmap=False)
        expected = [j for j in jobs if (bench, part) in j[3]]
        assert split.names == [j[1] for j in expected] and split.labels.tolist() == [j[2] for j in expected]
        for i, (sample, *_) in enumerate(expected):
            fixed = np.zeros((1, 3, 10, 25, 2), dtype=np.float32)
            kept = min(sample.shape[1], 10)
            fixed[0, :, :kept] = sample[:, :kept]
            assert split.num_frame[i] == kept
            np.testing.assert_array_equal(split.data[i], pre_normalize(fixed)[0])
    assert not list(tmp_path.rglob(".*building*"))
    writer = CmdSplitWriter(tmp_path / "full", {("x", "train"): 1}, max_frames=10)
    writer.add(jobs[0][0], "s", 0, [("x", "train")])
    with pytest.raises(ValueError, match="capacity"):
        writer.add(jobs[0][0], "t", 0, [("x", "train")])
    writer.close()
