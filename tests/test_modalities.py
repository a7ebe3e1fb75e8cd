"""Joint/motion/bone against straightforward loop implementations."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from i2md_lib import skeleton
from i2md_lib.data.modalities import MODALITIES, to_bone, to_modality, to_motion


def loop_motion(x: np.ndarray) -> np.ndarray:
    """x (N, C, T, V, M): the reference's frame-by-frame forward difference."""
    out = np.zeros_like(x)
    for t in range(x.shape[2] - 1):
        out[:, :, t] = x[:, :, t + 1] - x[:, :, t]
    return out


def loop_bone(x: np.ndarray) -> np.ndarray:
    """x (N, C, T, V, M): the reference's loop over the 1-based NTU pairs."""
    out = np.zeros_like(x)
    for v1, v2 in skeleton.NTU_BONE_PAIRS_1BASED:
        out[:, :, :, v1 - 1] = x[:, :, :, v1 - 1] - x[:, :, :, v2 - 1]
    return out


@pytest.fixture
def batch() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((4, 3, 7, 25, 2)).astype(np.float32)


def test_motion_matches_loop_numpy_and_torch(batch):
    expected = loop_motion(batch)
    np.testing.assert_array_equal(to_motion(batch), expected)
    got = to_motion(torch.from_numpy(batch))
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
    np.testing.assert_array_equal(got.numpy(), expected)
    assert not expected[:, :, -1].any() and expected[:, :, :-1].any()


def test_bone_matches_loop_numpy_and_torch(batch):
    expected = loop_bone(batch)
    np.testing.assert_array_equal(to_bone(batch), expected)
    np.testing.assert_array_equal(to_bone(torch.from_numpy(batch)).numpy(), expected)
    root = skeleton.ROOT_JOINT
    assert not expected[:, :, :, root].any()
    assert np.count_nonzero(np.abs(expected).sum(axis=(0, 1, 2, 4)) == 0) == 1  # only the root is zero


def test_single_clip_layout(batch):
    clip = batch[1]                                     # (C, T, V, M)
    np.testing.assert_array_equal(to_motion(clip), loop_motion(batch)[1])
    np.testing.assert_array_equal(to_bone(clip), loop_bone(batch)[1])
    assert to_motion(clip).shape == clip.shape


def test_to_modality_dispatch(batch):
    x = torch.from_numpy(batch)
    assert to_modality(x, "joint") is x
    np.testing.assert_array_equal(to_modality(x, "motion").numpy(), loop_motion(batch))
    np.testing.assert_array_equal(to_modality(batch, "bone"), loop_bone(batch))
    assert MODALITIES == ("joint", "motion", "bone")
    with pytest.raises(ValueError, match="unknown modality 'velocity'"):
        to_modality(x, "velocity")


def test_torch_is_differentiable():
    x = torch.randn(2, 3, 4, 25, 1, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: to_bone(to_motion(t)), (x,))
    # d(sum of motion)/dx telescopes: -1 at t=0, +1 at t=T-1, 0 in between
    to_motion(x).sum().backward()
    grad_t = x.grad.sum(dim=(0, 1, 3, 4)) / (2 * 3 * 25)
    np.testing.assert_allclose(grad_t.numpy(), [-1.0, 0.0, 0.0, 1.0])


def test_bad_shapes():
    with pytest.raises(ValueError, match="no skeleton layout has 17 joints"):
        to_bone(np.zeros((3, 4, 17, 2)))
    with pytest.raises(ValueError, match="kinect_v1 need its 20 joints"):
        to_bone(np.zeros((3, 4, 25, 2)), skeleton.KINECT_V1_20)
    with pytest.raises(ValueError, match=r"\(\.\.\., C, T, V, M\)"):
        to_motion(np.zeros((3, 4, 25)))
    with pytest.raises(TypeError):
        to_motion([[1.0]])


@pytest.mark.parametrize("layout", list(skeleton.LAYOUTS.values()), ids=lambda l: l.name)
def test_bone_of_each_layout(layout):
    """Bones follow the layout of the joint axis: child minus parent, zero at the root, in
    NumPy and torch alike, and the 20-joint layout is picked from the shape."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 5, layout.num_joints, layout.num_bodies)).astype(np.float32)
    bone = to_bone(x)
    for child, parent in layout.bones:
        np.testing.assert_array_equal(bone[:, :, child], x[:, :, child] - x[:, :, parent])
    assert not bone[:, :, layout.root].any()
    np.testing.assert_array_equal(to_bone(torch.from_numpy(x)).numpy(), bone)
    np.testing.assert_array_equal(to_modality(x, "bone", layout), bone)
