"""The .skeleton parser/writer, sample names, split rules and the shipped resource lists."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from i2md_lib.data.ntu_format import (
    FLOAT_FORMAT, TRAINING_SUBJECTS, NtuNameError, SkeletonFile, SkeletonFormatError, class_names,
    in_version, is_training, missing_samples, parse_name, read_skeleton, write_skeleton,
)

BIG_ID = 72057594037931101  # a real-looking 17-digit Kinect ID (> 2**53, not exact as float)
JOINT = "0.2181153 0.1725972 3.785547 277.419 191.8218 1036.233 519.1677 -0.2059419 0.05349444 0.9692109 -0.1239193 2"
INFO = f"{BIG_ID} 0 1 1 1 1 0 0.02764709 0.05745083 2"


def body_lines(info: str = INFO, joint: str = JOINT, n_joints: int = 25) -> list[str]:
    return [info, "25"] + [joint] * n_joints


def hand_file(tmp_path: Path, lines: list[str], newline: str = "\n", name: str = "S001C001P001R001A001") -> Path:
    path = tmp_path / f"{name}.skeleton"
    path.write_bytes((newline.join(lines) + newline).encode())
    return path


def valid_lines() -> list[str]:
    """3 frames: one body, no body, two bodies (the second with other coordinates)."""
    other = JOINT.replace("0.2181153 0.1725972 3.785547", "-1.5 2.25 4")
    return ["3", "1", *body_lines(), "0", "2", *body_lines(), *body_lines(info=INFO.replace("101 ", "202 "),
                                                                         joint=other)]


# ----------------------------------------------------------------------------- reading
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_reads_hand_written_file(tmp_path, newline):
    sk = read_skeleton(hand_file(tmp_path, valid_lines(), newline))
    assert sk.num_frames == 3
    assert sk.bodies_per_frame.tolist() == [1, 0, 2]
    assert sk.body_ids.tolist() == [BIG_ID, BIG_ID, BIG_ID + 101]  # "...31101" -> "...31202"
    assert int(sk.body_ids[0]) == BIG_ID                            # exact, not via float
    assert sk.joints.shape == (3, 25, 12)
    np.testing.assert_array_equal(sk.joints[0, 7], [float(v) for v in JOINT.split()])
    np.testing.assert_array_equal(sk.body_info[0], [0, 1, 1, 1, 1, 0, 0.02764709, 0.05745083, 2])
    assert sk.frame_of_body.tolist() == [0, 2, 2] and sk.slot_of_body.tolist() == [0, 0, 1]
    dense = sk.dense()
    assert dense.shape == (3, 2, 25, 3)
    np.testing.assert_array_equal(dense[1], 0)                      # the empty frame
    np.testing.assert_array_equal(dense[0, 1], 0)                   # no second body in frame 0
    np.testing.assert_array_equal(dense[2, 1, 0], [-1.5, 2.25, 4])
    assert sk.dense(max_bodies=1).shape == (3, 1, 25, 3)
    np.testing.assert_array_equal(sk.dense(max_bodies=4)[:, :2], dense)


def test_round_trip_is_exact_to_printed_precision(tmp_path):
    rng = np.random.default_rng(0)
    xyz = rng.normal(0, 1, (12, 3, 25, 3)) * [1, 1, 3]
    xyz[4] = 0                                              # empty frame: written as "0"
    present = (xyz != 0).any(axis=(2, 3))
    present[6, 1] = False                                   # body 1 absent in frame 6
    sk = SkeletonFile.from_dense(xyz, [BIG_ID, 5, 2**64 - 1], present)
    sk.joints[..., 3:11] = rng.normal(0, 100, sk.joints[..., 3:11].shape)
    sk.body_info[:, 6:8] = rng.normal(0, 0.1, (len(sk.body_ids), 2))
    first = write_skeleton(tmp_path / "a.skeleton", sk)
    back = read_skeleton(first)
    assert back.bodies_per_frame.tolist() == sk.bodies_per_frame.tolist()
    assert back.body_ids.tolist() == sk.body_ids.tolist()   # 64-bit IDs survive exactly
    # floats are rounded to FLOAT_FORMAT (7 significant digits) exactly once
    expected = np.vectorize(lambda v: float(FLOAT_FORMAT % v))(sk.joints)
    np.testing.assert_array_equal(back.joints, expected)
    rel = np.abs(back.joints - sk.joints) / np.maximum(np.abs(sk.joints), 1e-30)
    assert rel.max() < 6e-7
    # written again, the file is byte-identical and parses to identical arrays
    second = write_skeleton(tmp_path / "b.skeleton", back)
    assert first.read_bytes() == second.read_bytes()
    again = read_skeleton(second)
    np.testing.assert_array_equal(again.joints, back.joints)
    np.testing.assert_array_equal(again.body_info, back.body_info)
    # frame 6 lists only body 0 and body 2, so body 2 sits in slot 1 when read by position
    np.testing.assert_allclose(back.dense()[6, 1], xyz[6, 2], rtol=1e-6)


def test_written_file_follows_the_grammar_line_by_line(tmp_path):
    xyz = np.zeros((2, 1, 25, 3))
    xyz[1, 0] = 0.5
    path = write_skeleton(tmp_path / "x.skeleton", SkeletonFile.from_dense(xyz, [BIG_ID]), newline="\r\n")
    raw = path.read_bytes()
    assert raw.count(b"\r\n") == raw.count(b"\n")          # all CRLF
    lines = raw.decode().split("\r\n")[:-1]
    assert len(lines) == 1 + 1 + 1 + 1 + 1 + 25            # T, frame 0 "0", frame 1 "1", info, "25", joints
    assert lines[:3] == ["2", "0", "1"]
    assert lines[3].split()[0] == str(BIG_ID) and len(lines[3].split()) == 10
    assert lines[4] == "25"
    assert all(len(ln.split()) == 12 for ln in lines[5:])
    assert lines[5].split()[:3] == ["0.5", "0.5", "0.5"] and lines[5].split()[11] == "2"


def test_zero_frame_file_is_valid(tmp_path):
    sk = read_skeleton(hand_file(tmp_path, ["0"]))
    assert sk.num_frames == 0 and sk.dense().shape == (0, 0, 25, 3)


# ----------------------------------------------------------------------------- bad input
def _replace(lines: list[str], index: int, value: str | None) -> list[str]:
    out = list(lines)
    if value is None:
        del out[index]
    else:
        out[index] = value
    return out


BAD_CASES = {
    # name: (lines, 1-based line the error must name, words the message must contain)
    "truncated mid-joints": (valid_lines()[:20], 20, "joint 17 of body 1 of frame 1"),
    "truncated before a frame": (valid_lines()[:29], 29, "body count of frame 2"),
    "frame count too high": (["4"] + valid_lines()[1:], 85, "body count of frame 4"),
    "body count too high": (_replace(valid_lines(), 1, "2"), 30, "info line of body 2 of frame 1"),
    "joint count 24": (_replace(valid_lines(), 3, "24"), 4, "24 joints"),
    "joint line with 11 fields": (_replace(valid_lines(), 10, JOINT.rsplit(" ", 1)[0]), 11, "12 values"),
    "non-numeric joint value": (_replace(valid_lines(), 12, JOINT.replace("3.785547", "abc")), 13, "'abc'"),
    "NaN coordinate": (_replace(valid_lines(), 15, JOINT.replace("3.785547", "nan")), 16, "finite"),
    "inf in body info": (_replace(valid_lines(), 2, INFO.replace("0.02764709", "inf")), 3, "finite"),
    "info line with 9 fields": (_replace(valid_lines(), 2, INFO.rsplit(" ", 1)[0]), 3, "10 value"),
    "float bodyID": (_replace(valid_lines(), 2, INFO.replace(str(BIG_ID), "7.2e16")), 3, "bodyID"),
    "fractional tracking state": (_replace(valid_lines(), 8, JOINT[:-1] + "1.5"), 9, "integer"),
    "negative body count": (_replace(valid_lines(), 1, "-1"), 2, "non-negative integer"),
    "blank line inside": (_replace(valid_lines(), 30, ""), 31, "found 0"),
    "trailing garbage": (valid_lines() + ["1"], 86, "left after the last"),
    "non-integer frame count": (["3.0"] + valid_lines()[1:], 1, "frame count"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_files_raise_with_file_and_line(tmp_path, case):
    lines, line_no, words = BAD_CASES[case]
    path = hand_file(tmp_path, lines)
    with pytest.raises(SkeletonFormatError) as err:
        read_skeleton(path)
    assert err.value.line == line_no, str(err.value)
    assert str(path) in str(err.value) and f"line {line_no}" in str(err.value)
    assert words in str(err.value)


def test_valid_lines_have_the_expected_length():
    # the bad cases above count lines of this exact fixture
    assert len(valid_lines()) == 1 + 1 + 27 + 1 + 1 + 27 + 27 == 85


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "e.skeleton"
    empty.write_bytes(b"")
    with pytest.raises(SkeletonFormatError, match="empty file"):
        read_skeleton(empty)
    with pytest.raises(FileNotFoundError):
        read_skeleton(tmp_path / "nope.skeleton")


def test_every_line_is_consumed_on_real_sized_files(tmp_path):
    rng = np.random.default_rng(3)
    xyz = rng.normal(size=(30, 2, 25, 3))
    path = write_skeleton(tmp_path / "r.skeleton", SkeletonFile.from_dense(xyz))
    n_lines = len(path.read_bytes().splitlines())
    assert n_lines == 1 + 30 * (1 + 2 * 27)
    read_skeleton(path)  # consumes exactly n_lines
    path.write_bytes(path.read_bytes() + b"0\n")
    with pytest.raises(SkeletonFormatError, match=f"line {n_lines + 1}"):
        read_skeleton(path)


# ----------------------------------------------------------------------------- names and splits
def test_parse_name_fields_and_label():
    n = parse_name("S001C002P003R002A013")
    assert (n.setup, n.camera, n.subject, n.replication, n.action, n.label) == (1, 2, 3, 2, 13, 12)
    assert str(n) == "S001C002P003R002A013"
    assert parse_name("/data/nturgb+d/S032C003P106R001A120.skeleton").label == 119


@pytest.mark.parametrize("bad", ["S001C002P003R002", "s001c002p003r002a013", "S001C002P003R002A013x",
                                 "S1C2P3R2A13", "S001C004P003R002A013", "S001C002P003R003A013",
                                 "S033C001P001R001A001", "S001C001P107R001A001", "S001C001P001R001A121",
                                 "S000C001P001R001A001", "S001C002P003R002A013.txt"])
def test_bad_names_raise(bad):
    with pytest.raises(NtuNameError, match="S001C002P003R002A013|unknown"):
        parse_name(bad)


def test_split_rules():
    assert len(TRAINING_SUBJECTS) == 53
    assert sorted(TRAINING_SUBJECTS)[:20] == [1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27,
                                              28, 31, 34, 35, 38]
    assert is_training("S005C001P001R001A001", "xsub") and not is_training("S005C001P003R001A001", "xsub")
    assert is_training("S005C002P003R001A001", "xview") and is_training("S005C003P003R001A001", "xview")
    assert not is_training("S005C001P001R001A001", "xview")
    assert is_training("S002C001P003R001A001", "xset") and not is_training("S031C001P001R001A001", "xset")
    with pytest.raises(ValueError, match="xsetup"):
        is_training("S001C001P001R001A001", "xsetup")


def test_split_sizes_on_all_ntu60_names():
    # every (setup, camera, performer, rep, action) combination that exists is a superset; check
    # the xview rule splits cameras 2:1 and xsub keeps exactly the 20 NTU-60 training performers
    names = [f"S001C{c:03d}P{p:03d}R001A001" for c in (1, 2, 3) for p in range(1, 41)]
    assert sum(is_training(n, "xview") for n in names) == 80
    assert sum(is_training(n, "xsub") for n in names) == 3 * 20


def test_version_ranges():
    assert in_version("S017C001P040R002A060", "ntu60")
    assert not in_version("S018C001P001R001A001", "ntu60")
    assert not in_version("S001C001P001R001A061", "ntu60")
    assert not in_version("S001C001P041R001A001", "ntu60")
    assert in_version("S032C001P106R001A120", "ntu120")
    with pytest.raises(ValueError, match="ntu60"):
        in_version("S001C001P001R001A001", "ntu90")


def test_missing_lists_and_class_names():
    m60, m120 = missing_samples("ntu60"), missing_samples("ntu120")
    assert len(m60) == 302 and len(m120) == 535 and m60 < m120
    assert "S001C002P005R002A008" in m60                       # first entry of the official list
    assert "S017C003P020R001A059" in m60                       # last NTU-60 entry
    assert "S032C003P067R002A077" in m120 and "S032C003P067R002A077" not in m60
    for name in m120:
        parse_name(name)                                       # all well-formed and in range
    assert all(in_version(n, "ntu60") for n in m60)
    names60, names120 = class_names("ntu60"), class_names("ntu120")
    assert len(names60) == 60 and len(names120) == 120 and names120[:60] == names60
    assert names60[0] == "drink water" and names60[parse_name("S001C001P001R001A013").label] == "tear up paper"
    assert names120[-1] == "finger-guessing game (playing rock-paper-scissors)"
