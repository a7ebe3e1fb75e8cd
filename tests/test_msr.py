"""MSR Action3D: the 20-joint Kinect v1 layout, ``prepare-msr`` on files in the release's exact
format (quirks included, written by the tests), and the library end to end on 20-joint data.
Nothing here reads a real copy of the dataset."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from i2md_lib import skeleton
from i2md_lib.cli import main
from i2md_lib.config import ConfigError, ExperimentConfig
from i2md_lib.data import msr
from i2md_lib.data.datasets import load_arrays
from i2md_lib.data.modalities import to_bone
from i2md_lib.data.ntu_format import SkeletonFormatError
from i2md_lib.data.store import DataFormatError, load_split

K = skeleton.KINECT_V1_20


def frame_lines(rng, frames: int, joints: int = 20) -> list[str]:
    xyz = rng.uniform(-1, 3, (frames * joints, 3))
    return [f"{x:.6f} {y:.6f} {z:.6f} {c:.6f}" for (x, y, z), c in zip(xyz, rng.uniform(0, 1, frames * joints))]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("msr")
    msr.write_msr_corpus(root / "raw", subjects=10, max_frames=30)
    report = msr.prepare_msr(root / "raw", root / "out")
    return root, report


def test_layout_tree_and_normalisation_joints():
    assert K.num_joints == 20 and K.num_bodies == 1 and K.frame_values == 60
    assert K.joint_names[K.root] == "neck" and len(K.bones) == 19
    names = K.joint_names
    for child, parent in K.bones:            # left joints hang on left joints, right on right
        for side in ("left", "right"):
            if names[child].startswith(side) and names[parent].split()[0] in ("left", "right"):
                assert names[parent].startswith(side)
    assert [names[j] for j in K.x_bone] == ["left shoulder", "right shoulder"]
    assert [names[j] for j in K.z_bone] == ["hip centre", "spine"] and names[K.center_joint] == "spine"
    for j, m in enumerate(K.mirror):
        assert names[m] == names[j].replace("left", "@").replace("right", "left").replace("@", "right")
    # the fixture map sends every Kinect v1 joint to the NTU joint of the same name
    ntu = skeleton.NTU25.joint_names
    same = {"hip centre": "spine base", "spine": "spine middle", "neck": "spine shoulder"}
    for v1, n in zip(names, msr.NTU_JOINT_OF_KINECT_V1):
        assert ntu[n] == same.get(v1, v1)


def test_ntu_layout_is_the_old_constants():
    assert skeleton.NTU25.bones == skeleton.BONES and skeleton.NTU25.root == skeleton.ROOT_JOINT == 20
    assert skeleton.NTU25.frame_values == 150 and skeleton.NTU25.x_bone == (4, 8)
    with pytest.raises(ValueError, match="exactly one root"):
        skeleton.Layout("bad", ("a", "b"), ((0, 0), (1, 1)), 0, (0, 1), (0, 1), (0, 1), 1)


def test_names_and_reader(tmp_path):
    assert msr.parse_msr_name("a13_s09_e02_skeleton3D.txt") == msr.MsrName(13, 9, 2)
    for bad in ("a21_s01_e01_skeleton3D.txt", "a01_s00_e01_skeleton3D.txt", "a1_s01_e01_skeleton3D.txt"):
        with pytest.raises(ValueError):
            msr.parse_msr_name(bad)
    rng = np.random.default_rng(0)
    lines = frame_lines(rng, 3)
    path = tmp_path / "a01_s01_e01_skeleton3D.txt"
    path.write_text("\n".join(lines[:20] + ["", "   "] + lines[20:]) + "\n\n")
    frames = msr.read_msr_skeleton(path)
    assert frames.shape == (3, 20, 4)
    np.testing.assert_allclose(frames[1, 0], [float(v) for v in lines[20].split()])


@pytest.mark.parametrize("damage, line, problem", [
    (lambda ls: ls.__setitem__(7, "0.1 0.2 0.3"), 8, "expected 4 numbers"),
    (lambda ls: ls.__setitem__(4, "0.1 0.2 nan 1.0"), 5, "non-finite"),
    (lambda ls: ls.__setitem__(2, "0.1 abc 0.3 1.0"), 3, "not a number"),
    (lambda ls: ls.pop(), 39, "do not make whole frames"),
])
def test_malformed_file_is_one_line_naming_file_and_line(tmp_path, damage, line, problem, capsys):
    raw = tmp_path / "raw"
    raw.mkdir()
    lines = frame_lines(np.random.default_rng(1), 2)
    damage(lines)
    bad = raw / "a02_s03_e01_skeleton3D.txt"
    bad.write_text("\n".join(lines) + "\n")
    (raw / "a01_s01_e01_skeleton3D.txt").write_text("\n".join(frame_lines(np.random.default_rng(2), 2)) + "\n")
    with pytest.raises(SkeletonFormatError, match=problem) as err:
        msr.read_msr_skeleton(bad)
    assert str(err.value).startswith(f"{bad}, line {line}: ")
    out = tmp_path / "out"
    assert main(["prepare-msr", str(raw), str(out)]) == 2
    message = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip() and "it/s]" not in ln]  # no bars
    assert len(message) == 1 and message[0].startswith(f"error: {bad}, line {line}: ")
    assert not out.exists()                  # nothing half-written


def test_empty_folder_and_folders_named_like_files(tmp_path):
    (tmp_path / "raw").mkdir()
    with pytest.raises(ValueError, match="no MSR Action3D skeleton file"):
        msr.prepare_msr(tmp_path / "raw", tmp_path / "out")
    (tmp_path / "raw" / "a01_s01_e01_skeleton3D.txt").mkdir()
    (tmp_path / "raw" / "a01_s02_e01_skeleton3D.txt").write_text("\n".join(frame_lines(np.random.default_rng(3), 2)))
    report = msr.prepare_msr(tmp_path / "raw", tmp_path / "out", benchmarks=["xsub"])
    assert [s.reason.split(":")[0] for s in report.skipped] == ["a folder, not a file"]
    assert report.split_sizes == {"xsub": {"train": 0, "val": 1}}
    with pytest.raises(FileNotFoundError, match="not found"):
        msr.prepare_msr(tmp_path / "nowhere", tmp_path / "out")


def test_prepare_writes_splits_and_names_every_skipped_clip(corpus):
    root, report = corpus
    assert report.files_seen == 100 and report.samples_written == 99
    assert [(s.path.split("/")[-1], s.reason.split(":")[0]) for s in report.skipped] == [
        ("a02_s01_e01_skeleton3D.txt", "no skeleton")]
    saved = json.loads((root / "out" / "prepare_report.json").read_text())
    assert saved["skipped"][0]["reason"].startswith("no skeleton: all")
    train, test = (load_split(root / "out" / "xsub", p, layout=K) for p in ("train", "val"))
    assert train.data.shape[1:] == (3, msr.MAX_FRAMES, 20, 1)
    subject = lambda names: {int(n[5:7]) for n in names}  # noqa: E731
    assert subject(train.names) == {1, 3, 5, 7, 9} and subject(test.names) == {2, 4, 6, 8, 10}
    vtrain, vval = (load_split(root / "out" / "xsub_val", p, layout=K) for p in ("train", "val"))
    assert subject(vtrain.names) == {1, 3, 5, 7} and subject(vval.names) == {msr.VAL_SUBJECT}
    assert train.num_frame.min() == 13                 # the shortest clip is kept, not padded away
    assert all(int(n[1:3]) - 1 == label for n, label in zip(train.names, train.labels))
    # normalised with the layout's joints: spine at the origin, shoulders along +x
    first = np.asarray(train.data[:, :, 0, :, 0])                                   # (N, 3, V)
    np.testing.assert_allclose(first[:, :, K.center_joint], 0, atol=1e-5)
    shoulders = first[:, :, K.x_bone[1]] - first[:, :, K.x_bone[0]]
    np.testing.assert_allclose(shoulders[:, 1:], 0, atol=1e-5)
    assert (shoulders[:, 0] > 0).all()
    with pytest.raises(DataFormatError, match=r"clips have 20 joints per body, the layout has 25"):
        load_split(root / "out" / "xsub", "train", layout=skeleton.NTU25)


def test_config_follows_the_dataset_layout(corpus):
    root, _ = corpus
    cfg = ExperimentConfig.for_profile("smoke", {"data.dataset": "msr", "data.root": str(root / "out")})
    assert cfg.data.layout is K and cfg.encoder.input_size == 60 and cfg.augment.corrupt_joints == 12
    assert ExperimentConfig.from_dict(cfg.to_dict()) == cfg
    back = cfg.replace({"data.dataset": "ntu60"})
    assert back.encoder.input_size == 150 and back.augment.corrupt_joints == 15
    with pytest.raises(ConfigError, match="encoder.input_size must be 60 for data.dataset='msr'"):
        ExperimentConfig.for_profile("smoke", {"data.dataset": "msr", "encoder.input_size": 150})
    with pytest.raises(ConfigError, match="corrupt_joints \\(21\\) must be <= the 20 joints"):
        cfg.replace({"augment.corrupt_joints": 21})
    with pytest.raises(ConfigError, match="benchmark"):
        cfg.replace({"data.benchmark": "xview"})
    arrays = load_arrays(cfg.data, "train")
    bones = to_bone(torch.from_numpy(np.array(arrays.data[:4])))
    assert not bones[:, :, :, K.root].any()


def test_pretrain_evaluate_and_refuse_another_layout(corpus, tmp_path, capsys):
    """Every method trains on 20-joint data; its run cannot be evaluated on 25-joint data."""
    root, _ = corpus
    base = ["--profile", "smoke", "--set", "data.dataset=msr", "--set", f"data.root={root / 'out'}",
            "--no-progress"]
    for method in ("moco3", "i2md"):
        assert main(["pretrain", "--method", method, "--run-dir", str(tmp_path / method), *base]) == 0
    assert main(["evaluate", "--run-dir", str(tmp_path / "i2md"), "--protocols", "knn", "--no-progress"]) == 0
    rows = json.loads((tmp_path / "i2md" / "eval_results.json").read_text())
    assert {r["modality"] for r in rows} == {"joint", "motion", "bone", "ensemble"}
    capsys.readouterr()
    assert main(["evaluate", "--run-dir", str(tmp_path / "i2md"), "--set", "data.dataset=synthetic",
                 "--protocols", "knn", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "layout kinect_v1" in err[0] and str(tmp_path / "i2md") in err[0]


def test_plots_draw_twenty_joints(corpus):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from i2md_lib.plotting import draw_skeleton_2d, skeleton_animation

    root, _ = corpus
    clip = np.asarray(load_split(root / "out" / "xsub", "train", layout=K).data[0])      # (3, T, 20, 1)
    fig = skeleton_animation(clip, num_frame=10, step=5)
    assert len(fig.data[0].x) == 3 * len(K.bones)        # child, parent, gap per bone
    assert list(fig.data[1].text) == list(K.joint_names)
    _, ax = plt.subplots()
    draw_skeleton_2d(ax, clip[:, 0, :, 0])
    assert len(ax.lines) == len(K.bones)
    plt.close("all")
    with pytest.raises(ValueError, match="ntu25 has 25 joints"):
        draw_skeleton_2d(ax, clip[:, 0, :, 0], layout=skeleton.NTU25)


def test_study_tool_runs_the_suite_on_msr_files(corpus, tmp_path):
    """tools/msr_study.py at smoke scale on fixture files: one result file per variant and seed,
    recording the MSR config, the setting and the validation benchmark."""
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "tools"))
    import msr_study

    root, _ = corpus
    records = msr_study.main(["--part", "val", "--setting", "reference", "--profile", "smoke", "--allow-dirty",
                              "--variants", "random_init", "cmd", "--set", f"data.root={root / 'out'}",
                              "--out", str(tmp_path / "results"), "--runs", str(tmp_path / "runs")])
    assert [r["variant"] for r in records] == ["random_init", "cmd"]
    cfg = records[1]["config"]
    assert cfg["data"]["dataset"] == "msr" and cfg["data"]["benchmark"] == "xsub_val"
    assert cfg["encoder"]["input_size"] == 60 and cfg["pretrain"]["lr"] == 0.01
    assert cfg["pretrain"]["momentum"] == 0.999 and cfg["pretrain"]["queue_size"] == 128   # the MSR sizes
    assert (tmp_path / "results" / "val" / "reference" / "smoke" / "main" / "cmd" / "seed0.json").is_file()


def test_study_tool_on_the_synthetic_testbed(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import msr_study

    records = msr_study.main(["--testbed", "synthetic", "--part", "val", "--setting", "m0.999", "--profile",
                              "smoke", "--allow-dirty", "--variants", "moco3", "--out", str(tmp_path / "r"),
                              "--runs", str(tmp_path / "runs")])
    cfg = records[0]["config"]
    assert cfg["data"]["dataset"] == "synthetic" and cfg["data"]["benchmark"] == "xsub_val"
    assert cfg["pretrain"]["momentum"] == 0.999 and cfg["pretrain"]["lr"] == 0.05


def test_data_card_holds_counts_not_coordinates(corpus):
    from i2md_lib.studies import msr_data_card

    root, _ = corpus
    card = msr_data_card(root / "out")
    assert card["clips"] == 99 and card["skipped"] == [
        {"file": "a02_s01_e01_skeleton3D.txt", "reason": card["skipped"][0]["reason"]}]
    train = card["splits"]["xsub train"]
    assert train["clips"] == 49 and train["subjects"] == [1, 3, 5, 7, 9] and sum(train["clips per class"]) == 49
    assert sum(train["frames"]["histogram"]) == 49 and train["frames"]["min"] == 13
    assert card["splits"]["xsub_val val"]["subjects"] == [9]


def test_comparisons_with_a_variant_not_run_yet_are_empty():
    import pandas as pd

    from i2md_lib import report

    values = pd.DataFrame({"knn joint": [50.0, 52.0, 48.0, 49.0]},
                          index=pd.MultiIndex.from_tuples([("a", 0), ("a", 1), ("b", 0), ("b", 1)],
                                                          names=["variant", "seed"]))
    table = report.comparison_table(values, [("a", "b"), ("a", "c")], ["knn joint"])
    assert table.loc[("a − b", "knn joint"), "seeds"] == 2
    assert table.loc[("a − c", "knn joint"), "seeds"] == 0 and table.loc[("a − c", "knn joint"), "verdict"] == "–"


def test_stream_table_reads_accuracies_and_losses():
    import math

    from i2md_lib.studies import stream_table

    record = {"metrics": [{"protocol": "linear_fast", "modality": s, "top1": 70.0 + i} for i, s in
                          enumerate(("joint", "motion", "bone"))],
              "last_epoch_log": {"nce_joint": 4.5, "nce_motion": 5.5, "nce_bone": 4.6},
              "config": {"pretrain": {"queue_size": 512}}}
    table = stream_table({"run a": record})
    assert table.loc["run a", "linear motion"] == 71.0 and table.loc["run a", "InfoNCE motion"] == 5.5
    assert table.loc["run a", "ln(K+1)"] == round(math.log(513), 2)


def test_the_longer_setting_scales_the_profiles_schedule():
    from i2md_lib.studies import MSR_BOOK, setting_overrides

    book = setting_overrides("long4x", "book", MSR_BOOK)
    assert book == {"pretrain.epochs": 800, "pretrain.lr_milestones": (640,)}
    assert setting_overrides("long4x", "smoke") == {"pretrain.epochs": 8, "pretrain.lr_milestones": (4,)}
    assert setting_overrides("long8x", "book", MSR_BOOK) == {"pretrain.epochs": 1600,
                                                             "pretrain.lr_milestones": (1280,)}
    assert setting_overrides("reference", "smoke") == {"pretrain.lr": 0.01, "pretrain.momentum": 0.999}


def test_study_records_pair_by_seed_and_keep_the_seeds_asked_for(tmp_path, monkeypatch):
    import json

    from i2md_lib import studies

    folder = tmp_path / "msr" / "test" / "book" / "book" / "main"
    for variant, seeds in (("a", (0, 1, 2)), ("b", (0, 1))):
        (folder / variant).mkdir(parents=True)
        for seed in seeds:
            (folder / variant / f"seed{seed}.json").write_text(json.dumps(
                {"variant": variant, "label": variant, "seed": seed, "metrics": []}))
    monkeypatch.setattr(studies, "results_root", lambda: tmp_path)
    every = studies.study_records("msr", "test", "book", profile="book")
    assert sorted((r["variant"], r["seed"]) for r in every) == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    first = studies.study_records("msr", "test", "book", profile="book", seeds=range(1))
    assert sorted((r["variant"], r["seed"]) for r in first) == [("a", 0), ("b", 0)]
    longer = tmp_path / "msr" / "test" / "long4x" / "book" / "main" / "a"
    longer.mkdir(parents=True)
    for seed in (0, 1, 2):
        (longer / f"seed{seed}.json").write_text(json.dumps(
            {"variant": "a", "label": "a", "seed": seed, "metrics": []}))
    tagged = studies.tagged_records("msr", "test", ("book", "long4x"), ("a",), "book", seeds=(1, 2))
    assert sorted((r["variant"], r["seed"]) for r in tagged) == \
        [("a @ book", 1), ("a @ book", 2), ("a @ long4x", 1), ("a @ long4x", 2)]


def test_the_size_search_settings_fit_msr_action3d():
    from i2md_lib.config import ExperimentConfig
    from i2md_lib.studies import MSR_BOOK, SETTINGS, setting_overrides

    for name in ("queue64", "queue224", "topk32", "dna4", "dna16"):
        cfg = ExperimentConfig.for_profile("book", {**MSR_BOOK, **setting_overrides(name, "book", MSR_BOOK)})
        p = cfg.pretrain
        assert p.queue_size < 232 and p.cmd_topk <= p.queue_size and p.queue_size % p.batch_size == 0, name
        assert set(SETTINGS[name]) <= {"pretrain.queue_size", "pretrain.cmd_topk", "pretrain.imd_topk",
                                       "pretrain.dna_max_neighbors"}


def test_study_log_reads_the_committed_log_and_names_a_missing_one(tmp_path, monkeypatch):
    import gzip

    import pytest

    from i2md_lib import studies

    folder = tmp_path / "msr" / "val" / "long4x" / "book" / "main" / "cmd"
    folder.mkdir(parents=True)
    (folder / "seed0_log.csv.gz").write_bytes(gzip.compress(b"step,epoch,cmd\n0,0,1.5\n1,0,0.5\n"))
    monkeypatch.setattr(studies, "results_root", lambda: tmp_path)
    rows = studies.study_log("msr", "val", "long4x", "cmd", profile="book")
    assert rows == [{"step": 0, "epoch": 0, "cmd": 1.5}, {"step": 1, "epoch": 0, "cmd": 0.5}]
    with pytest.raises(FileNotFoundError, match="moco3/seed0_log.csv.gz: no training log"):
        studies.study_log("msr", "val", "long4x", "moco3", profile="book")
