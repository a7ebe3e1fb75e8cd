"""The CMD augmentations, seeded by an explicit random generator.

Each view of a pretraining clip gets (as in the CMD reference code, https://github.com/maoyunyao/CMD,
``feeder/feeder_pretraining_intra.py`` and ``feeder/augmentations.py``):

1. a **temporal crop-resize**: a random crop of ``floor(n * U(0.1, 1))`` frames, clamped
   to ``[window, n]``, resized to ``window`` frames by linear interpolation along time
   (``F.interpolate(..., mode="bilinear", align_corners=False)`` in the reference);
2. **exactly one spatial augmentation**: joint corruption with probability 0.5, else shear.

Per-clip functions take one clip ``(C, T, V, M)`` as a NumPy array (it may be a
memory map: only the cropped frames are read) and return a new float32 array.
Every random draw comes from the ``rng`` argument (a :class:`numpy.random.Generator`);
nothing touches global random state. Each augmentation is split into a *draw*
(random parameters) and an *apply* (deterministic), so the batched torch versions
at the bottom -- which run on ``(N, C, T, V, M)`` tensors on any device -- can be
checked against the per-clip ones for the same draws.

Differences from the reference, all deliberate:

* the reference hard-codes the minimum crop length 64 (= its window); here it is
  ``min_length``, default ``window``, so small profiles keep the same rule;
* the reference uses the global NumPy/Python generators; here ``rng`` is explicit.
"""
from __future__ import annotations

from typing import Sequence

import functools

import numpy as np
import torch

from .. import skeleton
from ..config import AugmentConfig

# ----------------------------------------------------------------------------
# Temporal crop-resize
# ----------------------------------------------------------------------------


def num_valid_frames(clip: np.ndarray, num_frame: int) -> int:
    """Frames of ``clip`` (C, T, V, M) to use: ``min(num_frame, T)``, at least 1."""
    if clip.ndim != 4:
        raise ValueError(f"expected one clip (C, T, V, M), got shape {tuple(clip.shape)}")
    n = min(int(num_frame), clip.shape[1])
    if n < 1:
        raise ValueError(f"clip has no valid frames (num_frame={num_frame}, T={clip.shape[1]})")
    return n


def crop_length(num_frames: int, scale: float, min_length: int) -> int:
    """``clip(floor(num_frames * scale), min_length, num_frames)``, the reference rule."""
    return int(min(max(int(np.floor(num_frames * scale)), min_length), num_frames))


def draw_crop(
    num_frames: int, ratio_range: Sequence[float], min_length: int, rng: np.random.Generator
) -> tuple[int, int]:
    """Random ``(start, length)`` of a crop of a ``num_frames``-frame clip."""
    low, high = _check_ratio_range(ratio_range)
    scale = rng.uniform(low, high)
    length = crop_length(num_frames, scale, min_length)
    start = int(rng.integers(0, num_frames - length + 1))
    return start, length


@functools.lru_cache(maxsize=4096)
def linear_resize_weights(length: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source frames ``i0, i1`` (size,) and weight ``w1`` (size,) of a linear resize.

    Output frame ``t`` is ``(1 - w1[t]) * x[i0[t]] + w1[t] * x[i1[t]]``: the
    ``align_corners=False`` rule of ``F.interpolate``, computed in float32 as torch does.
    They depend only on the two lengths, so they are computed once per pair (cached; the
    arrays are read-only) instead of twice per training clip.
    """
    if length < 1 or size < 1:
        raise ValueError(f"cannot resize {length} frames to {size}")
    scale = np.float32(length) / np.float32(size)
    src = scale * (np.arange(size, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5)
    src = np.maximum(src, np.float32(0.0))
    i0 = np.minimum(np.floor(src).astype(np.int64), length - 1)
    i1 = np.minimum(i0 + 1, length - 1)
    w1 = np.clip(src - i0.astype(np.float32), 0.0, 1.0).astype(np.float32)
    for array in (i0, i1, w1):
        array.flags.writeable = False
    return i0, i1, w1


def resize_time(segment: np.ndarray, size: int) -> np.ndarray:
    """Resize ``segment`` (C, L, V, M) to (C, size, V, M) by linear interpolation in time."""
    i0, i1, w1 = linear_resize_weights(segment.shape[1], size)
    seg = np.asarray(segment, dtype=np.float32)
    w1 = w1[None, :, None, None]
    return ((np.float32(1.0) - w1) * seg[:, i0] + w1 * seg[:, i1]).astype(np.float32)


def crop_resize(clip: np.ndarray, start: int, length: int, window: int) -> np.ndarray:
    """Frames ``[start, start+length)`` of ``clip`` (C, T, V, M) resized to (C, window, V, M)."""
    if start < 0 or length < 1 or start + length > clip.shape[1]:
        raise ValueError(f"crop [{start}, {start + length}) is outside a clip of {clip.shape[1]} frames")
    return resize_time(clip[:, start:start + length], window)


def temporal_crop_resize(
    clip: np.ndarray,
    num_frame: int,
    ratio_range: Sequence[float] = (0.1, 1.0),
    window: int = 64,
    *,
    rng: np.random.Generator,
    min_length: int | None = None,
) -> np.ndarray:
    """Random crop of the first ``min(num_frame, T)`` frames, resized to ``window``.

    Args:
        clip: ``(C, T, V, M)`` joints; frames after ``num_frame`` are padding.
        num_frame: valid frames of the clip.
        ratio_range: crop length ratio ``~ U(low, high)``.
        window: output frames.
        rng: the random generator.
        min_length: shortest crop before resizing (default ``window``, as the reference).

    Returns:
        ``(C, window, V, M)`` float32.
    """
    n = num_valid_frames(clip, num_frame)
    start, length = draw_crop(n, ratio_range, window if min_length is None else min_length, rng)
    return crop_resize(clip, start, length, window)


def random_crop_resize(
    clip: np.ndarray,
    num_frame: int,
    ratio_range: Sequence[float] = (0.5, 1.0),
    window: int = 64,
    *,
    rng: np.random.Generator,
    min_length: int | None = None,
) -> np.ndarray:
    """The linear-evaluation training crop: :func:`temporal_crop_resize` with ratio U(0.5, 1)."""
    return temporal_crop_resize(clip, num_frame, ratio_range, window, rng=rng, min_length=min_length)


def center_crop_resize(
    clip: np.ndarray, num_frame: int, ratio: float = 0.95, window: int = 64
) -> np.ndarray:
    """The evaluation crop: drop ``int((1 - ratio) * n / 2)`` frames at each end, resize.

    ``n = min(num_frame, T)``. Returns ``(C, window, V, M)`` float32. Deterministic.
    """
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"centre crop ratio must be in (0, 1], got {ratio}")
    n = num_valid_frames(clip, num_frame)
    start = int((1.0 - ratio) * n / 2)
    return crop_resize(clip, start, n - 2 * start, window)


# ----------------------------------------------------------------------------
# Spatial augmentations: both are "x_row @ matrix" over the C axis
# ----------------------------------------------------------------------------


def random_shear_matrix(amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """``S = [[1, a, b], [c, 1, d], [e, f, 1]]`` with off-diagonals ``~ U(-amp, amp)``; (3, 3)."""
    shear_mat = np.eye(3, dtype=np.float64)
    shear_mat[~np.eye(3, dtype=bool)] = rng.uniform(-amplitude, amplitude, size=6)
    return shear_mat.astype(np.float32)


def apply_shear(clip: np.ndarray, shear_mat: np.ndarray) -> np.ndarray:
    """``x_row @ S^T`` for every joint row ``x_row`` (3,) of ``clip`` (C, T, V, M)."""
    return np.einsum("dc,ctvm->dtvm", shear_mat.astype(np.float32),
                     np.asarray(clip, dtype=np.float32)).astype(np.float32)


def shear(clip: np.ndarray, amplitude: float = 1.0, *, rng: np.random.Generator) -> np.ndarray:
    """Random shear of ``clip`` (C, T, V, M); returns float32 of the same shape."""
    return apply_shear(clip, random_shear_matrix(amplitude, rng))


def random_corruption(
    rng: np.random.Generator,
    num_joints: int = 15,
    p_zero: float = 0.5,
    total_joints: int = skeleton.NUM_JOINTS,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw a joint corruption: ``(joints (num_joints,), matrix (3, 3))``.

    With probability ``p_zero`` the matrix is zero (the joints are zeroed), else its
    entries are ``U(-1, 1)``. The joints are distinct, drawn from the ``total_joints`` of the
    layout (NTU's 25 by default).
    """
    if not 0 <= num_joints <= total_joints:
        raise ValueError(f"num_joints must be in [0, {total_joints}], got {num_joints}")
    zero = rng.random() < p_zero
    joints = rng.choice(total_joints, size=num_joints, replace=False)
    matrix = np.zeros((3, 3)) if zero else rng.uniform(-1.0, 1.0, size=(3, 3))
    return np.sort(joints), matrix.astype(np.float32)


def apply_corruption(clip: np.ndarray, joints: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Replace the rows of ``joints`` in ``clip`` (C, T, V, M) by ``x_row @ matrix``."""
    out = np.array(clip, dtype=np.float32)                     # a copy
    picked = out[:, :, joints, :]                              # (C, T, k, M)
    out[:, :, joints, :] = np.einsum("ctvm,cd->dtvm", picked, matrix.astype(np.float32))
    return out


def joint_corruption(
    clip: np.ndarray,
    num_joints: int = 15,
    p_zero: float = 0.5,
    *,
    rng: np.random.Generator,
) -> np.ndarray:
    """Pick ``num_joints`` joints (same for all frames and bodies); zero them with
    probability ``p_zero``, else map their xyz by a random 3x3 matrix. (C, T, V, M) float32."""
    joints, matrix = random_corruption(rng, num_joints, p_zero, total_joints=clip.shape[2])
    return apply_corruption(clip, joints, matrix)


# ----------------------------------------------------------------------------
# One pretraining view
# ----------------------------------------------------------------------------


class PretrainAugment:
    """One CMD pretraining view: crop-resize, then joint corruption *or* shear.

    ``PretrainAugment(cfg, window)(clip (C, T, V, M), num_frame, rng) -> (C, window, V, M)``.
    """

    def __init__(self, aug_cfg: AugmentConfig, window: int, min_length: int | None = None):
        _check_ratio_range((aug_cfg.crop_min_ratio, aug_cfg.crop_max_ratio))
        for name in ("p_joint_corruption", "p_zero_joints"):
            p = getattr(aug_cfg, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"AugmentConfig.{name} must be a probability, got {p}")
        if window < 1:
            raise ValueError(f"window must be positive, got {window}")
        self.cfg = aug_cfg
        self.window = window
        self.min_length = window if min_length is None else min_length

    def __call__(self, clip: np.ndarray, num_frame: int, rng: np.random.Generator) -> np.ndarray:
        cfg = self.cfg
        view = temporal_crop_resize(
            clip, num_frame, (cfg.crop_min_ratio, cfg.crop_max_ratio), self.window,
            rng=rng, min_length=self.min_length,
        )
        if rng.random() < cfg.p_joint_corruption:
            return joint_corruption(view, cfg.corrupt_joints, cfg.p_zero_joints, rng=rng)
        return shear(view, cfg.shear_amplitude, rng=rng)

    def __repr__(self) -> str:
        return f"PretrainAugment({self.cfg}, window={self.window}, min_length={self.min_length})"


# ----------------------------------------------------------------------------
# Batched torch versions, (N, C, T, V, M) on any device
# ----------------------------------------------------------------------------


def crop_resize_batch(
    x: torch.Tensor, starts: torch.Tensor, lengths: torch.Tensor, window: int
) -> torch.Tensor:
    """Crop frames ``[starts[n], starts[n]+lengths[n])`` of each clip and resize to ``window``.

    Args:
        x: ``(N, C, T, V, M)``.
        starts, lengths: ``(N,)`` integer tensors.

    Returns:
        ``(N, C, window, V, M)``, the same numbers as :func:`crop_resize` per clip.
    """
    n, c, t, v, m = x.shape
    starts = starts.to(device=x.device, dtype=torch.long)
    lengths = lengths.to(device=x.device, dtype=torch.long)
    if (lengths < 1).any() or (starts < 0).any() or (starts + lengths > t).any():
        raise ValueError(f"crops must lie inside the {t} stored frames")
    scale = lengths.float() / float(window)                                    # (N,)
    dst = torch.arange(window, device=x.device, dtype=torch.float32) + 0.5
    src = (scale[:, None] * dst[None, :] - 0.5).clamp_min(0.0)                 # (N, window)
    last = (lengths - 1)[:, None]
    i0 = torch.minimum(src.floor().long(), last)
    i1 = torch.minimum(i0 + 1, last)
    w1 = (src - i0.float()).clamp(0.0, 1.0).to(x.dtype)
    frames0 = (starts[:, None] + i0)[:, None, :, None, None].expand(n, c, window, v, m)
    frames1 = (starts[:, None] + i1)[:, None, :, None, None].expand(n, c, window, v, m)
    w1 = w1[:, None, :, None, None]
    return (1.0 - w1) * x.gather(2, frames0) + w1 * x.gather(2, frames1)


def shear_batch(x: torch.Tensor, shear_mats: torch.Tensor) -> torch.Tensor:
    """``x_row @ S[n]^T`` for clip ``n``: x (N, C, T, V, M), shear_mats (N, 3, 3)."""
    return torch.einsum("ndc,nctvm->ndtvm", shear_mats.to(x), x)


def corrupt_batch(x: torch.Tensor, joint_mask: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """Replace the masked joints of each clip by ``x_row @ matrices[n]``.

    Args:
        x: ``(N, C, T, V, M)``.
        joint_mask: ``(N, V)`` bool, the corrupted joints of each clip.
        matrices: ``(N, 3, 3)``; a zero matrix zeroes the joints.
    """
    mapped = torch.einsum("nctvm,ncd->ndtvm", x, matrices.to(x))
    return torch.where(joint_mask.to(x.device)[:, None, None, :, None], mapped, x)


def augment_batch(
    x: torch.Tensor,
    num_frame: torch.Tensor,
    aug_cfg: AugmentConfig,
    window: int,
    generator: torch.Generator | None = None,
    min_length: int | None = None,
) -> torch.Tensor:
    """:class:`PretrainAugment` for a whole batch on ``x``'s device (same distribution).

    Args:
        x: ``(N, C, T, V, M)`` joints.
        num_frame: ``(N,)`` valid frames per clip.
        generator: a torch generator on ``x.device`` (None: torch's default one).

    Returns:
        ``(N, C, window, V, M)``: one independently augmented view per clip.
    """
    _check_ratio_range((aug_cfg.crop_min_ratio, aug_cfg.crop_max_ratio))
    n, dev = x.shape[0], x.device

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator, device=dev)

    # temporal crop
    frames = num_frame.to(dev).long().clamp(1, x.shape[2])
    low, high = aug_cfg.crop_min_ratio, aug_cfg.crop_max_ratio
    scale = low + (high - low) * rand(n).double()
    lengths = (frames.double() * scale).floor().long()
    lengths = torch.minimum(lengths.clamp_min(window if min_length is None else min_length), frames)
    starts = (rand(n).double() * (frames - lengths + 1)).floor().long()
    starts = torch.minimum(starts, frames - lengths)
    view = crop_resize_batch(x, starts, lengths, window)

    # one spatial augmentation per clip, both written as "x_row @ matrix"
    corrupt = rand(n) < aug_cfg.p_joint_corruption                                 # (N,)
    zero = rand(n) < aug_cfg.p_zero_joints
    ranks = rand(n, x.shape[3]).argsort(dim=1).argsort(dim=1)                       # (N, V)
    picked = ranks < aug_cfg.corrupt_joints                                         # (N, V)
    corrupt_mats = torch.where(zero[:, None, None], 0.0, 2.0 * rand(n, 3, 3) - 1.0)
    amp = aug_cfg.shear_amplitude
    shear_t = torch.eye(3, device=dev).repeat(n, 1, 1)
    off_diag = ~torch.eye(3, dtype=torch.bool, device=dev)
    shear_t[:, off_diag] = amp * (2.0 * rand(n, 6) - 1.0)
    matrices = torch.where(corrupt[:, None, None], corrupt_mats, shear_t.transpose(1, 2))
    joint_mask = picked | ~corrupt[:, None]
    return corrupt_batch(view, joint_mask, matrices)


def _check_ratio_range(ratio_range: Sequence[float]) -> tuple[float, float]:
    if len(ratio_range) != 2:
        raise ValueError(f"ratio range must be (low, high), got {ratio_range!r}")
    low, high = float(ratio_range[0]), float(ratio_range[1])
    if not 0.0 < low <= high:
        raise ValueError(f"ratio range must satisfy 0 < low <= high, got ({low}, {high})")
    return low, high
