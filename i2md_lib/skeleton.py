"""Skeleton layouts: which joints a dataset records, how they connect, how to normalise them.

A :class:`Layout` is a property of the dataset (``DataConfig.layout``). Two are known:

* :data:`NTU25` -- the Kinect v2 body of NTU RGB+D 60/120, PKU-MMD and the synthetic data:
  25 joints, up to 2 bodies. Its bone list is exactly the CMD reference's.
* :data:`KINECT_V1_20` -- the Kinect v1 body as MSR Action3D stores it (Li, Zhang and Liu, 2010):
  20 joints in the dataset's own order (not the Kinect SDK's), one body. Its tree is rooted at
  the neck ("shoulder centre", the joint the NTU tree's root "spine shoulder" corresponds to);
  the normalisation uses the same body parts as NTU's: centre on the spine, the spine
  (hip centre -> spine) onto +z, the shoulders (left -> right) onto +x.

Everything that reads joints, bones or frame sizes takes them from a layout: modalities,
augmentations, pre-normalisation, the encoder's input size (``frame_values``), checkpoints and
plots. Chapter 1 of the book explains the NTU body. Indices are 0-based everywhere in the
library; the NTU documentation counts from 1.

The module-level names (``NUM_JOINTS``, ``JOINT_NAMES``, ``PARENTS``, ``BONES``, ...) are those of
:data:`NTU25`, the default layout.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NUM_COORDS = 3


@dataclass(frozen=True)
class Layout:
    """One skeleton: joint names, the bone tree, normalisation joints, mirror map, body count.

    ``bone_pairs`` are 0-based ``(child, parent)`` pairs, one per joint; the root is its own
    parent (its bone is zero). ``center_joint``, ``z_bone`` and ``x_bone`` drive
    :func:`i2md_lib.data.preprocess.pre_normalize`: centre on ``center_joint`` of body 0 per
    frame, rotate ``p[z_bone[1]] - p[z_bone[0]]`` onto +z and ``p[x_bone[1]] - p[x_bone[0]]``
    onto +x. ``mirror[v]`` is the joint that ``v`` becomes when left and right swap.
    """

    name: str
    joint_names: tuple[str, ...]
    bone_pairs: tuple[tuple[int, int], ...]
    center_joint: int
    z_bone: tuple[int, int]
    x_bone: tuple[int, int]
    mirror: tuple[int, ...]
    num_bodies: int

    def __post_init__(self) -> None:
        v = len(self.joint_names)
        children = sorted(c for c, _ in self.bone_pairs)
        if children != list(range(v)):
            raise ValueError(f"layout {self.name}: bone_pairs must name each of the {v} joints once as a child")
        roots = [c for c, p in self.bone_pairs if c == p]
        if len(roots) != 1:
            raise ValueError(f"layout {self.name}: the tree needs exactly one root, got {roots}")
        for joint in (self.center_joint, *self.z_bone, *self.x_bone, *self.mirror):
            if not 0 <= joint < v:
                raise ValueError(f"layout {self.name}: joint index {joint} outside 0..{v - 1}")
        if sorted(self.mirror) != list(range(v)) or any(self.mirror[self.mirror[j]] != j for j in range(v)):
            raise ValueError(f"layout {self.name}: mirror must be a permutation that is its own inverse")
        parents = dict(self.bone_pairs)
        for joint in range(v):          # every joint reaches the root
            seen = set()
            while parents[joint] != joint:
                if joint in seen:
                    raise ValueError(f"layout {self.name}: the bone pairs contain a cycle")
                seen.add(joint)
                joint = parents[joint]
        if self.num_bodies < 1:
            raise ValueError(f"layout {self.name}: num_bodies must be >= 1")

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    @property
    def root(self) -> int:
        """The joint that is its own parent (its bone is zero)."""
        return next(c for c, p in self.bone_pairs if c == p)

    @property
    def parents(self) -> np.ndarray:
        """``parents[v]``: the 0-based parent of joint ``v`` (the root is its own parent), read-only."""
        out = np.empty(self.num_joints, dtype=np.int64)
        for child, parent in self.bone_pairs:
            out[child] = parent
        out.setflags(write=False)
        return out

    @property
    def bones(self) -> tuple[tuple[int, int], ...]:
        """The real bones as 0-based ``(child, parent)`` pairs, the root's self-pair left out."""
        return tuple((c, p) for c, p in self.bone_pairs if c != p)

    @property
    def frame_values(self) -> int:
        """Values per frame the encoders read: ``V * C * M``."""
        return self.num_joints * NUM_COORDS * self.num_bodies

    def describe(self) -> str:
        return f"{self.name} ({self.num_joints} joints x {NUM_COORDS} coordinates x {self.num_bodies} " \
               f"bod{'y' if self.num_bodies == 1 else 'ies'} = {self.frame_values} values per frame)"


# -- NTU RGB+D / PKU-MMD / synthetic: Kinect v2, 25 joints ------------------------------------
# (child, parent) pairs, 1-based, exactly as the CMD reference lists them. The pair
# (21, 21) makes the bone of the spine shoulder (the root of this tree) zero.
NTU_BONE_PAIRS_1BASED: tuple[tuple[int, int], ...] = (
    (1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21),
    (10, 9), (11, 10), (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1),
    (18, 17), (19, 18), (20, 19), (21, 21), (22, 23), (23, 8), (24, 25), (25, 12),
)

NTU25 = Layout(
    name="ntu25",
    joint_names=(
        "spine base", "spine middle", "neck", "head",
        "left shoulder", "left elbow", "left wrist", "left hand",
        "right shoulder", "right elbow", "right wrist", "right hand",
        "left hip", "left knee", "left ankle", "left foot",
        "right hip", "right knee", "right ankle", "right foot",
        "spine shoulder",
        "left hand tip", "left thumb", "right hand tip", "right thumb",
    ),
    bone_pairs=tuple((c - 1, p - 1) for c, p in NTU_BONE_PAIRS_1BASED),
    center_joint=1,                 # spine middle
    z_bone=(0, 1),                  # spine base -> spine middle onto +z
    x_bone=(4, 8),                  # left shoulder -> right shoulder onto +x (the reference's joint8 - joint4)
    mirror=(0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 16, 17, 18, 19, 12, 13, 14, 15, 20, 23, 24, 21, 22),
    num_bodies=2,
)

# -- MSR Action3D: Kinect v1, 20 joints in the dataset's order ---------------------------------
# The order of the files (checked on the recordings: the head is the highest joint, the feet the
# lowest, left and right alternate): shoulders, neck, spine, hips, hip centre, then elbows, wrists,
# hands, knees, ankles and feet in left/right pairs, and the head last.
KINECT_V1_20 = Layout(
    name="kinect_v1",
    joint_names=(
        "left shoulder", "right shoulder", "neck", "spine",
        "left hip", "right hip", "hip centre",
        "left elbow", "right elbow", "left wrist", "right wrist", "left hand", "right hand",
        "left knee", "right knee", "left ankle", "right ankle", "left foot", "right foot",
        "head",
    ),
    bone_pairs=(
        (0, 2), (1, 2), (2, 2), (3, 2), (4, 6), (5, 6), (6, 3),
        (7, 0), (8, 1), (9, 7), (10, 8), (11, 9), (12, 10),
        (13, 4), (14, 5), (15, 13), (16, 14), (17, 15), (18, 16),
        (19, 2),
    ),
    center_joint=3,                 # spine (NTU: spine middle)
    z_bone=(6, 3),                  # hip centre -> spine onto +z (NTU: spine base -> spine middle)
    x_bone=(0, 1),                  # left shoulder -> right shoulder onto +x
    mirror=(1, 0, 2, 3, 5, 4, 6, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15, 18, 17, 19),
    num_bodies=1,
)

#: Every layout by name.
LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in (NTU25, KINECT_V1_20)}


def layout_for_joints(num_joints: int) -> Layout:
    """The layout with ``num_joints`` joints (25: NTU, 20: Kinect v1); ``ValueError`` otherwise."""
    for layout in LAYOUTS.values():
        if layout.num_joints == num_joints:
            return layout
    known = ", ".join(f"{l.num_joints} ({l.name})" for l in LAYOUTS.values())
    raise ValueError(f"no skeleton layout has {num_joints} joints; known: {known}")


# -- the default layout's names (NTU), as before layouts existed -------------------------------
NUM_JOINTS = NTU25.num_joints
MAX_BODIES = NTU25.num_bodies
JOINT_NAMES: tuple[str, ...] = NTU25.joint_names
#: ``PARENTS[v]`` is the 0-based parent of joint ``v`` (the root is its own parent).
PARENTS: np.ndarray = NTU25.parents
ROOT_JOINT = NTU25.root          # spine shoulder
#: The 24 real bones as 0-based (child, parent) pairs, the root's self-pair left out.
BONES: tuple[tuple[int, int], ...] = NTU25.bones
# Joints used by the standard normalisation (0-based).
CENTER_JOINT = NTU25.center_joint
Z_AXIS_JOINTS = NTU25.z_bone     # spine base -> spine middle is rotated onto +z
X_AXIS_JOINTS = (8, 4)           # joint 8 minus joint 4 (left -> right shoulder) is rotated onto +x
# Left/right mirror map (useful for flips in exercises).
MIRROR: tuple[int, ...] = NTU25.mirror
