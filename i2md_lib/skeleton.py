"""The NTU RGB+D Kinect-v2 skeleton: 25 joints, their names and the bone list.

Chapter 1 of the book explains these. Indices are 0-based everywhere in the library;
the NTU documentation counts from 1.
"""
from __future__ import annotations

import numpy as np

NUM_JOINTS = 25
NUM_COORDS = 3
MAX_BODIES = 2

JOINT_NAMES: tuple[str, ...] = (
    "spine base", "spine middle", "neck", "head",
    "left shoulder", "left elbow", "left wrist", "left hand",
    "right shoulder", "right elbow", "right wrist", "right hand",
    "left hip", "left knee", "left ankle", "left foot",
    "right hip", "right knee", "right ankle", "right foot",
    "spine shoulder",
    "left hand tip", "left thumb", "right hand tip", "right thumb",
)

# (child, parent) pairs, 1-based, exactly as the CMD reference lists them. The pair
# (21, 21) makes the bone of the spine shoulder (the root of this tree) zero.
NTU_BONE_PAIRS_1BASED: tuple[tuple[int, int], ...] = (
    (1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21),
    (10, 9), (11, 10), (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1),
    (18, 17), (19, 18), (20, 19), (21, 21), (22, 23), (23, 8), (24, 25), (25, 12),
)

#: ``PARENTS[v]`` is the 0-based parent of joint ``v`` (the root is its own parent).
PARENTS: np.ndarray = np.empty(NUM_JOINTS, dtype=np.int64)
for _child, _parent in NTU_BONE_PAIRS_1BASED:
    PARENTS[_child - 1] = _parent - 1
PARENTS.setflags(write=False)

ROOT_JOINT = 20  # spine shoulder
#: The 24 real bones as 0-based (child, parent) pairs, the root's self-pair left out.
BONES: tuple[tuple[int, int], ...] = tuple(
    (c - 1, p - 1) for c, p in NTU_BONE_PAIRS_1BASED if c != p
)

# Joints used by the standard normalisation (0-based).
CENTER_JOINT = 1            # spine middle
Z_AXIS_JOINTS = (0, 1)      # spine base -> spine middle is rotated onto +z
X_AXIS_JOINTS = (8, 4)      # joint 8 minus joint 4 (left -> right shoulder) is rotated onto +x

# Left/right mirror map (useful for flips in exercises).
MIRROR: tuple[int, ...] = (
    0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 16, 17, 18, 19, 12, 13, 14, 15, 20, 23, 24, 21, 22,
)
