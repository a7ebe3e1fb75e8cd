"""Joint, motion and bone: the three skeleton modalities CMD and I²MD learn from.

All functions take a joint tensor laid out ``(..., C, T, V, M)`` -- a batch
``(N, C, T, V, M)`` or one clip ``(C, T, V, M)`` -- as a NumPy array or a torch
tensor, and return the same type, shape and dtype. They are vectorised and, for
torch, differentiable, so the model derives motion and bone from each augmented
view inside its forward pass exactly as the CMD reference does
(``moco/builder_cmd.py`` of https://github.com/maoyunyao/CMD).

* motion: ``x[t+1] - x[t]`` for ``t < T-1``; the last frame is zero.
* bone: ``x[v] - x[parent(v)]`` with the bone tree of the skeleton layout
  (:mod:`i2md_lib.skeleton`), chosen by the joint count on axis V unless given: the NTU pair
  list for 25 joints (the spine shoulder, joint 20, is its own parent and gets a zero bone),
  the Kinect v1 tree of MSR Action3D for 20 joints (the neck is the root).

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
#: ``(V,)`` parent index tensors of each layout, built once.
_PARENTS = {name: torch.tensor(layout.parents.tolist(), dtype=torch.long)
            for name, layout in skeleton.LAYOUTS.items()}


def _check_layout(x: np.ndarray | torch.Tensor, needs_joints: bool,
                  layout: skeleton.Layout | None = None) -> skeleton.Layout | None:
    """Check ``x``'s shape; with ``needs_joints``, return the layout of its joint axis."""
    if not isinstance(x, (np.ndarray, torch.Tensor)):
        raise TypeError(f"expected a numpy array or torch tensor, got {type(x).__name__}")
    if x.ndim < 4:
        raise ValueError(f"expected a (..., C, T, V, M) skeleton tensor, got shape {tuple(x.shape)}")
    if not needs_joints:
        return None
    joints = x.shape[_JOINT_AXIS]
    if layout is None:
        try:
            return skeleton.layout_for_joints(joints)
        except ValueError as e:
            raise ValueError(f"bones need a known skeleton on axis V, got shape {tuple(x.shape)}: {e}") from None
    if joints != layout.num_joints:
        raise ValueError(f"bones of layout {layout.name} need its {layout.num_joints} joints on axis V, "
                         f"got shape {tuple(x.shape)}")
    return layout


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


def to_bone(x: Array, layout: skeleton.Layout | None = None) -> Array:
    """Bone vectors ``x[..., v, :] - x[..., parent(v), :]`` of ``x`` (..., C, T, V, M).

    ``layout`` defaults to the one with ``V`` joints (:func:`skeleton.layout_for_joints`)."""
    layout = _check_layout(x, needs_joints=True, layout=layout)
    if isinstance(x, torch.Tensor):
        parents = _PARENTS[layout.name].to(x.device)
        return x - x.index_select(x.ndim + _JOINT_AXIS, parents)
    return x - np.take(x, layout.parents, axis=_JOINT_AXIS)


def to_modality(x: Array, name: str, layout: skeleton.Layout | None = None) -> Array:
    """``x`` (..., C, T, V, M) as the modality ``name`` (one of :data:`MODALITIES`).

    ``"joint"`` returns ``x`` itself (no copy); ``layout`` as in :func:`to_bone`.
    """
    if name == "joint":
        _check_layout(x, needs_joints=False)
        return x
    if name == "motion":
        return to_motion(x)
    if name == "bone":
        return to_bone(x, layout)
    raise ValueError(f"unknown modality {name!r}; choose one of {', '.join(MODALITIES)}")
