"""Joint, motion and bone: the three skeleton modalities CMD and I²MD learn from.

All functions take a joint tensor laid out ``(..., C, T, V, M)`` -- a batch
``(N, C, T, V, M)`` or one clip ``(C, T, V, M)`` -- as a NumPy array or a torch
tensor, and return the same type, shape and dtype. They are vectorised and, for
torch, differentiable, so the model derives motion and bone from each augmented
view inside its forward pass exactly as the CMD reference does
(``moco/builder_cmd.py`` of https://github.com/maoyunyao/CMD).

* motion: ``x[t+1] - x[t]`` for ``t < T-1``; the last frame is zero.
* bone: ``x[v] - x[parent(v)]`` with the NTU pair list of :mod:`i2md_lib.skeleton`;
  the spine shoulder (joint 20, its own parent) gets a zero bone.

>>> import numpy as np
>>> x = np.zeros((3, 4, 25, 2), dtype=np.float32); x[:, 2] = 1.0
>>> to_motion(x)[0, :, 0, 0].tolist()
[0.0, 1.0, -1.0, 0.0]
"""
from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

from .. import skeleton
from ..config import MODALITIES  # noqa: F401  (the names, kept with the other config choices)

Array = TypeVar("Array", np.ndarray, torch.Tensor)

_TIME_AXIS = -3   # (..., C, T, V, M)
_JOINT_AXIS = -2
_PARENTS = torch.tensor(skeleton.PARENTS.tolist(), dtype=torch.long)   # (V,)


def _check_layout(x: np.ndarray | torch.Tensor, needs_joints: bool) -> None:
    if not isinstance(x, (np.ndarray, torch.Tensor)):
        raise TypeError(f"expected a numpy array or torch tensor, got {type(x).__name__}")
    if x.ndim < 4:
        raise ValueError(f"expected a (..., C, T, V, M) skeleton tensor, got shape {tuple(x.shape)}")
    if needs_joints and x.shape[_JOINT_AXIS] != skeleton.NUM_JOINTS:
        raise ValueError(
            f"bones need the {skeleton.NUM_JOINTS}-joint NTU skeleton on axis V, "
            f"got shape {tuple(x.shape)}"
        )


def to_motion(x: Array) -> Array:
    """Forward temporal difference of ``x`` (..., C, T, V, M); the last frame is zero."""
    _check_layout(x, needs_joints=False)
    if isinstance(x, torch.Tensor):
        diff = x[..., 1:, :, :] - x[..., :-1, :, :]          # (..., C, T-1, V, M)
        last = torch.zeros_like(x[..., :1, :, :])            # (..., C, 1, V, M)
        return torch.cat([diff, last], dim=_TIME_AXIS)
    out = np.zeros_like(x)
    out[..., :-1, :, :] = x[..., 1:, :, :] - x[..., :-1, :, :]
    return out


def to_bone(x: Array) -> Array:
    """Bone vectors ``x[..., v, :] - x[..., parent(v), :]`` of ``x`` (..., C, T, 25, M)."""
    _check_layout(x, needs_joints=True)
    if isinstance(x, torch.Tensor):
        parents = _PARENTS.to(x.device)
        return x - x.index_select(x.ndim + _JOINT_AXIS, parents)
    return x - np.take(x, skeleton.PARENTS, axis=_JOINT_AXIS)


def to_modality(x: Array, name: str) -> Array:
    """``x`` (..., C, T, V, M) as the modality ``name`` (one of :data:`MODALITIES`).

    ``"joint"`` returns ``x`` itself (no copy).
    """
    if name == "joint":
        _check_layout(x, needs_joints=False)
        return x
    if name == "motion":
        return to_motion(x)
    if name == "bone":
        return to_bone(x)
    raise ValueError(f"unknown modality {name!r}; choose one of {', '.join(MODALITIES)}")
