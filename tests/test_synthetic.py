"""The synthetic dataset, version 1: determinism, format, splits, body kinematics, cache, .skeleton
corpus, and arrays unchanged since version 2 was added (``tests/test_synthetic_v2.py`` tests version 2)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from i2md_lib.config import ExperimentConfig, SyntheticConfig
from i2md_lib.data import ntu_format, preprocess, store
from i2md_lib.data import synthetic as syn
from i2md_lib.skeleton import BONES


#: The smoke profile's sizes with the version-1 generator (the profiles use version 2).
SMOKE = dataclasses.replace(ExperimentConfig.for_profile("smoke").data.synthetic, version=1, test_every=2)
REFERENCE = Path(__file__).parent / "data" / "synthetic_v1_smoke.npz"
TWO_PERSON = [i for i, a in enumerate(syn.ACTIONS) if a.persons == 2]


@pytest.fixture(scope="module")
def raw_smoke():
    return syn.generate_raw(SMOKE)


@pytest.fixture(scope="module")
def clean_smoke():
    return syn.generate_raw(SMOKE, noise=False)


def _bone_lengths(raw: np.ndarray) -> np.ndarray:
    """(N, 3, T, 25, M) -> (N, T, 24, M) Euclidean bone lengths, computed here from the pairs."""
    child = raw[:, :, :, [c for c, _ in BONES]]
    parent = raw[:, :, :, [p for _, p in BONES]]
    return np.sqrt(((child.astype(np.float64) - parent) ** 2).sum(axis=1))


def test_version_1_arrays_unchanged(raw_smoke):
    """Against arrays saved before version 2 existed (``tests/data/synthetic_v1_smoke.npz``)."""
    ref = np.load(REFERENCE)
    raw, num_frame, labels, names = raw_smoke
    np.testing.assert_allclose(raw[ref["raw_index"]], ref["raw"], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(num_frame, ref["num_frame"])
    np.testing.assert_array_equal(labels, ref["labels"])
    assert names == ref["names"].tolist()
    train, val = syn.generate(SMOKE, "xsub")
    np.testing.assert_allclose(train.data[ref["train_index"]], ref["train"], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(train.labels, ref["train_labels"])
    np.testing.assert_array_equal(val.labels, ref["val_labels"])


def test_same_seed_same_data_other_seed_other_data(raw_smoke):
    again = syn.generate_raw(SMOKE)
    for a, b in zip(raw_smoke[:3], again[:3]):
        np.testing.assert_array_equal(a, b)
    assert raw_smoke[3] == again[3]
    other = syn.generate_raw(dataclasses.replace(SMOKE, seed=SMOKE.seed + 1))
    assert other[0].shape == raw_smoke[0].shape
    assert np.abs(other[0] - raw_smoke[0]).mean() > 0.01


def test_shapes_dtypes_and_zero_padding(raw_smoke):
    raw, num_frame, labels, names = raw_smoke
    n = SMOKE.num_subjects * SMOKE.num_cameras * SMOKE.repetitions * len(syn.SYNTHETIC_CLASSES)
    assert raw.shape == (n, 3, SMOKE.stored_frames, 25, 2) and raw.dtype == np.float32
    assert num_frame.dtype == np.int64 and labels.dtype == np.int64 and len(names) == n
    assert num_frame.min() >= SMOKE.min_frames and num_frame.max() <= SMOKE.max_frames
    assert sorted(set(labels.tolist())) == list(range(len(syn.SYNTHETIC_CLASSES)))
    frames = np.arange(SMOKE.stored_frames)
    valid = frames[None, :] < num_frame[:, None]                                   # (N, T)
    body0 = np.abs(raw[..., 0]).sum(axis=(1, 3)) > 0                               # (N, T)
    np.testing.assert_array_equal(body0, valid)


def test_camera_space_is_kinect_like(raw_smoke):
    raw, num_frame, _, _ = raw_smoke
    body0 = raw[..., 0]                                       # (N, 3, T, 25)
    valid = np.arange(raw.shape[2])[None, :] < num_frame[:, None]
    depth = body0[:, 2][valid]                                # (frames, 25)
    assert 1.0 < depth.min() and depth.max() < 5.0           # metres in front of the sensor
    head_y, feet_y = body0[:, 1, :, 3][valid], body0[:, 1, :, [15, 19]].max(axis=0)[valid]
    assert (head_y - feet_y > 0.6).all()                      # y is up
    # the person faces the cameras: right shoulder (8) at larger x than left (4) mostly
    shoulders_x = body0[:, 0, :, 8][valid] - body0[:, 0, :, 4][valid]
    assert np.mean(shoulders_x > 0) > 0.6


def test_bone_lengths_constant_per_subject(clean_smoke):
    raw, num_frame, labels, names = clean_smoke
    lengths = _bone_lengths(raw)                              # (N, T, 24, M)
    performers = np.array([ntu_format.parse_name(n).subject for n in names])
    per_subject = {}
    for i in range(len(raw)):
        own = lengths[i, :num_frame[i], :, 0]                 # performer body, valid frames
        np.testing.assert_allclose(own, np.broadcast_to(own[0], own.shape), atol=2e-5)
        per_subject.setdefault(performers[i], []).append(own[0])
    reference = {}
    for subject, rows in per_subject.items():                 # same lengths in every clip
        np.testing.assert_allclose(np.stack(rows), np.broadcast_to(rows[0], (len(rows), 24)), atol=2e-5)
        reference[subject] = rows[0]
    # subjects differ, and the forearm (wrist 10 - elbow 9) is adult-sized
    table = np.stack(list(reference.values()))
    assert (table.std(axis=0)[[i for i, (c, p) in enumerate(BONES) if p != c]] > 1e-3).sum() > 15
    forearm = BONES.index((10, 9))
    assert (0.18 < table[:, forearm]).all() and (table[:, forearm] < 0.32).all()
    # the partner of two-person clips keeps its lengths too
    for i in np.flatnonzero(np.isin(labels, TWO_PERSON)):
        other = lengths[i, :num_frame[i], :, 1]
        np.testing.assert_allclose(other, np.broadcast_to(other[0], other.shape), atol=2e-5)


def test_subjects_do_not_depend_on_dataset_size(clean_smoke):
    small = syn.generate_raw(dataclasses.replace(SMOKE, num_subjects=2, num_cameras=1), noise=False)
    for name in ("S001C001P001R001A001", "S001C001P003R001A004"):
        i, j = small[3].index(name), clean_smoke[3].index(name)
        np.testing.assert_allclose(_bone_lengths(small[0][i:i + 1])[0, 0, :, 0],
                                   _bone_lengths(clean_smoke[0][j:j + 1])[0, 0, :, 0], atol=1e-6)


def test_noise_is_what_the_config_asks(raw_smoke, clean_smoke):
    valid = np.arange(SMOKE.stored_frames)[None, :] < raw_smoke[1][:, None]
    diff = (raw_smoke[0] - clean_smoke[0]).transpose(0, 2, 1, 3, 4)[valid][..., 0]   # (frames, 3, 25)
    xy_std = diff[:, :2].std()
    assert 0.8 * SMOKE.noise_std < xy_std < 1.5 * SMOKE.noise_std     # occluded joints add a little
    assert diff[:, 2].std() > 1.2 * xy_std                              # depth is noisier
    quiet = syn.generate_raw(dataclasses.replace(SMOKE, noise_std=0.0))[0]
    np.testing.assert_array_equal(quiet, clean_smoke[0])


def test_names_parse_and_match_labels(raw_smoke):
    _, _, labels, names = raw_smoke
    assert len(set(names)) == len(names)
    for name, label in zip(names, labels):
        parsed = ntu_format.parse_name(name)
        assert parsed.label == label and parsed.setup == 1
        assert 1 <= parsed.camera <= SMOKE.num_cameras and parsed.replication <= SMOKE.repetitions


def test_performer_ids_split_the_subjects_in_half():
    for n in (2, 4, 12, 20, 106):
        ids = syn.performer_ids(n)
        assert len(set(ids)) == n
        training = sum(i in ntu_format.TRAINING_SUBJECTS for i in ids)
        assert training == (n + 1) // 2
    assert syn.performer_ids(4) == [1, 3, 2, 6]
    with pytest.raises(ValueError, match="num_subjects"):
        syn.performer_ids(107)


@pytest.mark.parametrize("benchmark", ["xsub", "xview"])
def test_splits_hold_every_class_on_both_sides(benchmark):
    train, val = syn.generate(SMOKE, benchmark)
    classes = list(range(len(syn.SYNTHETIC_CLASSES)))
    assert sorted(set(train.labels.tolist())) == classes == sorted(set(val.labels.tolist()))
    for part, expected in ((train, True), (val, False)):
        assert all(ntu_format.is_training(n, benchmark) == expected for n in part.names)
    assert len(train) + len(val) == SMOKE.num_subjects * SMOKE.num_cameras * len(classes)
    if benchmark == "xview":
        assert {ntu_format.parse_name(n).camera for n in val.names} == {1}


def test_two_person_classes_have_a_second_body(raw_smoke):
    raw, num_frame, labels, _ = raw_smoke
    second = np.abs(raw[..., 1]).sum(axis=(1, 3))              # (N, T)
    valid = np.arange(raw.shape[2])[None, :] < num_frame[:, None]
    for i in range(len(raw)):
        if labels[i] in TWO_PERSON:
            assert (second[i][valid[i]] > 0).all()
        else:
            assert (second[i] == 0).all()
    one_person = syn.generate_raw(dataclasses.replace(SMOKE, two_person=False, num_cameras=1))
    assert one_person[2].max() == len(syn.SYNTHETIC_CLASSES) - len(TWO_PERSON) - 1
    assert (one_person[0][..., 1] == 0).all()
    assert syn.class_names(dataclasses.replace(SMOKE, two_person=False)) == \
        syn.SYNTHETIC_CLASSES[: -len(TWO_PERSON)]


def test_normalised_like_ntu(raw_smoke):
    train, _ = syn.generate(SMOKE, "xsub")
    data, nf = train.data, train.num_frame
    # the spine middle of body 0 is the origin in every valid frame (per-frame centring)
    for i in range(0, len(data), 7):
        np.testing.assert_allclose(data[i, :, : nf[i], 1, 0], 0.0, atol=1e-5)
        # padding repeats the clip (pre_normalize's rule), it is not zeros
        if nf[i] < data.shape[2]:
            np.testing.assert_allclose(data[i, :, nf[i]], data[i, :, 0], atol=1e-6)
    # same as applying pre_normalize to the raw clips of the training part
    raw, _, _, names = raw_smoke
    idx = [names.index(n) for n in train.names[:10]]
    np.testing.assert_allclose(data[:10], preprocess.pre_normalize(raw[idx]), atol=1e-6)


def test_cache_round_trip(tmp_path, monkeypatch):
    cfg = dataclasses.replace(SMOKE, num_subjects=2, seed=5)
    first = syn.synthetic_split(cfg, "xsub", "val", cache_dir=tmp_path)
    folder = syn.cache_folder(cfg, tmp_path)
    assert folder.parent == tmp_path and (folder / "xview" / "train_data_joint.npy").is_file()
    meta = json.loads((folder / "complete.json").read_text())
    assert meta["config"]["seed"] == 5 and meta["classes"] == list(syn.SYNTHETIC_CLASSES)

    def no_generation(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    _, expected = syn.generate(cfg, "xsub")
    monkeypatch.setattr(syn, "generate_raw", no_generation)
    again = syn.synthetic_split(cfg, "xsub", "val", cache_dir=tmp_path)
    for loaded in (first, again):
        np.testing.assert_array_equal(np.asarray(loaded.data), expected.data)
        np.testing.assert_array_equal(loaded.num_frame, expected.num_frame)
        assert loaded.names == expected.names and (loaded.labels == expected.labels).all()
    assert len(store.load_split(folder / "xview", "val")) == 2 * len(syn.SYNTHETIC_CLASSES)
    # the data root comes from $I2MD_DATA_DIR when set
    monkeypatch.setenv(syn.DATA_DIR_ENV, str(tmp_path / "root"))
    assert syn.cache_folder(cfg) == tmp_path / "root" / "cache" / "synthetic" / syn.config_hash(cfg)
    assert syn.config_hash(cfg) != syn.config_hash(dataclasses.replace(cfg, seed=6))


def test_bad_configs_are_refused(tmp_path):
    with pytest.raises(ValueError, match="num_cameras"):
        syn.generate_raw(dataclasses.replace(SMOKE, num_cameras=4))
    with pytest.raises(ValueError, match="min_frames"):
        syn.generate_raw(dataclasses.replace(SMOKE, min_frames=50, max_frames=40))
    with pytest.raises(ValueError, match="benchmarks"):
        syn.synthetic_split(SMOKE, "xset", "train", cache_dir=tmp_path)
    one_camera = dataclasses.replace(SMOKE, num_subjects=2, num_cameras=1)
    with pytest.raises(ValueError, match="xview needs num_cameras >= 2"):
        syn.synthetic_split(one_camera, "xview", "train", cache_dir=tmp_path)


def test_skeleton_corpus_parses_back(tmp_path):
    n = 16
    paths = syn.write_skeleton_corpus(tmp_path, n, seed=2)
    clips = syn.make_skeleton_corpus(n, seed=2)
    assert [p.name for p in paths] == [f"{c.name}.skeleton" for c in clips]
    assert {c.label for c in clips} == set(range(len(syn.SYNTHETIC_CLASSES)))
    empty_frames = noise_bodies = 0
    for path, clip in zip(paths, clips):
        parsed = ntu_format.read_skeleton(path)
        assert ntu_format.parse_name(path).label == clip.label
        np.testing.assert_array_equal(parsed.bodies_per_frame, clip.present.sum(axis=1))
        empty_frames += int((parsed.bodies_per_frame == 0).sum())
        noise_bodies += int(clip.present[:, 2].sum())
        listed = np.cumsum(clip.present, axis=1) - 1          # position of each body in its frame
        dense = parsed.dense(max_bodies=3)                    # (T, 3, 25, 3)
        for m in range(2):
            frames = np.flatnonzero(clip.present[:, m])
            got = dense[frames, listed[frames, m]]                # (F, 25, 3)
            want = clip.raw[..., m][:, frames].transpose(1, 2, 0)  # (F, 25, 3)
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
        # the noise body is far less active than the performer, so body selection drops it
        slot = np.nonzero(clip.present)[1]                    # slot of each body in file order
        if (slot == 2).any():
            energy = [preprocess.body_energy(parsed.xyz[slot == m][:, None])[0] for m in (0, 2)]
            assert energy[1] < 0.5 * energy[0]
    assert empty_frames >= n and noise_bodies > 0


def test_one_subject_has_no_xsub_test_part():
    with pytest.raises(ValueError, match="no 'val' clips"):
        syn.generate(dataclasses.replace(SMOKE, num_subjects=1, num_cameras=1), "xsub")


def test_clips_longer_than_stored_frames_are_cut(raw_smoke):
    short = syn.generate_raw(dataclasses.replace(SMOKE, stored_frames=30))
    assert short[0].shape[2] == 30
    np.testing.assert_array_equal(short[1], np.minimum(raw_smoke[1], 30))
    np.testing.assert_array_equal(short[0], raw_smoke[0][:, :, :30])
    longer = SyntheticConfig(num_subjects=2, num_cameras=1, min_frames=10, max_frames=20, stored_frames=64)
    raw, num_frame, _, _ = syn.generate_raw(longer)
    assert raw.shape[2] == 64 and num_frame.max() <= 20 and not raw[:, :, 20:].any()


# -- residual distortions (the testbed's view and build nuisance) -----------------------------
def test_residual_distortions_are_rotations_after_stretches():
    names = [f"S001C00{c}P00{p}R001A00{a}" for c in (1, 2) for p in (1, 3) for a in (1, 5)]
    rotations = syn.residual_distortions(dataclasses.replace(SMOKE, residual_rotation=0.4), names)
    for m in rotations:  # stretch 0: proper rotations by at most 0.4 rad
        np.testing.assert_allclose(m @ m.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(m) == pytest.approx(1.0)
        assert np.arccos(np.clip((np.trace(m) - 1) / 2, -1, 1)) <= 0.4 + 1e-9
    assert len({m.round(9).tobytes() for m in rotations}) == len(names)      # every clip its own
    stretches = syn.residual_distortions(dataclasses.replace(SMOKE, axis_stretch=0.25), names)
    for m in stretches:  # rotation 0: a diagonal stretch within [0.75, 1.25]
        np.testing.assert_allclose(m, np.diag(np.diag(m)), atol=1e-12)
        assert ((0.75 <= np.diag(m)) & (np.diag(m) <= 1.25)).all()
    both = dataclasses.replace(SMOKE, residual_rotation=0.4, axis_stretch=0.25)
    once, again = syn.residual_distortions(both, names), syn.residual_distortions(both, names[::-1])
    np.testing.assert_array_equal(once, again[::-1])                         # a clip's map: its name
    bigger = dataclasses.replace(both, num_subjects=both.num_subjects + 4)
    np.testing.assert_array_equal(syn.residual_distortions(bigger, names), once)


def test_distorted_data_is_the_normalised_data_mapped_clip_by_clip():
    cfg = dataclasses.replace(SMOKE, residual_rotation=0.5, axis_stretch=0.25)
    plain, _ = syn.generate(SMOKE, "xsub")
    bent, _ = syn.generate(cfg, "xsub")
    assert bent.names == plain.names
    maps = syn.residual_distortions(cfg, plain.names)
    np.testing.assert_allclose(bent.data, np.einsum("nij,njtvm->nitvm", maps, plain.data), atol=1e-5)
    absent = np.asarray(plain.data) == 0                                     # padding, second bodies
    assert absent.any() and (np.asarray(bent.data)[absent.all(1, keepdims=True).repeat(3, 1)] == 0).all()
    assert np.abs(np.asarray(bent.data) - np.asarray(plain.data)).mean() > 0.01
    with pytest.raises(ValueError, match="one .3, 3. map per clip"):
        syn.distort(np.asarray(plain.data), maps[:1])


@pytest.mark.parametrize("field, value", [("residual_rotation", -0.1), ("residual_rotation", 4.0),
                                          ("axis_stretch", 1.0), ("axis_stretch", -0.2)])
def test_distortion_settings_out_of_range_are_refused(field, value):
    from i2md_lib.config import ConfigError
    with pytest.raises(ConfigError, match=f"data.synthetic.{field}"):
        SyntheticConfig(**{field: value})
