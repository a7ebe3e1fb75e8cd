"""Body selection and the vectorised CMD/2s-AGCN normalisation against loop versions and geometry."""
from __future__ import annotations

import numpy as np
import pytest

from benchmarks._preprocess_reference import (body_energy_loop, pre_normalize_loop,
                                              rotation_matrix_loop, select_bodies_loop)
from i2md_lib.data.preprocess import (body_energy, center_on_main_body, pad_null_frames, pre_normalize,
                                      rotation_to, select_bodies, to_fixed_length)

RNG = np.random.default_rng(1234)


def random_person(t: int, rng: np.random.Generator = RNG) -> np.ndarray:
    """``(3, T, 25)`` a loosely human body: spine up, shoulders sideways, moving a bit."""
    base = rng.normal(0, 0.3, (25, 3)) + [0.0, 0.0, 3.0]
    base[0], base[1], base[4], base[8] = [0, -0.3, 3], [0, 0, 3], [-0.2, 0.2, 3], [0.2, 0.2, 3.1]
    drift = np.cumsum(rng.normal(0, 0.02, (t, 25, 3)), axis=0)
    return (base[None] + drift).transpose(2, 0, 1)


def edge_case_batch(dtype=np.float64) -> np.ndarray:
    """``(9, 3, 30, 25, 2)`` covering every branch of the normalisation."""
    t = 30
    x = np.stack([np.stack([random_person(t), random_person(t)], axis=-1) for _ in range(9)]).astype(dtype)
    x[0, :, 22:] = 0                           # trailing empty frames (both persons)
    x[1, :, :4, :, 0] = 0                      # person 0: leading empty frames ...
    x[1, :, 9:11, :, 0] = 0                    # ... an interior gap (removed by the shift) ...
    x[1, :, 25:, :, 0] = 0                     # ... and trailing empty frames
    x[1, :, 12:14, :, 1] = 0                   # person 1: interior gap kept, repeated in the padding
    x[1, :, 20:, :, 1] = 0
    x[2, ..., 1] = 0                           # one person only
    x[3] = 0                                   # an empty sample
    x[4, :, :, 7] = 0                          # a joint that is never tracked
    x[4, :, 5, 12:, 0] = 0                     # half a body missing in one frame
    x[5, :, 0, :, 1] = 0                       # person 1 appears in frame 1 only
    x[5, :, 2:, :, 1] = 0
    x[6, :, 0, 0, 0] = x[6, :, 0, 1, 0]        # zero-length spine bone in frame 0 (no z-rotation)
    x[7, :, 0, 1, 0] = x[7, :, 0, 0, 0] - [0, 0, 0.3]  # spine pointing straight down (anti-parallel)
    x[8, :, 1:] = 0                            # a single frame
    return x


# ----------------------------------------------------------------------------- body selection
def test_body_energy_matches_std_over_nonempty_frames():
    xyz = RNG.normal(size=(20, 3, 25, 3))
    xyz[:5, 0] = 0                             # body 0 missing in 5 frames
    xyz[:, 2] = 0                              # body 2 never there
    energy = body_energy(xyz)
    valid = xyz[5:, 0].reshape(-1, 3)
    assert energy[0] == pytest.approx(valid.std(axis=0).sum(), rel=1e-12)
    assert energy[1] == pytest.approx(xyz[:, 1].reshape(-1, 3).std(axis=0).sum(), rel=1e-12)
    assert energy[2] == 0.0
    assert energy[0] == pytest.approx(body_energy_loop(xyz[:, 0]), rel=1e-12)


def test_select_bodies_keeps_the_two_most_active_in_order():
    t = 15
    xyz = np.zeros((t, 4, 25, 3))
    for m, scale in enumerate([0.01, 1.0, 0.0, 0.3]):   # body 2 absent
        xyz[:, m] = RNG.normal(0, scale, (t, 25, 3)) + (m + 1 if scale else 0)
    out = select_bodies(xyz)
    assert out.shape == (3, t, 25, 2)
    np.testing.assert_array_equal(out[..., 0], xyz[:, 1].transpose(2, 0, 1))
    np.testing.assert_array_equal(out[..., 1], xyz[:, 3].transpose(2, 0, 1))
    np.testing.assert_array_equal(out, select_bodies_loop(xyz.transpose(1, 0, 2, 3)))


def test_select_bodies_ties_and_padding():
    one = RNG.normal(size=(6, 1, 25, 3))
    out = select_bodies(one)                              # one body -> second slot zero
    np.testing.assert_array_equal(out[..., 0], one[:, 0].transpose(2, 0, 1))
    np.testing.assert_array_equal(out[..., 1], 0)
    static = np.zeros((6, 3, 25, 3))
    static[:, 0] = 1.0                                    # energy 0 (no motion, one point value)
    static[:, 2] = 2.0                                    # energy 0 too: tie -> later body first
    out = select_bodies(static)
    np.testing.assert_array_equal(out[..., 0], 2.0)
    np.testing.assert_array_equal(out[..., 1], 0.0)       # body 1 (absent) beats body 0 on the tie
    np.testing.assert_array_equal(out, select_bodies_loop(static.transpose(1, 0, 2, 3)))


def test_to_fixed_length_pads_and_cuts():
    sample = RNG.normal(size=(3, 7, 25, 2))
    padded, kept = to_fixed_length(sample, 10)
    assert kept == 7 and padded.dtype == np.float32
    np.testing.assert_array_equal(padded[:, 7:], 0)
    cut, kept = to_fixed_length(sample, 5)
    assert kept == 5 and cut.shape == (3, 5, 25, 2)


# ----------------------------------------------------------------------------- vectorised == loops
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vectorised_equals_loop_reference(dtype):
    x = edge_case_batch(dtype)
    before = x.copy()
    fast, slow = pre_normalize(x), pre_normalize_loop(x)
    np.testing.assert_array_equal(x, before)             # input untouched
    assert fast.dtype == dtype and fast.shape == x.shape
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-5 if dtype == np.float32 else 1e-12)
    np.testing.assert_array_equal(fast == 0, slow == 0)  # same zero pattern


def test_chunks_do_not_change_the_result():
    x = np.concatenate([edge_case_batch()[:, :, :6]] * 15)  # 135 samples > one chunk of 128
    whole = pre_normalize(x)
    one_by_one = np.concatenate([pre_normalize(x[i:i + 1]) for i in range(len(x))])
    np.testing.assert_array_equal(whole, one_by_one)


# ----------------------------------------------------------------------------- the individual rules
def test_padding_rule():
    t = 8
    a, b, c = (np.full((3, 25), v) for v in (1.0, 2.0, 3.0))
    x = np.zeros((1, 3, t, 25, 2))
    # person 0: empty first frame -> non-empty frames move to the front, then repeat cyclically
    for frame, value in ((2, a), (3, b), (5, c)):
        x[0, :, frame, :, 0] = value
    # person 1: non-empty first frame -> interior gap kept, prefix [a, 0, b] repeated
    x[0, :, 0, :, 1], x[0, :, 2, :, 1] = a, b
    out = pad_null_frames(x)
    first = out[0, 0, :, 0, 0]
    second = out[0, 0, :, 0, 1]
    assert first.tolist() == [1, 2, 3, 1, 2, 3, 1, 2]
    assert second.tolist() == [1, 0, 2, 1, 0, 2, 1, 0]


def test_center_subtracts_person0_joint1_per_frame_and_keeps_zero_joints():
    x = edge_case_batch()[:1]
    x[0, :, :, 7, 1] = 0                                    # a missing joint of person 1
    out = center_on_main_body(x)
    center = x[0, :, :, 1, 0]                               # (3, T)
    np.testing.assert_allclose(out[0, :, :, 3, 1], x[0, :, :, 3, 1] - center)
    np.testing.assert_array_equal(out[0, :, 22:], 0)        # empty frames stay empty
    np.testing.assert_array_equal(out[0, :, :, 7, 1], 0)    # missing joint stays zero


def test_normalised_output_is_centred_and_shoulders_on_x():
    x = edge_case_batch()
    out = pre_normalize(x)
    for n in (0, 1, 2, 4, 5):
        np.testing.assert_allclose(out[n, :, :, 1, 0], 0, atol=1e-12)  # centre joint of person 0
        shoulder = out[n, :, 0, 8, 0] - out[n, :, 0, 4, 0]
        assert shoulder[0] > 0
        np.testing.assert_allclose(shoulder[1:], 0, atol=1e-12)
        # rotations keep angles: spine-to-x angle == original spine-to-shoulder angle
        x0 = pad_null_frames(x[n:n + 1])[0]
        spine0, shoulder0 = x0[:, 0, 1, 0] - x0[:, 0, 0, 0], x0[:, 0, 8, 0] - x0[:, 0, 4, 0]
        spine = out[n, :, 0, 1, 0] - out[n, :, 0, 0, 0]
        cos0 = spine0 @ shoulder0 / np.linalg.norm(spine0) / np.linalg.norm(shoulder0)
        assert spine[0] / np.linalg.norm(spine) == pytest.approx(cos0, abs=1e-9)
    np.testing.assert_array_equal(out[3], 0)                # empty sample stays empty
    np.testing.assert_array_equal(out[2, ..., 1], 0)        # absent person stays zero


def perpendicular_sample(t: int = 20) -> np.ndarray:
    """A sample whose frame-0 spine and shoulder bones are perpendicular, randomly posed."""
    x = np.stack([random_person(t), random_person(t)], axis=-1)[None]   # (1, 3, T, 25, 2)
    x[0, :, 0, 0, 0], x[0, :, 0, 1, 0] = [0, 0, 0], [0, 0, 0.3]         # spine along z
    x[0, :, 0, 4, 0], x[0, :, 0, 8, 0] = [-0.2, 0.1, 0.3], [0.2, 0.1, 0.3]  # shoulders along x
    q, _ = np.linalg.qr(RNG.normal(size=(3, 3)))
    rot = q * np.sign(np.linalg.det(q))                                   # a proper rotation
    posed = np.einsum("ij,njtvm->nitvm", rot, x) + np.array([0.5, -0.2, 3.0])[None, :, None, None, None]
    return posed


def test_idempotent_and_axes_aligned_when_bones_are_perpendicular():
    x = perpendicular_sample()
    once = pre_normalize(x)
    twice = pre_normalize(once)
    np.testing.assert_allclose(twice, once, atol=1e-9)
    spine = once[0, :, 0, 1, 0] - once[0, :, 0, 0, 0]
    shoulder = once[0, :, 0, 8, 0] - once[0, :, 0, 4, 0]
    np.testing.assert_allclose(spine / np.linalg.norm(spine), [0, 0, 1], atol=1e-9)
    np.testing.assert_allclose(shoulder / np.linalg.norm(shoulder), [1, 0, 0], atol=1e-9)
    np.testing.assert_allclose(once[0, :, :, 1, 0], 0, atol=1e-12)


def test_not_idempotent_in_general_like_the_reference():
    # the x-rotation tilts the spine off +z when the bones are not perpendicular,
    # so a second pass rotates again (the reference behaves the same way)
    x = edge_case_batch()[:1]
    once = pre_normalize(x)
    assert not np.allclose(pre_normalize(once), once, atol=1e-6)
    np.testing.assert_allclose(pre_normalize(once), pre_normalize_loop(once), atol=1e-12)


# ----------------------------------------------------------------------------- rotations
def test_rotation_to_maps_vectors_onto_the_target():
    v = RNG.normal(size=(50, 3))
    for target in (np.array([0.0, 0, 1]), np.array([1.0, 0, 0])):
        rot = rotation_to(v, target)
        np.testing.assert_allclose(rot @ rot.transpose(0, 2, 1), np.broadcast_to(np.eye(3), rot.shape), atol=1e-12)
        np.testing.assert_allclose(np.linalg.det(rot), 1, atol=1e-12)
        mapped = np.einsum("nij,nj->ni", rot, v) / np.linalg.norm(v, axis=1, keepdims=True)
        np.testing.assert_allclose(mapped, np.broadcast_to(target, mapped.shape), atol=1e-12)
        for i in range(5):   # same matrices as the independent quaternion formula
            axis = np.cross(v[i], target)
            angle = np.arccos(v[i] @ target / np.linalg.norm(v[i]))
            np.testing.assert_allclose(rot[i], rotation_matrix_loop(axis, angle), atol=1e-12)


def test_rotation_to_identity_cases_follow_the_reference():
    z = np.array([0.0, 0, 1])
    rot = rotation_to(np.array([[0.0, 0, 0], [0, 0, 2], [0, 0, -1], [1e-8, 0, 1]]), z)
    np.testing.assert_array_equal(rot, np.broadcast_to(np.eye(3), (4, 3, 3)))


def test_rejects_wrong_shapes():
    with pytest.raises(ValueError, match=r"\(N, C=3, T, V, M\)"):
        pre_normalize(np.zeros((2, 30, 25, 2)))
    with pytest.raises(ValueError, match=r"\(T, M, V, 3\)"):
        select_bodies(np.zeros((3, 30, 25, 2)))
