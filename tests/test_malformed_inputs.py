"""Malformed and hostile inputs, as a new user (or a downloaded folder) would bring them.

Every input gets a one-line error that names the file or the config key, or a skip with
its reason in the conversion report; nothing hangs, nothing non-finite is written, and a
crafted pickle runs nothing. The inputs, by kind: ``.skeleton`` files and PKU-MMD files
(:data:`BAD_SKELETONS`, :data:`BAD_PKU`), split arrays (:data:`BAD_ARRAYS`), label
pickles (:data:`BAD_LABELS`), checkpoints (:data:`BAD_CHECKPOINTS`), configs
(:data:`BAD_CONFIGS`) and command lines (:data:`BAD_COMMANDS`); ``test_enough_inputs``
counts them.
"""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from i2md_lib.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from i2md_lib.models.pretrained import load_pretrained
from i2md_lib.cli import main
from i2md_lib.config import ConfigError, ExperimentConfig
from i2md_lib.data import ntu
from i2md_lib.data.ntu import MAX_FILE_FRAMES, prepare_ntu
from i2md_lib.data.ntu_format import SkeletonFile, SkeletonFormatError, missing_samples, read_skeleton, \
    write_skeleton
from i2md_lib.data.pku import prepare_pku
from i2md_lib.data.store import DataFormatError, SkeletonArrays, load_split, read_labels, save_split
from i2md_lib.models.cmd_checkpoint import CheckpointError as CmdCheckpointError
from i2md_lib.models.cmd_checkpoint import load_cmd_checkpoint
from i2md_lib.train import NonFiniteLossError, pretrain

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- .skeleton files
def valid_skeleton(t: int = 6, seed: int = 0) -> SkeletonFile:
    """One body in every frame: line 1 frame count, frame f's body count on line 2 + 27 f,
    its info line next, then "25" and the 25 joint lines (x y z first)."""
    rng = np.random.default_rng(seed)
    xyz = rng.normal(0, 0.3, (1, 1, 25, 3)) + [0.0, 0.0, 3.0]
    xyz = xyz + np.cumsum(rng.normal(0, 0.02, (t, 1, 25, 3)), axis=0)
    return SkeletonFile.from_dense(xyz)


def skeleton_lines(seed: int = 0) -> list[str]:
    """The lines of :func:`valid_skeleton` as :func:`write_skeleton` writes them."""
    with tempfile.TemporaryDirectory() as folder:
        return write_skeleton(Path(folder) / "x.skeleton", valid_skeleton(seed=seed)).read_text().splitlines()


def replace_joint_value(lines: list[str], line_no: int, column: int, token: str) -> list[str]:
    fields = lines[line_no - 1].split()
    fields[column] = token
    return lines[:line_no - 1] + [" ".join(fields)] + lines[line_no:]


def _bad_skeletons() -> dict[str, tuple[bytes, str]]:
    """name -> (file content, a piece of the expected reason); line 5 is joint 1 of frame 1."""
    base = skeleton_lines()
    text = lambda lines: ("\n".join(lines) + "\n").encode()   # noqa: E731
    many_frames = ["%d" % (MAX_FILE_FRAMES + 1), *base[1:29], *["0"] * MAX_FILE_FRAMES]   # frame 1 + empty ones
    return {
        "x = 1e308": (text(replace_joint_value(base, 5, 0, "1e308")), "not a position in metres"),
        "z = 1e39 (inf as float32)": (text(replace_joint_value(base, 6, 2, "1e39")), "not a position"),
        "y = -1e5": (text(replace_joint_value(base, 7, 1, "-1e5")), "not a position"),
        "x = nan": (text(replace_joint_value(base, 5, 0, "nan")), "must be finite"),
        "z = inf": (text(replace_joint_value(base, 5, 2, "inf")), "must be finite"),
        "depthX = -inf": (text(replace_joint_value(base, 5, 3, "-inf")), "must be finite"),
        "frame count 999999999999": (text(["999999999999", *base[1:]]), "declares 999999999999 frames"),
        "frame count of 30 digits": (text(["9" * 30, *base[1:]]), "below 10**18"),
        "negative frame count": (text(["-3", *base[1:]]), "non-negative integer"),
        "body count 999999999": (text([base[0], "999999999", *base[2:]]), "info line of body 2 of frame 1"),
        "24 joints": (text([*base[:3], "24", *base[4:]]), "24 joints"),
        "bodyID of 5000 digits": (text([base[0], base[1], "7" * 5000 + base[2][base[2].index(" "):],
                                         *base[3:]]), "bodyID"),
        "joint value abc": (text(replace_joint_value(base, 9, 4, "abc")), "'abc' is not a number"),
        "info line of 3 values": (text([*base[:2], "1 2 3", *base[3:]]), "expected 10 value(s)"),
        "empty file": (b"", "empty file"),
        "binary garbage": (np.random.default_rng(0).bytes(3000), "line 1"),
        "truncated mid-joints": (text(base[:40]), "file ends"),
        "lines after the last frame": (text([*base, "1 2 3"]), "left after the last"),
        "too many frames": (text(many_frames), "impossible"),
    }


BAD_SKELETONS = _bad_skeletons()


def ntu60_names(count: int) -> list[str]:
    """Distinct NTU-60 sample names that are not on the missing-skeleton list."""
    missing = missing_samples("ntu60")
    names = (f"S001C00{c}P00{p}R001A{a:03d}" for a in range(1, 61) for p in (1, 2) for c in (1, 2, 3))
    return [n for n in names if n not in missing][:count]


@pytest.mark.parametrize("case", list(BAD_SKELETONS))
def test_bad_skeleton_file_raises_naming_the_file(tmp_path, case):
    content, reason = BAD_SKELETONS[case]
    path = tmp_path / "S001C001P001R001A001.skeleton"
    path.write_bytes(content)
    if case == "too many frames":      # well formed, but prepare-ntu refuses to expand it
        assert read_skeleton(path).num_frames == MAX_FILE_FRAMES + 1
        return
    with pytest.raises(SkeletonFormatError) as err:
        read_skeleton(path)
    message = str(err.value)
    assert str(path) in message and reason in message and "\n" not in message


def test_prepare_ntu_skips_every_bad_file_with_its_reason(tmp_path, monkeypatch):
    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    good_a, good_b, denied, *bad_names = ntu60_names(3 + len(BAD_SKELETONS))
    for i, name in enumerate((good_a, good_b, denied)):
        write_skeleton(raw / f"{name}.skeleton", valid_skeleton(seed=i))
    cases = dict(zip(bad_names, BAD_SKELETONS))
    for name, case in cases.items():
        (raw / f"{name}.skeleton").write_bytes(BAD_SKELETONS[case][0])
    unreadable = raw / f"{denied}.skeleton"   # one more: a file the user may not read
    real_read = ntu.read_skeleton

    def read_or_deny(path):
        if Path(path) == unreadable:
            raise PermissionError(13, "Permission denied", str(path))
        return real_read(path)

    folder = raw / "S002C001P001R001A002.skeleton"              # a folder named like a skeleton file
    folder.mkdir()
    monkeypatch.setattr(ntu, "read_skeleton", read_or_deny)
    report = prepare_ntu(raw, out, "ntu60", benchmarks=["xsub"])
    reasons = {Path(s.path).stem: s.reason for s in report.skipped}
    assert report.samples_written == 2 and len(report.skipped) == len(BAD_SKELETONS) + 2
    assert reasons[denied] == "unreadable: Permission denied"
    assert reasons[folder.stem] == "a folder, not a .skeleton file"
    for name, case in cases.items():
        assert BAD_SKELETONS[case][1] in reasons[name], (case, reasons[name])
    written = [load_split(out / "xsub", part, mmap=False) for part in ("train", "val")]
    assert sum(len(s) for s in written) == 2
    assert all(np.isfinite(s.data).all() and (np.abs(s.data) < 100).all() for s in written)
    assert (out / ntu.REPORT_NAME).is_file()


def test_prepare_on_a_raw_folder_without_samples_is_an_error(tmp_path):
    """An empty raw folder, or one whose every entry is skipped, writes nothing and says why;
    an output folder already there is left as it was."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "README").write_text("old dataset")
    empty = tmp_path / "raw"
    empty.mkdir()
    with pytest.raises(ntu.NothingToWriteError) as err:
        prepare_ntu(empty, out)
    assert str(err.value) == (f"{empty}: empty raw folder, no file found (expected "
                              f"SsssCcccPpppRrrrAaaa.skeleton files); nothing was written")
    (empty / "S001C001P001R001A001.skeleton").mkdir()          # only a folder and a bad file
    (empty / "S001C001P002R001A001.skeleton").write_text("0\n")
    with pytest.raises(ntu.NothingToWriteError) as err:
        prepare_ntu(empty, out)
    assert "2 entries seen, all skipped ({'a folder, not a .skeleton file': 1, 'no frames': 1})" in str(err.value)
    assert [p.name for p in out.iterdir()] == ["README"]
    pku = _bad_pku(tmp_path)
    for path in (pku / "skeleton").iterdir():
        path.unlink()
    with pytest.raises(ntu.NothingToWriteError, match=r"skeleton.*: empty raw folder|PKU.*: empty raw folder"):
        prepare_pku(pku, out, "pku2", ["xsub"])
    (pku / "skeleton" / "0001-L.txt").mkdir()
    with pytest.raises(ntu.NothingToWriteError, match="all skipped .*'a folder, not a skeleton .txt file': 1"):
        prepare_pku(pku, out, "pku2", ["xsub"])


def _bad_pku(tmp_path: Path) -> Path:
    root = tmp_path / "PKU"
    (root / "skeleton").mkdir(parents=True)
    (root / "label").mkdir()
    rng = np.random.default_rng(0)
    for video in ("0001-L", "0002-L", "0003-L"):
        frames = rng.normal(0, 0.3, (20, 150)) + 2.0
        if video == "0002-L":
            frames[4, 7] = 1e39                                       # overflows float32
        (root / "skeleton" / f"{video}.txt").write_text(
            "".join(" ".join(f"{v:.6g}" for v in row) + "\n" for row in frames))
    (root / "label" / "0001-L.txt").write_text("3,0,15,1\n")
    (root / "label" / "0002-L.txt").write_text("3,0,15,1\n")
    (root / "label" / "0003-L.txt").write_text("3,0," + "9" * 30 + ",1\n")   # a 30-digit frame index
    (root / "cross_subject_v2.txt").write_text("Training videos:\n0001-L, 0002-L\n")
    return root


BAD_PKU = ("coordinate 1e39 in a PKU-MMD skeleton file", "a 30-digit number in a PKU-MMD label file")


def test_prepare_pku_skips_absurd_values(tmp_path):
    root = _bad_pku(tmp_path)
    (root / "skeleton" / "0004-L.txt").mkdir()                 # a folder among the skeleton files
    report = prepare_pku(root, tmp_path / "out", "pku2", ["xsub"])
    reasons = {Path(s.path).stem: s.reason for s in report.skipped}
    assert report.samples_written == 1 and reasons["0004-L"] == "a folder, not a skeleton .txt file"
    assert "not a position in metres" in reasons["0002-L"] and "line 5" in reasons["0002-L"]
    assert "at most 10 digits" in reasons["0003-L"]


# --------------------------------------------------------------------------- split arrays
def clean_split(n: int = 4, t: int = 12) -> SkeletonArrays:
    rng = np.random.default_rng(1)
    return SkeletonArrays(rng.normal(size=(n, 3, t, 25, 2)).astype(np.float32), np.full(n, t, np.int64),
                          np.arange(n) % 2, [f"S001C001P001R001A00{i + 1}" for i in range(n)])


def _with_nan(folder: Path) -> str:
    data = np.load(folder / "train_data_joint.npy")
    data[2, 1, 3, 4, 0] = np.nan
    np.save(folder / "train_data_joint.npy", data)
    return "clip 2 (S001C001P001R001A003) holds 1 NaN/inf"


def _with_inf(folder: Path) -> str:
    data = np.load(folder / "train_data_joint.npy")
    data[0, :, 0] = np.inf
    np.save(folder / "train_data_joint.npy", data)
    return "clip 0 (S001C001P001R001A001) holds 150 NaN/inf"


def _save(name: str, array: np.ndarray, expected: str, pickled: bool = False):
    def damage(folder: Path) -> str:
        np.save(folder / name, array, allow_pickle=pickled)
        return expected
    return damage


def _garbage(name: str, expected: str):
    def damage(folder: Path) -> str:
        (folder / name).write_bytes(b"\x93NUMPY garbage" * 10)
        return expected
    return damage


def _labels(labels: list[int], expected: str):
    def damage(folder: Path) -> str:
        names, _ = read_labels(folder / "train_label.pkl")
        (folder / "train_label.pkl").write_bytes(pickle.dumps((names, labels)))
        return expected
    return damage


def _far_value(folder: Path) -> str:
    data = np.load(folder / "train_data_joint.npy")
    data[3, 2, 11, 24, 1] = -250.0
    np.save(folder / "train_data_joint.npy", data)
    return "clip 3 (S001C001P001R001A004) holds 1 coordinate(s) beyond 100 m (first -250)"


BAD_ARRAYS = {
    "NaN in a clip": (_with_nan, "train_data_joint.npy"),
    "inf in a clip": (_with_inf, "train_data_joint.npy"),
    "data of 4 dimensions": (_save("train_data_joint.npy", np.zeros((4, 3, 12, 25)), "expected shape"),
                             "train_data_joint.npy"),
    "integer coordinates": (_save("train_data_joint.npy", np.zeros((4, 3, 12, 25, 2), np.int32),
                                  "expected float coordinates"), "train_data_joint.npy"),
    "data not an .npy file": (_garbage("train_data_joint.npy", "not a readable .npy"), "train_data_joint.npy"),
    "data as a pickled object array": (_save("train_data_joint.npy", np.array([{"a": 1}] * 4, dtype=object),
                                             "not a readable .npy", pickled=True), "train_data_joint.npy"),
    "frame counts with NaN": (_save("train_num_frame.npy", np.array([12.0, np.nan, 3.0, 4.0]),
                                    "whole numbers"), "train_num_frame.npy"),
    "negative frame count": (_save("train_num_frame.npy", np.array([12, -5, 3, 4]), "negative frame count"),
                             "train_num_frame.npy"),
    "frame counts in 2-D": (_save("train_num_frame.npy", np.ones((2, 2), np.int64), "1-D array"),
                            "train_num_frame.npy"),
    "frame counts as text": (_save("train_num_frame.npy", np.array(["12", "3", "4", "5"]), "must be integers"),
                             "train_num_frame.npy"),
    "one frame count too few": (_save("train_num_frame.npy", np.array([12, 12, 12]), "3 frame counts"),
                                ""),
    "frame count 480 where T = 12": (_save("train_num_frame.npy", np.array([12, 480, 12, 12]),
                                           "clip 1 (S001C001P001R001A002) has a frame count of 480, outside "
                                           "[1, 12]"), "train_num_frame.npy"),
    "frame count 0": (_save("train_num_frame.npy", np.array([12, 12, 12, 0]), "clip 3 (S001C001P001R001A004) "
                            "has a frame count of 0, outside [1, 12]"), "train_num_frame.npy"),
    "label 500 of 2 classes": (_labels([0, 1, 500, 1], "clip 2 (S001C001P001R001A003) has label 500, outside "
                                                       "[0, 2)"), "train_label.pkl"),
    "a negative label": (_labels([0, -1, 0, 1], "clip 1 (S001C001P001R001A002) has label -1"), "train_label.pkl"),
    "every value 1e30": (_save("train_data_joint.npy", np.full((4, 3, 12, 25, 2), 1e30, np.float32),
                               "clip 0 (S001C001P001R001A001) holds 1800 coordinate(s) beyond 100 m (first "
                               "1e+30): not positions in metres"), "train_data_joint.npy"),
    "one value -250 m": (_far_value, "train_data_joint.npy"),
    "one body slot (M = 1)": (_save("train_data_joint.npy", np.zeros((4, 3, 12, 25, 1), np.float32),
                                    "clips have 1 body slot(s) per frame, the layout has 2"), "train_data_joint.npy"),
    "three body slots (M = 3)": (_save("train_data_joint.npy", np.zeros((4, 3, 12, 25, 3), np.float32),
                                       "clips have 3 body slot(s) per frame"), "train_data_joint.npy"),
    "24 joints": (_save("train_data_joint.npy", np.zeros((4, 3, 12, 24, 2), np.float32),
                        "clips have 24 joints per body, the layout has 25"), "train_data_joint.npy"),
}


@pytest.mark.parametrize("case", list(BAD_ARRAYS))
def test_bad_split_array_is_refused_naming_the_file(tmp_path, case):
    save_split(tmp_path, "train", clean_split())
    damage, file_name = BAD_ARRAYS[case]
    expected = damage(tmp_path)
    for mmap in (True, False):
        with pytest.raises(DataFormatError) as err:
            load_split(tmp_path, "train", mmap=mmap, num_classes=2)
        message = str(err.value)
        assert str(tmp_path / file_name) in message and expected in message and "\n" not in message


def test_split_of_other_layouts_and_the_cmd_pku_frame_counts(tmp_path, caplog):
    """``joints``/``bodies`` are the layout's; a CMD reference PKU-MMD folder (T = 300) stores
    uncut lengths: they are read as 300 and counted in the log, at any other T refused."""
    arrays = clean_split()
    arrays = SkeletonArrays(arrays.data[:, :, :, :20, :1].copy(), arrays.num_frame, arrays.labels, arrays.names)
    save_split(tmp_path / "small", "train", arrays)
    assert len(load_split(tmp_path / "small", "train", joints=(20, 25), bodies=1)) == 4
    with pytest.raises(DataFormatError, match="clips have 20 joints per body, the layout has 25"):
        load_split(tmp_path / "small", "train", bodies=1)
    long = clean_split(3, 300)
    save_split(tmp_path / "pku", "train", long)
    np.save(tmp_path / "pku" / "train_num_frame.npy", np.array([300, 480, 51]))
    with caplog.at_level("INFO", logger="i2md_lib"):
        assert load_split(tmp_path / "pku", "train").num_frame.tolist() == [300, 300, 51]
    assert "1 clip(s) count more frames than the 300 stored" in caplog.text


def test_clips_shorter_than_the_window_are_stretched_and_counted_in_the_log(caplog):
    """Case 5: a clip shorter than the window is kept and stretched to it (CMD's rule), and
    loading the split logs how many there are."""
    from i2md_lib.data.datasets import PretrainDataset, load_arrays

    cfg = ExperimentConfig.for_profile("smoke", {"data.window": 32})    # smoke clips have 20-48 frames
    with caplog.at_level("INFO", logger="i2md_lib"):
        arrays = load_arrays(cfg.data, "train")
    short = np.flatnonzero(np.minimum(arrays.num_frame, cfg.data.max_frames) < 32)
    assert 0 < len(short) < len(arrays)
    shortest = int(arrays.num_frame[short].min())
    assert (f"synthetic xsub train: {len(short)} of {len(arrays)} clips have fewer frames than the 32-frame "
            f"window (shortest {shortest}); each is stretched to the window") in caplog.text
    view_q, view_k, _ = PretrainDataset.from_config(arrays, cfg)[int(short[0])]
    assert view_q.shape[1] == view_k.shape[1] == 32 and torch.isfinite(view_q).all()
    caplog.clear()
    with caplog.at_level("INFO", logger="i2md_lib"):
        load_arrays(ExperimentConfig.for_profile("smoke").data, "train")      # window 16: none is short
    assert "window" not in caplog.text


def test_save_split_refuses_non_finite_clips(tmp_path):
    arrays = clean_split()
    arrays.data[1, 0, 2, 3, 1] = np.inf
    with pytest.raises(DataFormatError, match="not written, clip 1"):
        save_split(tmp_path, "train", arrays)
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- label pickles
class RunsCode:
    """Unpickling it would call ``command`` (what a crafted label file does)."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def crafted(marker: Path) -> dict[str, bytes]:
    """Pickles that would run code or build other objects than names and labels."""
    touch = f"touch {marker}"
    return {
        "os.system in the names": pickle.dumps(([RunsCode(os.system, touch)], [0])),
        "subprocess.call as the whole file": pickle.dumps(RunsCode(subprocess.call, ["touch", str(marker)])),
        "builtins.exec": pickle.dumps((["a"], [RunsCode(exec, f"open({str(marker)!r}, 'w')")])),
        "a numpy array of labels": pickle.dumps((["a", "b"], np.array([0, 1]))),
        "a numpy float label": pickle.dumps((["a"], [np.float64(1.0)])),
    }


BAD_LABELS = {
    "a dict": (pickle.dumps({"names": ["a"], "labels": [0]}), "(names, labels) pair"),
    "names that are numbers": (pickle.dumps(([1, 2], [0, 1])), "sample name 0 is a int"),
    "float labels": (pickle.dumps((["a", "b"], [0, 1.5])), "label 1 is 1.5"),
    "bool labels": (pickle.dumps((["a", "b"], [True, 0])), "label 0 is True"),
    "more names than labels": (pickle.dumps((["a", "b", "c"], [0, 1])), "3 names but 2 labels"),
    "a label of 30 digits": (pickle.dumps((["a"], [10**30])), "fit 64 bits"),
    "truncated pickle": (pickle.dumps((["a", "b"], [0, 1]))[:-5], "expected a pickled"),
    "not a pickle": (b"names,labels\na,0\n", "expected a pickled"),
    "an empty file": (b"", "expected a pickled"),
}


@pytest.mark.parametrize("case", list(BAD_LABELS))
def test_bad_label_file_is_refused_naming_the_file(tmp_path, case):
    content, expected = BAD_LABELS[case]
    path = tmp_path / "train_label.pkl"
    path.write_bytes(content)
    with pytest.raises(DataFormatError) as err:
        read_labels(path)
    assert str(path) in str(err.value) and expected in str(err.value) and "\n" not in str(err.value)


def test_crafted_label_pickles_run_nothing(tmp_path):
    marker = tmp_path / "code_ran"
    for case, content in crafted(marker).items():
        save_split(tmp_path / case, "train", clean_split(1))
        (tmp_path / case / "train_label.pkl").write_bytes(content)
        with pytest.raises(DataFormatError, match="refusing to load|refusing numpy") as err:
            load_split(tmp_path / case, "train")
        assert "train_label.pkl" in str(err.value)
        assert not marker.exists(), case
    pickle.loads(crafted(marker)["os.system in the names"])   # the same bytes do run code with pickle
    assert marker.exists()


def test_labels_written_by_the_reference_load(tmp_path):
    """CMD's data_gen pickles Python ints; numpy integer scalars (any protocol) load too."""
    path = tmp_path / "train_label.pkl"
    for protocol in (2, 3, 4, 5):
        path.write_bytes(pickle.dumps((["S001", "S002"], [np.int64(4), np.uint8(7)]), protocol=protocol))
        names, labels = read_labels(path)
        assert names == ["S001", "S002"] and labels.tolist() == [4, 7] and labels.dtype == np.int64
    path.write_bytes(pickle.dumps((("S001",), (3,))))
    assert read_labels(path)[1].tolist() == [3]


# --------------------------------------------------------------------------- checkpoints
def tiny_arrays(n: int = 32, t: int = 24, nan_clip: int | None = None) -> SkeletonArrays:
    rng = np.random.default_rng(0)
    data = rng.normal(size=(n, 3, t, 25, 2)).astype(np.float32)
    if nan_clip is not None:
        data[nan_clip, :, 3] = np.nan
    return SkeletonArrays(data, np.full(n, t, np.int64), np.zeros(n, np.int64), [f"c{i}" for i in range(n)])


def smoke(**overrides) -> ExperimentConfig:
    return ExperimentConfig.for_profile("smoke", {"pretrain.method": "moco", "pretrain.epochs": 1,
                                                  "pretrain.lr_milestones": [], **overrides})


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("good_run")
    pretrain(smoke(), run, arrays=tiny_arrays(), progress=False, max_steps=1)
    return run


def _nan_weight(state: dict, marker: Path) -> dict:
    key = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][key][0] = float("nan")
    return state


def _inf_momentum(state: dict, marker: Path) -> dict:
    for buffers in state["optimizer"]["state"].values():
        buffers["momentum_buffer"].fill_(float("inf"))
    return state


def _code_in_checkpoint(state: dict, marker: Path) -> RunsCode:
    return RunsCode(os.system, f"touch {marker}")


def _config_as_text(state: dict, marker: Path) -> dict:
    state["config"] = "pretrain: {method: moco}"
    return state


def _no_config_section(state: dict, marker: Path) -> dict:
    state["config"]["encoder"] = 3
    return state


def _wrong_digest(state: dict, marker: Path) -> RunsCode | dict:
    state["step"] += 1            # written without sealing it again (see the test)
    return state


BAD_CHECKPOINTS = {
    "NaN in a weight": (_nan_weight, "NaN/inf values in 1 tensor(s): model."),
    "inf in the optimiser's momentum": (_inf_momentum, ".momentum_buffer"),
    "a pickled callable": (_code_in_checkpoint, "unreadable checkpoint"),
    "a stored config that is a string": (_config_as_text, "the stored config is a str, not a mapping of config "
                                                          "sections"),
    "a config section that is a number": (_no_config_section, "section 'encoder' is a int"),
    "an entry changed after the digest": (_wrong_digest, "the contents do not match the digest written with them"),
}


@pytest.mark.parametrize("case", list(BAD_CHECKPOINTS))
def test_bad_checkpoint_is_refused(tmp_path, good_run, case):
    """Damaged states are saved as a run would save them (with their digest), except the two
    that are not dicts or must keep the old digest."""
    damage, expected = BAD_CHECKPOINTS[case]
    path, marker = tmp_path / "checkpoint.pt", tmp_path / "code_ran"
    state = damage(load_checkpoint(good_run / "checkpoint.pt"), marker)
    torch.save(state, path) if case in ("a pickled callable", "an entry changed after the digest") \
        else save_checkpoint(path, state)
    for load in (load_checkpoint, lambda p: load_pretrained(p.parent)):   # resume / evaluate
        with pytest.raises(CheckpointError) as err:
            load(path)
        assert str(path) in str(err.value) and expected in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists()


def flip_a_weight_byte(source: Path, target: Path) -> None:
    """``source`` with the lowest mantissa byte of one float32 weight flipped: the file still
    loads and every value stays finite (torch checks no checksum of its own)."""
    weights = torch.load(source, weights_only=True)["model"]
    tensor = next(v for v in weights.values() if v.dtype == torch.float32 and v.numel() >= 64)
    raw, block = bytearray(source.read_bytes()), tensor.numpy().tobytes()
    at = raw.find(block)
    assert at >= 0 and raw.find(block, at + 1) < 0
    raw[at + 4 * 17] ^= 0x01                          # little endian: byte 0 of element 17
    target.write_bytes(bytes(raw))
    changed = torch.load(target, weights_only=True)["model"]
    assert sum(not torch.equal(changed[k], weights[k]) for k in weights) == 1
    assert all(torch.isfinite(v).all() for v in changed.values() if v.is_floating_point())


def test_a_flipped_byte_in_a_checkpoint_is_caught(tmp_path, good_run, capsys):
    run = tmp_path / "run"
    run.mkdir()
    flip_a_weight_byte(good_run / "checkpoint.pt", run / "checkpoint.pt")
    (run / "config.yaml").write_bytes((good_run / "config.yaml").read_bytes())
    expected = f"{run / 'checkpoint.pt'}: the contents do not match the digest written with them"
    for load in (load_checkpoint, load_pretrained):
        with pytest.raises(CheckpointError, match="do not match the digest") as err:
            load(run / "checkpoint.pt")
        assert str(err.value).startswith(expected)
    with pytest.raises(CheckpointError, match="do not match the digest"):          # resume
        pretrain(smoke(**{"pretrain.epochs": 2}), run, arrays=tiny_arrays(), progress=False,
                 allow_changes=["pretrain.epochs"])
    code, err = run_cli(capsys, "evaluate", "--run-dir", str(run), "--no-progress")
    assert code == 2 and err.strip().splitlines()[-1].startswith(f"error: {expected}")


def test_files_without_a_digest_still_load(tmp_path, good_run):
    """Checkpoints and model files from before digests (those committed under results/) load;
    a model file saved today carries its digest and a flipped byte in it is caught."""
    state = load_checkpoint(good_run / "checkpoint.pt")
    assert len(state.pop("digest")) == 64
    torch.save(state, tmp_path / "checkpoint.pt")
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 1
    committed = REPO / "results" / "book" / "main" / "cmd" / "seed0_model.pt"
    assert "digest" not in torch.load(committed, weights_only=True)
    cfg, model = load_pretrained(committed)
    from i2md_lib.models.pretrained import save_model_file

    path = save_model_file(tmp_path / "seed0_model.pt", cfg, model)
    assert load_pretrained(path)[0] == cfg
    flip_a_weight_byte(path, path)
    with pytest.raises(CheckpointError, match="seed0_model.pt: the contents do not match the digest"):
        load_pretrained(path)


def test_resuming_with_weights_of_another_size_is_one_line(tmp_path, good_run):
    """A checkpoint whose weights do not fit the config (here: another hidden size, allowed as a
    change) names the file in one line instead of torch's list of every tensor."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes((good_run / "checkpoint.pt").read_bytes())
    hidden = smoke().encoder.hidden_size
    with pytest.raises(CheckpointError) as err:
        pretrain(smoke(**{"encoder.hidden_size": 2 * hidden}), run, arrays=tiny_arrays(), progress=False,
                 allow_changes=["encoder.hidden_size"])
    message = str(err.value)
    assert message.startswith(f"{run / 'checkpoint.pt'}: the stored weights do not fit the model of this config: ")
    assert "tensor(s) of another shape, 0 missing, 0 unexpected (first " in message and "\n" not in message


def test_official_cmd_checkpoint_with_nan_weights_is_refused(tmp_path):
    enc = {"input_norm.weight": torch.ones(150), "input_norm.bias": torch.zeros(150),
           "input_norm.running_mean": torch.zeros(150), "input_norm.running_var": torch.ones(150),
           "input_norm.num_batches_tracked": torch.tensor(0)}
    for suffix in ("", "_reverse"):
        enc[f"encoder.gru.weight_ih_l0{suffix}"] = torch.zeros(12, 150)
        enc[f"encoder.gru.weight_hh_l0{suffix}"] = torch.zeros(12, 4)
        enc[f"encoder.gru.bias_ih_l0{suffix}"] = torch.zeros(12)
        enc[f"encoder.gru.bias_hh_l0{suffix}"] = torch.zeros(12)
    state = {f"module.encoder_q.{k}": v for k, v in enc.items()}
    path = tmp_path / "checkpoint_0450.pth.tar"
    torch.save({"epoch": 451, "state_dict": state}, path)
    assert set(load_cmd_checkpoint(path, ["joint"])) == {"joint"}          # finite: loads
    state["module.encoder_q.encoder.gru.weight_hh_l0"][1, 2] = float("nan")
    torch.save({"epoch": 451, "state_dict": state}, path)
    with pytest.raises(CmdCheckpointError, match=r"checkpoint_0450.pth.tar: NaN/inf values .*weight_hh_l0"):
        load_cmd_checkpoint(path, ["joint"])


def reference_encoder(layers: int, hidden: int = 4, features: int = 150) -> dict[str, torch.Tensor]:
    """The tensors of one reference ``BIGRU`` (no head), zeros except the BatchNorm."""
    enc = {"input_norm.weight": torch.ones(features), "input_norm.bias": torch.zeros(features),
           "input_norm.running_mean": torch.zeros(features), "input_norm.running_var": torch.ones(features)}
    for layer in range(layers):
        for suffix in ("", "_reverse"):
            enc[f"encoder.gru.weight_ih_l{layer}{suffix}"] = torch.zeros(3 * hidden, features if layer == 0
                                                                         else 2 * hidden)
            enc[f"encoder.gru.weight_hh_l{layer}{suffix}"] = torch.zeros(3 * hidden, hidden)
            enc[f"encoder.gru.bias_ih_l{layer}{suffix}"] = torch.zeros(3 * hidden)
            enc[f"encoder.gru.bias_hh_l{layer}{suffix}"] = torch.zeros(3 * hidden)
    return enc


def test_official_cmd_checkpoint_with_a_layer_removed_is_refused(tmp_path):
    """Case 7: the second GRU layer of the query encoder removed; the key encoder still has it.
    Without an encoder config it used to load as a one-layer GRU."""
    state = {f"module.{name}.{k}": v for name in ("encoder_q", "encoder_k") for k, v in reference_encoder(2).items()}
    path = tmp_path / "checkpoint_0450.pth.tar"
    torch.save({"epoch": 451, "state_dict": state}, path)
    assert len(load_cmd_checkpoint(path, ["joint"])["joint"].layers) == 2               # intact: loads
    removed = {k: v for k, v in state.items() if not (k.startswith("module.encoder_q.") and "_l1" in k)}
    torch.save({"epoch": 451, "state_dict": removed}, path)
    with pytest.raises(CmdCheckpointError) as err:
        load_cmd_checkpoint(path, ["joint"])
    assert str(err.value) == (f"{path}: the encoders disagree on (input, hidden, layers): encoder_k (150, 4, 2); "
                              f"encoder_q (150, 4, 1); a layer or tensor is missing, the checkpoint is damaged")
    state.update({f"module.{name}.{k}": v for name in ("encoder_q_motion", "encoder_k_motion")
                  for k, v in reference_encoder(2).items()})
    torch.save({"epoch": 451, "state_dict": {**removed, **{k: v for k, v in state.items() if "motion" in k}}}, path)
    with pytest.raises(CmdCheckpointError, match=r": encoder_q \(150, 4, 1\); encoder_q_motion, encoder_k, "
                                                 r"encoder_k_motion \(150, 4, 2\); a layer"):
        load_cmd_checkpoint(path, ["motion"])
    only_ih = {k: v for k, v in state.items() if k != "module.encoder_k.encoder.gru.weight_ih_l1"}
    torch.save({"epoch": 451, "state_dict": only_ih}, path)
    with pytest.raises(CmdCheckpointError, match=r"checkpoint_0450.pth.tar: encoder_k: no consecutive GRU layers "
                                                 r".*layer\(s\) \[1\] missing"):
        load_cmd_checkpoint(path, ["joint"])


def test_training_stops_at_the_first_non_finite_loss_and_keeps_the_checkpoint(tmp_path):
    cfg = smoke(**{"pretrain.epochs": 2, "pretrain.lr_milestones": []})
    pretrain(cfg, tmp_path, arrays=tiny_arrays(), progress=False, max_steps=2)   # a good checkpoint
    before = (tmp_path / "checkpoint.pt").read_bytes()
    with pytest.raises(NonFiniteLossError) as err:                              # one NaN clip in 32
        pretrain(cfg, tmp_path, arrays=tiny_arrays(nan_clip=5), progress=False)
    message = str(err.value)
    assert "non-finite loss at step 3" in message and "checkpoint.pt is kept" in message
    assert (tmp_path / "checkpoint.pt").read_bytes() == before
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 2
    fresh = tmp_path / "fresh"
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step \d .*no checkpoint was written"):
        pretrain(cfg, fresh, arrays=tiny_arrays(nan_clip=0), progress=False)
    assert not (fresh / "checkpoint.pt").exists()


# --------------------------------------------------------------------------- configs
BAD_CONFIGS = {
    "pretrain.batch_size": (-4, "pretrain.batch_size must be >= 1, got -4"),
    "pretrain.epochs": ("abc", "pretrain.epochs must be an integer, got 'abc'"),
    "pretrain.queue_size": (1.5, "pretrain.queue_size must be an integer, got 1.5"),
    "pretrain.checkpoint_every": (0, "pretrain.checkpoint_every must be >= 1, got 0"),
    "pretrain.momentum": (2, "pretrain.momentum must be < 1, got 2.0"),
    "pretrain.temperature": (0, "pretrain.temperature must be > 0, got 0.0"),
    "pretrain.lr": (float("nan"), "pretrain.lr must be a finite number"),
    "pretrain.lr_milestones": ("abc", "pretrain.lr_milestones[0] must be an integer, got 'abc'"),
    "pretrain.lr_gamma": ("fast", "pretrain.lr_gamma must be a number, got 'fast'"),
    "pretrain.method": ("simclr", "pretrain.method must be one of moco, moco3, posmining, cmd, i2md"),
    "pretrain.amp": ("fp8", "pretrain.amp must be one of none, bf16, fp16, got 'fp8'"),
    "pretrain.dna_space": ("everywhere", "pretrain.dna_space must be one of cluster, instance"),
    "pretrain.cmd_topk": (65, "pretrain.cmd_topk (65) must be <= pretrain.queue_size (64)"),
    "pretrain.seed": (-1, "pretrain.seed must be >= 0, got -1"),
    "pretrain.device": ("", "pretrain.device must be a non-empty text or null"),
    "encoder.kind": ("stgcn", "encoder.kind must be one of bigru_cmd, bigru, got 'stgcn'"),
    "encoder.recurrence": ("cudnn", "encoder.recurrence must be one of auto, nn_gru, loop, grouped, fused, fused_c, got 'cudnn'"),
    "encoder.input_size": (75, "encoder.input_size must be 150"),
    "data.dataset": ("kinetics", "data.dataset must be one of synthetic, ntu60"),
    "data.benchmark": ("xset", "data.benchmark must be one of xsub, xview, xsub_val for data.dataset='synthetic'"),
    "data.mmap": ("maybe", "data.mmap must be true or false, got 'maybe'"),
    "data.synthetic.num_cameras": (4, "data.synthetic.num_cameras must be <= 3, got 4"),
    "augment.crop_min_ratio": (0, "augment.crop_min_ratio must be > 0, got 0.0"),
    "augment.corrupt_joints": (30, "augment.corrupt_joints (30) must be <= the 25 joints"),
    "eval.train_crop_range": ([0.9, 0.5], "eval.train_crop_range must be (low, high) with low <= high"),
    "eval.knn_k": ([], "eval.knn_k must hold at least one k"),
    "eval.val_fraction": (0.0, "eval.select_on='val' needs a validation split"),
    "eval.lr_milestones": ([5], "eval.lr_milestones [5] must lie within eval.epochs (2)"),
    "pretrain": (5, "config key 'pretrain' is a section"),
    "pretrain.nope": (1, "unknown config key 'pretrain.nope'"),
}


@pytest.mark.parametrize("key", list(BAD_CONFIGS))
def test_bad_config_value_names_its_key(key):
    value, message = BAD_CONFIGS[key]
    with pytest.raises(ConfigError) as err:
        ExperimentConfig.for_profile("smoke", {key: value})
    assert message in str(err.value) and "\n" not in str(err.value)


# --------------------------------------------------------------------------- command lines
def run_cli(capsys, *argv: str) -> tuple[int, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:            # argparse's own usage errors
        code = exc.code
    return code, capsys.readouterr().err


def nan_dataset(root: Path) -> Path:
    arrays = clean_split(20, 24)
    save_split(root / "xsub", "train", arrays)
    save_split(root / "xsub", "val", clean_split(4, 24))
    data = np.load(root / "xsub" / "train_data_joint.npy")
    data[7, 0, 0, 0, 0] = np.nan
    np.save(root / "xsub" / "train_data_joint.npy", data)
    return root


def _crafted_labels(root: Path) -> Path:
    save_split(root / "xsub", "train", clean_split(20, 24))
    (root / "xsub" / "train_label.pkl").write_bytes(
        pickle.dumps(([RunsCode(os.system, f"touch {root / 'code_ran'}")], [0])))
    return root


def _bad_dataset(root: Path, label: int = 0, value: float = 0.0) -> Path:
    """A dataset whose training clip 7 has ``label`` and, when non-zero, every coordinate ``value``
    (written into the array itself: ``save_split`` refuses such values)."""
    save_split(root / "xsub", "train", clean_split(20, 24))
    save_split(root / "xsub", "val", clean_split(4, 24))
    names, labels = read_labels(root / "xsub" / "train_label.pkl")
    labels[7] = label
    (root / "xsub" / "train_label.pkl").write_bytes(pickle.dumps((names, labels.tolist())))
    if value:
        data = np.load(root / "xsub" / "train_data_joint.npy")
        data[7] = value
        np.save(root / "xsub" / "train_data_joint.npy", data)
    return root


SMOKE = ("--profile", "smoke")
BAD_COMMANDS = {
    "negative batch": (["config", *SMOKE, "--set", "pretrain.batch_size=-4"], "pretrain.batch_size must be >= 1"),
    "epochs abc": (["config", *SMOKE, "--set", "pretrain.epochs=abc"], "pretrain.epochs must be an integer"),
    "epochs 1.5": (["config", *SMOKE, "--set", "pretrain.epochs=1.5"], "pretrain.epochs must be an integer, got 1.5"),
    "milestones abc": (["config", *SMOKE, "--set", "pretrain.lr_milestones=abc"], "pretrain.lr_milestones[0]"),
    "--set without =": (["config", *SMOKE, "--set", "pretrain.lr"], "--set expects KEY=VALUE"),
    "--set of bad YAML": (["config", *SMOKE, "--set", "pretrain.lr=[1"], "not valid YAML"),
    "--config of bad YAML": (["config", "--config", "{tmp}/bad.yaml"], "bad.yaml: not valid YAML"),
    "--config of binary bytes": (["config", "--config", "{tmp}/binary.yaml"], "binary.yaml: not valid YAML"),
    "--config of a list": (["config", "--config", "{tmp}/list.yaml"], "expected a mapping"),
    "batch larger than the queue": (["pretrain", *SMOKE, "--run-dir", "{tmp}/run", "--set",
                                     "pretrain.batch_size=128", "--no-progress"],
                                    "pretrain.queue_size (64) must be >= pretrain.batch_size (128)"),
    "evaluate a missing run": (["evaluate", "--run-dir", "{tmp}/nowhere"], "nowhere: no checkpoint file"),
    "prepare-ntu without raw folder": (["prepare-ntu", "{tmp}/raw", "{tmp}/out"], "raw: NTU raw skeleton folder"),
    "pretrain on NaN arrays": (["pretrain", *SMOKE, "--run-dir", "{tmp}/nanrun", "--set", "data.dataset=ntu60",
                                "--set", "data.root={tmp}/nanset", "--no-progress"],
                               "train_data_joint.npy: clip 7 (S001C001P001R001A008) holds 1 NaN/inf"),
    "pretrain on a label of 500 (60 classes)": (["pretrain", *SMOKE, "--run-dir", "{tmp}/run", "--set",
                                                 "data.dataset=ntu60", "--set", "data.root={tmp}/labelset",
                                                 "--no-progress"],
                                                "train_label.pkl: clip 7 (S001C001P001R001A008) has label 500, "
                                                "outside [0, 60)"),
    "pretrain on values of 1e30": (["pretrain", *SMOKE, "--run-dir", "{tmp}/run", "--set", "data.dataset=ntu60",
                                    "--set", "data.root={tmp}/farset", "--no-progress"],
                                   "train_data_joint.npy: clip 7 (S001C001P001R001A008) holds 3600 coordinate(s) "
                                   "beyond 100 m"),
    "pretrain on clips of 3 bodies (M = 3)": (["pretrain", *SMOKE, "--run-dir", "{tmp}/run", "--set",
                                               "data.dataset=ntu60", "--set", "data.root={tmp}/m3set",
                                               "--no-progress"],
                                              "m3set/xsub/train_data_joint.npy: clips have 3 body slot(s) per frame, "
                                              "the layout has 2"),
    "prepare-ntu on an empty raw folder": (["prepare-ntu", "{tmp}/emptyraw", "{tmp}/out"],
                                           "emptyraw: empty raw folder, no file found"),
    "pretrain on crafted labels": (["pretrain", *SMOKE, "--run-dir", "{tmp}/pklrun", "--set",
                                    "data.dataset=ntu60", "--set", "data.root={tmp}/pklset", "--no-progress"],
                                   "train_label.pkl: refusing to load posix.system"),
    "unknown --method": (["config", *SMOKE, "--method", "simclr"], "invalid choice"),
    "--max-steps -1": (["pretrain", *SMOKE, "--run-dir", "{tmp}/run", "--max-steps", "-1"],
                       "argument --max-steps: must be >= 1, got -1"),
    "--allow-change of an unknown key": (["pretrain", *SMOKE, "--run-dir", "{tmp}/run", "--allow-change",
                                          "pretrain.epoch"], "--allow-change pretrain.epoch: unknown config key"),
    "--jobs 0": (["experiments", "--suite", "main", "--jobs", "0"], "argument --jobs: must be >= 1, got 0"),
}


@pytest.mark.parametrize("case", list(BAD_COMMANDS))
def test_bad_command_line_is_one_error_line_and_exit_code_2(tmp_path, capsys, case):
    (tmp_path / "bad.yaml").write_text("pretrain: {epochs: [1\n")
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00garbage")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    nan_dataset(tmp_path / "nanset")
    _crafted_labels(tmp_path / "pklset")
    _bad_dataset(tmp_path / "labelset", label=500)
    _bad_dataset(tmp_path / "farset", value=1e30)
    (tmp_path / "emptyraw").mkdir()
    _bad_dataset(tmp_path / "m3set")
    np.save(tmp_path / "m3set" / "xsub" / "train_data_joint.npy", np.zeros((20, 3, 24, 25, 3), np.float32))
    argv, expected = BAD_COMMANDS[case]
    code, err = run_cli(capsys, *(a.replace("{tmp}", str(tmp_path)) for a in argv))
    assert code == 2 and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]       # argparse's own errors follow its usage lines
    assert expected in last and (last.startswith("error: ") or ": error: argument " in last)
    assert sum(line.startswith("error: ") for line in err.splitlines()) <= 1
    assert not (tmp_path / "pklset" / "code_ran").exists()
    assert not (tmp_path / "nanrun" / "checkpoint.pt").exists()


def test_a_device_the_machine_lacks_is_one_line(tmp_path, capsys, monkeypatch, good_run):
    """Case 11: ``cuda`` on a machine without CUDA names the setting and what to do."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    code, err = run_cli(capsys, "pretrain", *SMOKE, "--run-dir", str(tmp_path / "run"), "--set",
                        "pretrain.device=cuda", "--no-progress")
    last = err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("error: pretrain.device 'cuda': ") and "use cpu" in last, err
    assert "Traceback" not in err and not (tmp_path / "run" / "checkpoint.pt").exists()
    code, err = run_cli(capsys, "evaluate", "--run-dir", str(good_run), "--device", "cuda:1", "--no-progress")
    assert code == 2 and err.strip().splitlines()[-1].startswith("error: device 'cuda:1': "), err
    monkeypatch.setenv("I2MD_DEVICE", "cuda")
    with pytest.raises(ValueError, match=r"^\$I2MD_DEVICE 'cuda': .*use cpu"):
        pretrain(smoke(), tmp_path / "env", arrays=tiny_arrays(), progress=False)
    monkeypatch.setenv("I2MD_DEVICE", "gpu")
    with pytest.raises(ValueError, match=r"^\$I2MD_DEVICE 'gpu' is not a device name"):
        pretrain(smoke(), tmp_path / "env", arrays=tiny_arrays(), progress=False)


def test_the_command_line_resumes_nothing_from_a_checkpoint_whose_config_is_text(tmp_path, capsys, good_run):
    """Case 10 through ``pretrain`` (resume) and ``evaluate``: one line naming the file."""
    state = load_checkpoint(good_run / "checkpoint.pt")
    state["config"] = "pretrain: {method: moco}"
    save_checkpoint(tmp_path / "checkpoint.pt", state)
    expected = f"error: {tmp_path / 'checkpoint.pt'}: the stored config is a str, not a mapping of config sections"
    for argv in (["pretrain", *SMOKE, "--method", "moco", "--run-dir", str(tmp_path), "--no-progress"],
                 ["evaluate", "--run-dir", str(tmp_path), "--no-progress"]):
        code, err = run_cli(capsys, *argv)
        assert code == 2 and err.strip().splitlines()[-1].startswith(expected) and "Traceback" not in err, err


def test_the_command_line_shows_the_count_of_short_clips(tmp_path, capsys):
    code, err = run_cli(capsys, "pretrain", *SMOKE, "--method", "moco", "--run-dir", str(tmp_path), "--set",
                        "data.window=32", "--max-steps", "1", "--no-progress")
    assert code == 0, err
    assert any(line.startswith("synthetic xsub train: ") and "clips have fewer frames than the 32-frame window"
               in line for line in err.splitlines()), err


def test_debug_shows_the_traceback(capsys):
    with pytest.raises(ValueError, match="pretrain.batch_size"):
        main(["--debug", "config", "--profile", "smoke", "--set", "pretrain.batch_size=-4"])
    with pytest.raises(ValueError, match="pretrain.batch_size"):
        main(["config", "--profile", "smoke", "--debug", "--set", "pretrain.batch_size=-4"])


def test_a_bad_pretraining_command_exits_2_in_a_subprocess(tmp_path):
    """``pretrain.batch_size=-4`` used to hang (a negative number of batches per epoch)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "i2md_lib", "pretrain", "--profile", "smoke", "--run-dir",
                             str(tmp_path), "--set", "pretrain.batch_size=-4"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "error: pretrain.batch_size must be >= 1, got -4"
    assert "Traceback" not in result.stderr and not (tmp_path / "checkpoint.pt").exists()


# --------------------------------------------------------------------------- the count
def test_enough_inputs():
    """The issue asks for at least 40 malformed inputs across files, arrays, pickles,
    checkpoints, configs and command-line flags."""
    counts = {"skeleton": len(BAD_SKELETONS) + 1, "pku": len(BAD_PKU), "arrays": len(BAD_ARRAYS) + 1,
              "labels": len(BAD_LABELS) + len(crafted(Path("x"))), "checkpoints": len(BAD_CHECKPOINTS) + 1,
              "training on a NaN clip": 1,
              "configs": len(BAD_CONFIGS), "commands": len(BAD_COMMANDS) + 1}
    kinds = ("skeleton", "arrays", "labels", "checkpoints", "configs", "commands")
    assert all(counts[k] >= 2 for k in kinds) and sum(counts.values()) >= 40, counts


def test_a_model_file_with_nan_weights_is_refused(tmp_path):
    """The slim model files the book commits are checked like checkpoints."""
    import torch

    from i2md_lib.config import ExperimentConfig
    from i2md_lib.models.moco import build_model
    from i2md_lib.models.pretrained import save_model_file

    cfg = ExperimentConfig.for_profile("smoke", {"pretrain.method": "moco"})
    model = build_model(cfg)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    path = save_model_file(tmp_path / "seed0_model.pt", cfg, model)
    with pytest.raises(CheckpointError, match="seed0_model.pt: NaN/inf values"):
        load_pretrained(path)
