"""CMD augmentations: crop-resize against F.interpolate, shear/corruption properties,
probabilities over many seeded draws, and the batched torch versions against the
per-clip ones."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from i2md_lib.config import AugmentConfig
from i2md_lib.data import augment as aug

V, M = 25, 2


def reference_resize(segment: np.ndarray, size: int) -> np.ndarray:
    """The reference pipeline: (C, L, V, M) -> (1, C*V*M, L, 1) -> bilinear -> back."""
    c, length, v, m = segment.shape
    t = torch.tensor(segment, dtype=torch.float).permute(0, 2, 3, 1).reshape(c * v * m, length)
    t = F.interpolate(t[None, :, :, None], size=(size, 1), mode="bilinear", align_corners=False)
    return t[0, :, :, 0].reshape(c, v, m, size).permute(0, 3, 1, 2).numpy()


def frame_index_clip(t: int, n_valid: int) -> np.ndarray:
    """(3, t, V, M) whose value is the frame index; frames >= n_valid are NaN padding."""
    clip = np.broadcast_to(np.arange(t, dtype=np.float32)[None, :, None, None], (3, t, V, M)).copy()
    clip[:, n_valid:] = np.nan
    return clip


def random_clip(rng: np.random.Generator, t: int = 30) -> np.ndarray:
    return rng.standard_normal((3, t, V, M)).astype(np.float32)


# -- temporal crop-resize ---------------------------------------------------


@pytest.mark.parametrize("length,size", [(1, 16), (7, 16), (16, 16), (37, 64), (100, 64), (300, 64), (250, 16)])
def test_resize_matches_f_interpolate(length, size):
    seg = random_clip(np.random.default_rng(length), length) * 5
    np.testing.assert_allclose(aug.resize_time(seg, size), reference_resize(seg, size), rtol=0, atol=5e-6)


def test_resize_weights_are_computed_once_per_pair_and_read_only():
    first = aug.linear_resize_weights(37, 16)
    assert aug.linear_resize_weights(37, 16) is first             # cached per (length, size)
    fresh = aug.linear_resize_weights.__wrapped__(37, 16)
    assert all(np.array_equal(a, b) for a, b in zip(first, fresh))
    with pytest.raises(ValueError, match="read-only"):
        first[2][0] = 0.5                                         # a caller cannot change the cache


def test_resize_of_a_ramp_is_the_half_pixel_rule():
    # x[t] = t resized from 10 to 4 frames: src = 2.5 * (i + 0.5) - 0.5
    out = aug.resize_time(frame_index_clip(10, 10), 4)[0, :, 0, 0]
    np.testing.assert_allclose(out, [0.75, 3.25, 5.75, 8.25])


@pytest.mark.parametrize("n,scale,min_len,expected", [
    (300, 0.1, 64, 64), (300, 0.5, 64, 150), (300, 0.999, 64, 299), (300, 1.0, 64, 300),
    (40, 0.9, 64, 40), (100, 0.333, 16, 33), (10, 0.05, 16, 10),
])
def test_crop_length_rule(n, scale, min_len, expected):
    assert aug.crop_length(n, scale, min_len) == expected


def test_temporal_crop_reads_only_valid_frames_and_respects_lengths():
    window, n = 16, 50
    clip = frame_index_clip(80, n)
    rng = np.random.default_rng(1)
    spans = []
    for _ in range(300):
        view = aug.temporal_crop_resize(clip, n, (0.1, 1.0), window, rng=rng)
        assert view.shape == (3, window, V, M) and view.dtype == np.float32
        assert np.isfinite(view).all()                         # never reads the padding
        frames = view[0, :, 0, 0]
        assert np.all(np.diff(frames) > 0) and 0 <= frames[0] and frames[-1] <= n - 1
        spans.append(frames[-1] - frames[0])
    # resized span of a crop of L frames is (L - 1) - (L / window - 1) = L (1 - 1/window) - ... ;
    # shortest crop is window (span 15), longest n (span ~ n - n/window)
    spans = np.array(spans)
    assert spans.min() >= window - 1 - 1e-4
    assert spans.max() <= n - n / window + 1e-4
    # scale ~ U(0.1, 1) with length clamped below at 16 of 50: a clear spread of lengths
    assert np.ptp(spans) > 20


def test_temporal_crop_equals_reference_pipeline_for_its_crop():
    clip = random_clip(np.random.default_rng(2), 120)
    seed = 3
    out = aug.temporal_crop_resize(clip, 100, (0.1, 1.0), 64, rng=np.random.default_rng(seed))
    start, length = aug.draw_crop(100, (0.1, 1.0), 64, np.random.default_rng(seed))
    assert 64 <= length <= 100
    np.testing.assert_allclose(out, reference_resize(clip[:, start:start + length], 64), atol=5e-6)


def test_center_crop():
    clip = random_clip(np.random.default_rng(4), 120)
    clip[:, 100:] = np.nan
    out = aug.center_crop_resize(clip, 100, 0.95, 64)        # start int(0.05 * 100 / 2) = 2
    np.testing.assert_allclose(out, reference_resize(clip[:, 2:98], 64), atol=5e-6)
    # short clips and num_frame > T are fine; only the first min(num_frame, T) frames count
    assert np.isfinite(aug.center_crop_resize(clip[:, :5], 1000, 0.95, 16)).all()
    with pytest.raises(ValueError, match="ratio"):
        aug.center_crop_resize(clip, 100, 0.0, 64)


def test_random_crop_uses_half_to_full_range():
    n, window = 200, 16
    clip = frame_index_clip(200, n)
    rng = np.random.default_rng(5)
    spans = np.array([np.ptp(aug.random_crop_resize(clip, n, window=window, rng=rng)[0, :, 0, 0])
                      for _ in range(200)])
    # a crop of L frames spans L - L/window frames after resizing; L in [100, 200]
    lengths = spans / (1 - 1 / window)
    assert lengths.min() >= 100 - 1e-3 and lengths.max() <= 200 + 1e-3
    assert 0.4 < np.mean(lengths < 150) < 0.6


def test_bad_ratio_range():
    with pytest.raises(ValueError, match="0 < low <= high"):
        aug.temporal_crop_resize(np.zeros((3, 10, V, M)), 10, (0.8, 0.2), 4, rng=np.random.default_rng())


# -- spatial augmentations ---------------------------------------------------


def basis_clip() -> np.ndarray:
    """(3, 3, V, M) whose frame t holds the unit vector e_t at every joint."""
    clip = np.zeros((3, 3, V, M), dtype=np.float32)
    for t in range(3):
        clip[t, t] = 1.0
    return clip


def test_shear_matrix_and_application():
    rng = np.random.default_rng(6)
    mats = []
    for _ in range(200):
        out = aug.shear(basis_clip(), 0.7, rng=rng)
        # frame t is e_t @ S^T = column t of S, the same at every joint and body
        s = out[:, :, 0, 0]
        assert np.all(out == s[:, :, None, None])
        np.testing.assert_array_equal(np.diag(s), np.ones(3))
        mats.append(s)
    off = np.array(mats)[:, ~np.eye(3, dtype=bool)]
    assert np.abs(off).max() <= 0.7 and np.abs(off).max() > 0.65
    assert abs(off.mean()) < 0.05                             # symmetric around zero


def test_apply_shear_is_row_times_transpose():
    rng = np.random.default_rng(7)
    clip, s = random_clip(rng, 5), aug.random_shear_matrix(1.0, rng)
    expected = np.empty_like(clip)
    for t in range(5):
        for v in range(V):
            for m in range(M):
                expected[:, t, v, m] = clip[:, t, v, m] @ s.T
    np.testing.assert_allclose(aug.apply_shear(clip, s), expected, atol=1e-5)


def test_joint_corruption_zero_and_map():
    rng = np.random.default_rng(8)
    clip = random_clip(rng, 12) + 5.0                          # no joint is zero by chance
    n_zero = n_map = 0
    for _ in range(100):
        out = aug.joint_corruption(clip, 15, 0.5, rng=rng)
        unchanged = np.all(out == clip, axis=(0, 1, 3))          # (V,)
        assert unchanged.sum() == 10                             # 15 of 25 corrupted
        changed = ~unchanged
        if not out[:, :, changed].any():
            n_zero += 1
            continue
        n_map += 1
        # a single 3x3 map for all picked joints, frames and bodies: recover it
        rows_in = clip[:, :, changed].reshape(3, -1).T
        rows_out = out[:, :, changed].reshape(3, -1).T
        mat, residual, *_ = np.linalg.lstsq(rows_in, rows_out, rcond=None)
        np.testing.assert_allclose(rows_in @ mat, rows_out, atol=1e-4)
        assert np.abs(mat).max() <= 1.0 + 1e-5
    assert n_zero + n_map == 100 and 35 <= n_zero <= 65


def test_joint_corruption_draw():
    joints, mat = aug.random_corruption(np.random.default_rng(9), 15, p_zero=0.0)
    assert len(set(joints.tolist())) == 15 and joints.min() >= 0 and joints.max() < 25
    assert mat.shape == (3, 3) and np.all(mat != 0)
    _, mat = aug.random_corruption(np.random.default_rng(9), 15, p_zero=1.0)
    assert not mat.any()


def test_apply_corruption_matches_loop():
    rng = np.random.default_rng(10)
    clip = random_clip(rng, 4)
    joints, mat = aug.random_corruption(rng, 15, p_zero=0.0)
    expected = clip.copy()
    for v in joints:
        for t in range(4):
            for m in range(M):
                expected[:, t, v, m] = clip[:, t, v, m] @ mat
    np.testing.assert_allclose(aug.apply_corruption(clip, joints, mat), expected, atol=1e-5)


# -- one pretraining view ----------------------------------------------------


def kind_of_view(view: np.ndarray, cropped: np.ndarray) -> str:
    unchanged = np.all(view == cropped, axis=(0, 1, 3))
    if unchanged.sum() == 10:
        return "zero" if not view[:, :, ~unchanged].any() else "map"
    assert unchanged.sum() == 0
    return "shear"


def test_pretrain_augment_probabilities():
    cfg = AugmentConfig()
    window = 8
    augment = aug.PretrainAugment(cfg, window)
    clip = random_clip(np.random.default_rng(11), 8) + 5.0     # n = window: crop-resize is the identity
    rng = np.random.default_rng(12)
    kinds = [kind_of_view(augment(clip, 8, rng), clip) for _ in range(2000)]
    counts = {k: kinds.count(k) / len(kinds) for k in ("zero", "map", "shear")}
    assert abs(counts["shear"] - 0.5) < 0.04
    assert abs(counts["zero"] - 0.25) < 0.04 and abs(counts["map"] - 0.25) < 0.04


def test_pretrain_augment_respects_config_and_is_seeded():
    clip = random_clip(np.random.default_rng(13), 8) + 5.0
    only_shear = aug.PretrainAugment(AugmentConfig(p_joint_corruption=0.0), 8)
    only_zero = aug.PretrainAugment(AugmentConfig(p_joint_corruption=1.0, p_zero_joints=1.0,
                                                  corrupt_joints=5), 8)
    rng = np.random.default_rng(14)
    assert all(kind_of_view(only_shear(clip, 8, rng), clip) == "shear" for _ in range(50))
    for _ in range(50):
        out = only_zero(clip, 8, rng)
        assert (~np.all(out == clip, axis=(0, 1, 3))).sum() == 5
    a = aug.PretrainAugment(AugmentConfig(), 8)
    np.testing.assert_array_equal(a(clip, 8, np.random.default_rng(1)), a(clip, 8, np.random.default_rng(1)))
    assert not np.array_equal(a(clip, 8, np.random.default_rng(1)), a(clip, 8, np.random.default_rng(2)))
    with pytest.raises(ValueError, match="p_joint_corruption"):
        aug.PretrainAugment(AugmentConfig(p_joint_corruption=1.5), 8)


# -- batched torch versions ----------------------------------------------------


def test_crop_resize_batch_matches_per_clip():
    rng = np.random.default_rng(15)
    x = rng.standard_normal((6, 3, 90, V, M)).astype(np.float32)
    num_frame = np.array([90, 80, 16, 5, 64, 33])
    draws = [aug.draw_crop(int(n), (0.1, 1.0), 16, rng) for n in num_frame]
    starts, lengths = (torch.tensor(d) for d in zip(*draws))
    got = aug.crop_resize_batch(torch.from_numpy(x), starts, lengths, 16).numpy()
    for i, (s, length) in enumerate(draws):
        np.testing.assert_allclose(got[i], aug.crop_resize(x[i], s, length, 16), atol=5e-6)
    with pytest.raises(ValueError, match="inside"):
        aug.crop_resize_batch(torch.from_numpy(x), torch.tensor([80] * 6), torch.tensor([20] * 6), 16)


def test_shear_and_corrupt_batch_match_per_clip():
    rng = np.random.default_rng(16)
    x = rng.standard_normal((5, 3, 7, V, M)).astype(np.float32)
    shears = np.stack([aug.random_shear_matrix(1.0, rng) for _ in range(5)])
    got = aug.shear_batch(torch.from_numpy(x), torch.from_numpy(shears)).numpy()
    for i in range(5):
        np.testing.assert_allclose(got[i], aug.apply_shear(x[i], shears[i]), atol=1e-5)

    draws = [aug.random_corruption(rng, 15, 0.5) for _ in range(5)]
    mask = np.zeros((5, V), dtype=bool)
    for i, (joints, _) in enumerate(draws):
        mask[i, joints] = True
    mats = np.stack([m for _, m in draws])
    got = aug.corrupt_batch(torch.from_numpy(x), torch.from_numpy(mask), torch.from_numpy(mats)).numpy()
    for i, (joints, mat) in enumerate(draws):
        np.testing.assert_allclose(got[i], aug.apply_corruption(x[i], joints, mat), atol=1e-5)


def test_augment_batch_properties():
    n, window = 400, 8
    x = torch.from_numpy(np.random.default_rng(17).standard_normal((n, 3, 20, V, M)).astype(np.float32) + 5)
    num_frame = torch.full((n,), window)           # crops are then the identity: frames [0, window)
    gen = torch.Generator().manual_seed(0)
    out = aug.augment_batch(x, num_frame, AugmentConfig(), window, gen)
    assert out.shape == (n, 3, window, V, M)
    again = aug.augment_batch(x, num_frame, AugmentConfig(), window, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, again, rtol=0, atol=0)
    kinds = [kind_of_view(out[i].numpy(), x[i, :, :window].numpy()) for i in range(n)]
    assert abs(kinds.count("shear") / n - 0.5) < 0.08
    assert abs(kinds.count("zero") / n - 0.25) < 0.07
    # a shear keeps the diagonal: recover S from a clip of basis vectors
    basis = torch.from_numpy(np.repeat(basis_clip()[None], 50, axis=0))
    sheared = aug.augment_batch(basis, torch.full((50,), 3), AugmentConfig(p_joint_corruption=0.0), 3,
                                torch.Generator().manual_seed(1))
    s = sheared[:, :, :, 0, 0]                                           # (N, 3, 3) columns of S
    torch.testing.assert_close(torch.diagonal(s, dim1=1, dim2=2), torch.ones(50, 3))


def test_augment_batch_crop_lengths():
    n, window, t = 300, 16, 60
    ramp = torch.from_numpy(frame_index_clip(t, t)).expand(n, 3, t, V, M).clone()
    num_frame = torch.randint(1, t + 1, (n,), generator=torch.Generator().manual_seed(2))
    for i, nf in enumerate(num_frame):
        ramp[i, :, nf:] = float("nan")
    out = aug.augment_batch(ramp, num_frame, AugmentConfig(p_joint_corruption=1.0, corrupt_joints=0),
                            window, torch.Generator().manual_seed(3))
    assert torch.isfinite(out).all()                                    # padding never read
    frames = out[:, 0, :, 0, 0]
    assert (frames[:, -1] <= (num_frame - 1).float() + 1e-4).all() and (frames >= 0).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_augment_batch_on_cuda_matches_cpu_for_same_draws():
    rng = np.random.default_rng(18)
    x = torch.from_numpy(rng.standard_normal((8, 3, 40, V, M)).astype(np.float32))
    starts, lengths = torch.tensor([0, 3, 5, 0, 10, 20, 1, 2]), torch.tensor([40, 30, 16, 16, 25, 20, 39, 17])
    cpu = aug.crop_resize_batch(x, starts, lengths, 16)
    gpu = aug.crop_resize_batch(x.cuda(), starts.cuda(), lengths.cuda(), 16)
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-5, rtol=1e-5)
    out = aug.augment_batch(x.cuda(), torch.full((8,), 40, device="cuda"), AugmentConfig(), 16,
                            torch.Generator(device="cuda").manual_seed(0))
    assert out.is_cuda and out.shape == (8, 3, 16, V, M) and torch.isfinite(out).all()
