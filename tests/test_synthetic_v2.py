"""The synthetic dataset, version 2: determinism, shapes, labels, families, the xsub_val split,
the sensor artefacts, and that neither the mean pose nor one frame tells the classes apart."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from i2md_lib.config import ExperimentConfig, SyntheticConfig
from i2md_lib.data import ntu_format, preprocess
from i2md_lib.data import synthetic as syn
from i2md_lib.data import synthetic_v2 as v2
from i2md_lib.data.synthetic_motions import ActionContext, Controls, Draws

#: The smoke profile's sizes with the version-2 generator.
SMOKE = dataclasses.replace(ExperimentConfig.for_profile("smoke").data.synthetic, version=2)


@pytest.fixture(scope="module")
def raw_smoke():
    return syn.generate_raw(SMOKE)


def test_version_1_stays_the_default():
    assert SyntheticConfig().version == 1
    for profile in ("smoke", "book", "full"):
        assert ExperimentConfig.for_profile(profile).data.synthetic.version == 1
    with pytest.raises(ValueError, match="version"):
        syn.generate_raw(dataclasses.replace(SMOKE, version=3))


def test_class_list_and_families():
    names = syn.class_names(SMOKE)
    assert len(names) == len(v2.ACTIONS) >= 30 and len(set(names)) == len(names)
    assert names == tuple(a.name for a in v2.ACTIONS)
    members = [n for family in v2.FAMILIES.values() for n in family]
    assert sorted(members) == sorted(names)                     # every class in exactly one family
    assert all(len(family) >= 2 for family in v2.FAMILIES.values())
    assert "handshake" in names
    persons = [a.persons for a in v2.ACTIONS]
    assert persons == sorted(persons)                           # two-person classes come last
    one_person = dataclasses.replace(SMOKE, two_person=False)
    assert syn.class_names(one_person) == tuple(a.name for a in v2.ACTIONS if a.persons == 1)


def test_deterministic_and_seeded(raw_smoke):
    again = syn.generate_raw(SMOKE)
    for a, b in zip(raw_smoke[:3], again[:3]):
        np.testing.assert_array_equal(a, b)
    assert raw_smoke[3] == again[3]
    other = syn.generate_raw(dataclasses.replace(SMOKE, seed=SMOKE.seed + 1))[0]
    assert not np.array_equal(other, raw_smoke[0])


def test_shapes_labels_names(raw_smoke):
    raw, num_frame, labels, names = raw_smoke
    n = SMOKE.num_subjects * SMOKE.num_cameras * SMOKE.repetitions * len(v2.ACTIONS)
    assert raw.shape == (n, 3, SMOKE.stored_frames, 25, 2) and raw.dtype == np.float32
    assert np.isfinite(raw).all()
    assert num_frame.min() >= SMOKE.min_frames and num_frame.max() <= SMOKE.max_frames
    assert sorted(set(labels.tolist())) == list(range(len(v2.ACTIONS)))
    assert [ntu_format.parse_name(x).label for x in names] == labels.tolist()
    after = np.arange(SMOKE.stored_frames)[None, :] >= num_frame[:, None]          # (N, T)
    assert not raw.transpose(0, 2, 1, 3, 4)[after].any()                          # zero after the clip
    second = np.abs(raw[..., 1]).sum(axis=(1, 2, 3)) > 0
    assert (second == np.array([v2.ACTIONS[k].persons == 2 for k in labels])).all()


def test_version_2_does_not_touch_version_1():
    v1 = dataclasses.replace(SMOKE, version=1, test_every=2)
    assert syn.class_names(v1) == syn.SYNTHETIC_CLASSES and len(syn.SYNTHETIC_CLASSES) == 13
    assert syn.config_hash(v1) != syn.config_hash(SMOKE)


def test_test_every_and_xsub_val_split():
    cfg = dataclasses.replace(SMOKE, num_subjects=9, test_every=3, num_cameras=1)
    ids = syn.performer_ids(9, 3)
    assert [i in ntu_format.TRAINING_SUBJECTS for i in ids] == [True, True, False] * 3
    train, test = syn.generate(cfg, "xsub")
    dev, val = syn.generate(cfg, "xsub_val")
    subjects = lambda part: {ntu_format.parse_name(n).subject for n in part.names}  # noqa: E731
    assert len(subjects(test)) == 3 and len(subjects(train)) == 6
    assert subjects(dev) | subjects(val) == subjects(train)                 # only training subjects
    assert not subjects(dev) & subjects(val) and len(subjects(val)) == 6 // syn.VAL_EVERY
    assert sorted(set(val.labels.tolist())) == list(range(len(v2.ACTIONS)))
    np.testing.assert_array_equal(np.asarray(val.data), np.asarray(train.data)[
        [i for i, n in enumerate(train.names) if ntu_format.parse_name(n).subject in subjects(val)]])


def test_reversed_in_time_plays_the_controls_backwards():
    t = np.arange(6) / 30.0
    ramp = np.tile(np.arange(6.0), (2, 1))                                     # (P=2, T=6)

    def make(ctx, draw):
        vec = np.repeat(ramp[..., None], 3, axis=-1)
        return [Controls(vec, ramp, ramp, ramp, ramp, vec, vec, vec, vec, vec, vec)]

    ctx = ActionContext(None, None, None, None, t, np.array([6, 4]), np.zeros((2, 1)))
    out = v2.reversed_in_time(make)(ctx, Draws(ctx.rand))[0]
    np.testing.assert_array_equal(out.yaw[0], [5, 4, 3, 2, 1, 0])
    np.testing.assert_array_equal(out.yaw[1], [3, 2, 1, 0, 4, 5])            # only the 4 valid frames
    np.testing.assert_array_equal(out.root[1, :, 2], [3, 2, 1, 0, 4, 5])


def test_waveforms():
    angle = np.linspace(0, 2 * np.pi, 2000, endpoint=False)
    np.testing.assert_array_equal(v2.waveform("sine", angle), np.sin(angle))
    tap = v2.waveform("tap", angle)
    assert abs(tap.mean()) < 1e-3 and tap.max() == pytest.approx(1.0, abs=1e-3) and tap.min() > -0.2
    assert (tap > 0.5).mean() < v2.TAP_WIDTH                     # a short tap once per cycle
    kinds = {p[3] for p in v2.PATTERNS.values()}
    assert kinds == {"sine", "tap"}
    senses = [p[2] for name, p in v2.PATTERNS.items() if "circling" in name]
    assert sorted(senses) == [-1.0, 1.0]                         # the two circles differ only in sense


def test_sensor_artifacts_only_touch_their_frames(monkeypatch):
    rng = np.random.default_rng(0)
    cam = rng.normal(size=(50, 2, 20, 25, 3)).astype(np.float32)
    hidden = np.zeros(cam.shape[:-1], bool)
    before = cam.copy()
    v2.sensor_artifacts(cam, hidden, np.full(50, 20), np.random.default_rng(1))
    changed = (cam != before).any(axis=-1)                                      # (N, M, T, V)
    always = list(v2.EXTREMITY_JOINTS)
    assert changed[:, :, :, always].all()                                       # extremities jitter
    assert changed[:, 0, 0, list(v2.START_JOINTS)].all()                        # the first frame is off
    again = before.copy()
    v2.sensor_artifacts(again, hidden, np.full(50, 20), np.random.default_rng(1))
    np.testing.assert_array_equal(again, cam)                                   # seeded
    # the bursts: a few clips, a few frames each
    monkeypatch.setattr(v2, "EXTREMITY_NOISE", 0.0)
    monkeypatch.setattr(v2, "START_ERROR", 0.0)
    cam = before.copy()
    v2.sensor_artifacts(cam, hidden, np.full(50, 20), np.random.default_rng(1))
    frames = (cam != before).any(axis=(1, 3, 4))                                # (N, T)
    assert 0 < frames.any(axis=1).sum() < 50
    assert frames.sum(axis=1).max() <= (2 + 10) + (3 + 8) + (2 + 5)
    # occluded joints are pulled towards their parent
    monkeypatch.setattr(v2, "P_FROZEN", 0.0)                                    # freezes touch body 1 too
    cam = before.copy()
    v2.sensor_artifacts(cam, np.ones_like(hidden), np.full(50, 20), np.random.default_rng(1))
    moved = cam[:, 1, :, 5] - before[:, 1, :, 5]                                # body 1 has no bursts
    expected = v2.INFERRED_PULL * (before[:, 1, :, 4] - before[:, 1, :, 5])     # left elbow -> shoulder
    np.testing.assert_allclose(moved, expected, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def probe_data():
    """A small version-2 set (12 subjects, one camera), normalised like NTU, split by subject."""
    cfg = dataclasses.replace(SMOKE, num_subjects=12, num_cameras=1, min_frames=40, max_frames=60,
                              stored_frames=60, test_every=4, seed=3)
    raw, num_frame, labels, names = syn.generate_raw(cfg)
    data = preprocess.pre_normalize(raw)
    train = np.array([ntu_format.is_training(n, "xsub") for n in names])
    return data, num_frame, labels, train


def _probe(features: np.ndarray, labels: np.ndarray, train: np.ndarray) -> float:
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    clf.fit(features[train], labels[train])
    return 100.0 * clf.score(features[~train], labels[~train])


def test_mean_pose_and_one_frame_do_not_reveal_the_class(probe_data):
    """Linear probes on the per-clip mean pose or one random frame stay far below a probe
    that sees the order of events: means over four quarters of the clip, the mean speed of
    every coordinate, and the sense in which the right wrist turns in each plane."""
    data, num_frame, labels, train = probe_data
    rng = np.random.default_rng(0)
    mean_pose, frame, temporal = [], [], []
    for clip, t in zip(data, num_frame):
        x = clip[:, :t]                                                            # (C, T, V, M)
        mean_pose.append(x.mean(axis=1).ravel())
        frame.append(x[:, rng.integers(0, t)].ravel())
        quarters = [q.mean(axis=1).ravel() for q in np.array_split(x, 4, axis=1)]
        speed = np.abs(np.diff(x, axis=1)).mean(axis=1).ravel()
        wrist = x[:, :, 10, 0] - x[:, :, 10, 0].mean(axis=1, keepdims=True)          # (3, T)
        turn = [np.sum(wrist[a, :-1] * wrist[b, 1:] - wrist[b, :-1] * wrist[a, 1:])
                for a, b in ((0, 1), (1, 2), (2, 0))]
        temporal.append(np.concatenate(quarters + [speed, 100.0 * np.array(turn)]))
    scores = {name: _probe(np.array(f), labels, train)
              for name, f in (("mean pose", mean_pose), ("one frame", frame), ("temporal", temporal))}
    assert scores["temporal"] >= scores["mean pose"] + 15, scores
    assert scores["temporal"] >= scores["one frame"] + 15, scores


def test_families_share_their_mean_pose(probe_data):
    """Within a hand-site family the class-mean right-hand position differs far less than
    between families."""
    data, num_frame, labels, _ = probe_data
    hand = np.array([clip[:, :t, 11, 0].mean(axis=1) for clip, t in zip(data, num_frame)])     # (N, 3)
    names = [a.name for a in v2.ACTIONS]
    centres = np.array([hand[labels == k].mean(axis=0) for k in range(len(names))])
    sites = [f for f in v2.FAMILIES if f.startswith("hand at")]
    within, between = [], []
    for i, family in enumerate(sites):
        idx = [names.index(n) for n in v2.FAMILIES[family]]
        within.append(np.linalg.norm(centres[idx] - centres[idx].mean(axis=0), axis=1).max())
        for other in sites[i + 1:]:
            jdx = [names.index(n) for n in v2.FAMILIES[other]]
            between.append(np.linalg.norm(centres[idx].mean(axis=0) - centres[jdx].mean(axis=0)))
    assert max(within) < 0.5 * min(between), (within, between)
