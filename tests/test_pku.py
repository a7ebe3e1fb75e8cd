"""prepare_pku: PKU-MMD skeleton/label/split files -> CMD layout, with every skip reported."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks._preprocess_reference import pre_normalize_loop
from i2md_lib.data.ntu_format import SkeletonFormatError
from i2md_lib.data.pku import prepare_pku, read_pku_labels, read_pku_skeleton, read_training_videos
from i2md_lib.data.store import load_split

T_STORED = 32


def frames(t: int, seed: int, two: bool = True) -> np.ndarray:
    """``(T, 150)`` rows: 2 bodies x 25 joints x xyz, moving; second body zero if not ``two``."""
    rng = np.random.default_rng(seed)
    base = rng.normal(0, 0.3, (1, 2, 25, 3)) + [0.0, 0.0, 3.0]
    motion = np.cumsum(rng.normal(0, 0.01, (t, 2, 25, 3)), axis=0)
    x = base + motion
    if not two:
        x[:, 1] = 0
    return x.reshape(t, 150)


def write_frames(path: Path, x: np.ndarray) -> None:
    path.write_text("".join(" ".join(f"{v:.6f}" for v in row) + " \n" for row in x))


@pytest.fixture()
def pku(tmp_path: Path) -> Path:
    root = tmp_path / "PKU-MMD"
    (root / "skeleton").mkdir(parents=True)
    (root / "label").mkdir()
    write_frames(root / "skeleton" / "0002-L.txt", frames(60, 0))
    (root / "label" / "0002-L.txt").write_text("3,0,20,1\n7,20,45,2\n52,1,5,1\n9,30,30,1\n\n")
    write_frames(root / "skeleton" / "0002-M.txt", frames(80, 1, two=False))
    (root / "label" / "0002-M.txt").write_text("51,10,75,1\n1,70,90,1\n2,85,95,1\n")  # long; past end; outside
    x = frames(10, 2)
    write_frames(root / "skeleton" / "0003-R.txt", x)
    lines = (root / "skeleton" / "0003-R.txt").read_text().splitlines()
    lines[4] = " ".join(lines[4].split()[:149])                                      # line 5: 149 values
    (root / "skeleton" / "0003-R.txt").write_text("\n".join(lines) + "\n")
    (root / "label" / "0003-R.txt").write_text("4,0,8,1\n")
    write_frames(root / "skeleton" / "0004-L.txt", frames(10, 3))
    (root / "label" / "0004-L.txt").write_text("1,2,3\n")                          # 3 fields
    write_frames(root / "skeleton" / "0010-L.txt", frames(10, 4))                  # no label file
    (root / "label" / "0009-L.txt").write_text("1,0,5,1\n")                        # no skeleton file
    write_frames(root / "skeleton" / "0005-L.txt", frames(30, 5))
    (root / "label" / "0005-L.txt").write_text("12, 3, 25, 1\r\n")                 # spaces and CRLF
    (root / "cross_subject_v2.txt").write_text(
        "Training videos: \n0002-L, 0002-M, 0003-R, 0099-L\nValidataion videos: \n0005-L, 0004-L\n")
    (root / "cross_view_v2.txt").write_text("Training videos:\n0002-M, 0005-L\n")
    return root


def expected(root: Path, video: str, start: int, end: int) -> tuple[np.ndarray, int]:
    """Independent path: loadtxt -> slice -> (3, T, 25, 2) -> cut/pad -> loop normalisation."""
    x = np.loadtxt(root / "skeleton" / f"{video}.txt")[start:end]
    clip = x.reshape(len(x), 2, 25, 3).transpose(3, 0, 2, 1)
    kept = min(len(x), T_STORED)
    fixed = np.zeros((1, 3, T_STORED, 25, 2), dtype=np.float32)
    fixed[0, :, :kept] = clip[:, :kept]
    return pre_normalize_loop(fixed)[0], kept


def test_prepare_pku2(pku, tmp_path):
    out = tmp_path / "out"
    report = prepare_pku(pku, out, "pku2", max_frames=T_STORED)
    assert report.samples_written == 5
    assert report.split_sizes == {"xsub": {"train": 4, "val": 1}, "xview": {"train": 3, "val": 2}}
    train = load_split(out / "xsub", "train", mmap=False)
    assert train.names == ["0002-L_0", "0002-L_1", "0002-M_0", "0002-M_1"]
    assert train.labels.tolist() == [2, 6, 50, 0]
    assert train.num_frame.tolist() == [20, 25, T_STORED, 10]          # 65 frames stored as 32; 70:90 -> 10
    val = load_split(out / "xsub", "val", mmap=False)
    assert val.names == ["0005-L_0"] and val.labels.tolist() == [11]
    assert load_split(out / "xview", "train").names == ["0002-M_0", "0002-M_1", "0005-L_0"]
    for split in (train, val):
        for i, name in enumerate(split.names):
            video, row = name.rsplit("_", 1)
            _, start, end, _ = read_pku_labels(pku / "label" / f"{video}.txt")[int(row)]
            want, kept = expected(pku, video, start, end)
            assert split.num_frame[i] == kept
            np.testing.assert_allclose(split.data[i], want, atol=1e-5)
    np.testing.assert_array_equal(train.data[2, ..., 1], 0)              # one-person video stays one person

    reasons = [(Path(s.path.split(",")[0]).name, s.reason) for s in report.skipped]
    assert ("0002-L.txt", "bad label: class 52 is outside 1..51") in reasons
    assert ("0002-L.txt", "bad interval: start 30, end 30") in reasons
    assert any(p == "0002-M.txt" and "start 85 is past the last of 80 frames" in r for p, r in reasons)
    assert any(p == "0003-R.txt" and r.startswith("parse error") and "line 5" in r and "149" in r
               for p, r in reasons)
    assert any(p == "0004-L.txt" and r.startswith("label parse error") for p, r in reasons)
    assert ("0010-L.txt", f"no label file: {pku / 'label' / '0010-L.txt'} is missing") in reasons
    assert ("0009-L.txt", "label without skeleton file") in reasons
    assert len(reasons) == 7
    notes = " ".join(report.notes)
    assert "0099-L" in notes                                              # training id without a video
    assert "0002-M_1" in notes and "0002-M_0" in notes                    # cut at the end / to 32 frames


def test_pku1_default_split_names_and_overrides(pku, tmp_path):
    with pytest.raises(FileNotFoundError, match="cross-subject.txt"):
        prepare_pku(pku, tmp_path / "o", "pku1")
    report = prepare_pku(pku, tmp_path / "o", "pku1", benchmarks=["xsub"], max_frames=T_STORED,
                         split_files={"xsub": "cross_subject_v2.txt"})
    assert report.split_sizes == {"xsub": {"train": 4, "val": 1}}


def test_missing_folders_and_bad_split_file(pku, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        prepare_pku(tmp_path / "nowhere", tmp_path / "o")
    with pytest.raises(FileNotFoundError, match="label folder"):
        prepare_pku(pku, tmp_path / "o", label_dir="labels")
    (pku / "cross_view_v2.txt").write_text("Training videos:\n\n")
    with pytest.raises(SkeletonFormatError, match="line 2"):
        prepare_pku(pku, tmp_path / "o")
    with pytest.raises(ValueError, match="pku3"):
        prepare_pku(pku, tmp_path / "o", "pku3")


def test_readers(pku, tmp_path):
    assert read_training_videos(pku / "cross_subject_v2.txt") == {"0002-L", "0002-M", "0003-R", "0099-L"}
    assert read_pku_skeleton(pku / "skeleton" / "0002-L.txt").shape == (60, 150)
    extra = tmp_path / "extra.txt"
    write_frames(extra, frames(3, 0))
    extra.write_text(extra.read_text().replace(" ", " 1.0 ", 1))          # 151 values on line 1
    with pytest.raises(SkeletonFormatError, match="line 1: a frame line needs 150 values.*found 151"):
        read_pku_skeleton(extra)
    nan = tmp_path / "nan.txt"
    fixed = frames(4, 1)
    fixed[2, 7] = np.nan
    write_frames(nan, fixed)
    with pytest.raises(SkeletonFormatError, match=r"line 3: value 8 is nan"):
        read_pku_skeleton(nan)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(SkeletonFormatError, match="empty"):
        read_pku_skeleton(empty)
    bad = tmp_path / "bad_label.txt"
    bad.write_text("1,2,3,1\n1,2.5,3,1\n")
    with pytest.raises(SkeletonFormatError, match="line 2"):
        read_pku_labels(bad)
