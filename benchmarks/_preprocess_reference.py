"""Straightforward loop implementations of the NTU preprocessing, for tests and benchmarks.

They follow the structure of the CMD reference (``data_gen/ntu_gendata.py`` and
``data_gen/preprocess.py``): a line-by-line parser that builds a dict per joint, and
per-sample / per-person / per-frame / per-joint loops for the normalisation. They are
written independently of :mod:`i2md_lib.data.preprocess` (own rotation formula, explicit
loops) so that agreement between the two is a real check. Conventions match the library:
"empty" means all-zero, ties in body activity rank the later body first.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

BODY_KEYS = ("bodyID", "clippedEdges", "handLeftConfidence", "handLeftState", "handRightConfidence",
             "handRightState", "isRestricted", "leanX", "leanY", "trackingState")
JOINT_KEYS = ("x", "y", "z", "depthX", "depthY", "colorX", "colorY",
              "orientationW", "orientationX", "orientationY", "orientationZ", "trackingState")


# ----------------------------------------------------------------------------- parsing
def read_skeleton_dicts(path: str | Path) -> dict:
    """Parse a ``.skeleton`` file line by line into nested dicts (no validation)."""
    with open(path) as f:
        sequence = {"numFrame": int(f.readline()), "frameInfo": []}
        for _ in range(sequence["numFrame"]):
            frame = {"numBody": int(f.readline()), "bodyInfo": []}
            for _ in range(frame["numBody"]):
                values = f.readline().split()
                body = {"bodyID": int(values[0])}
                body.update({k: float(v) for k, v in zip(BODY_KEYS[1:], values[1:])})
                body["numJoint"] = int(f.readline())
                body["jointInfo"] = [
                    {k: float(v) for k, v in zip(JOINT_KEYS, f.readline().split())}
                    for _ in range(body["numJoint"])
                ]
                frame["bodyInfo"].append(body)
            sequence["frameInfo"].append(frame)
    return sequence


def read_xyz_loop(path: str | Path, max_body: int = 4, num_joint: int = 25) -> np.ndarray:
    """``(max_body, T, V, 3)`` xyz, bodies by position in the frame, filled joint by joint."""
    sequence = read_skeleton_dicts(path)
    data = np.zeros((max_body, sequence["numFrame"], num_joint, 3))
    for t, frame in enumerate(sequence["frameInfo"]):
        for m, body in enumerate(frame["bodyInfo"]):
            for j, joint in enumerate(body["jointInfo"]):
                if m < max_body and j < num_joint:
                    data[m, t, j, :] = [joint["x"], joint["y"], joint["z"]]
    return data


def body_energy_loop(body: np.ndarray) -> float:
    """Activity of one body ``(T, V, 3)``: sum of per-axis std over its non-empty frames."""
    frames = [body[t] for t in range(len(body)) if body[t].any()]
    if not frames:
        return 0.0
    stacked = np.stack(frames)
    return float(stacked[:, :, 0].std() + stacked[:, :, 1].std() + stacked[:, :, 2].std())


def select_bodies_loop(data: np.ndarray, num_bodies: int = 2) -> np.ndarray:
    """``(M, T, V, 3) -> (3, T, V, num_bodies)``: the most active bodies, later body first on ties."""
    if len(data) < num_bodies:
        pad = np.zeros((num_bodies - len(data),) + data.shape[1:])
        data = np.concatenate([data, pad])
    energy = np.array([body_energy_loop(body) for body in data])
    ranked = sorted(range(len(data)), key=lambda m: (energy[m], m), reverse=True)
    return data[ranked[:num_bodies]].transpose(3, 1, 2, 0)


# ----------------------------------------------------------------------------- rotation helpers
def angle_between_loop(v1: np.ndarray, v2: np.ndarray) -> float:
    if np.abs(v1).sum() < 1e-6 or np.abs(v2).sum() < 1e-6:
        return 0.0
    u1, u2 = v1 / np.linalg.norm(v1), v2 / np.linalg.norm(v2)
    return math.acos(min(1.0, max(-1.0, float(np.dot(u1, u2)))))


def rotation_matrix_loop(axis: np.ndarray, angle: float) -> np.ndarray:
    """Counter-clockwise rotation by ``angle`` about ``axis``, from the unit quaternion
    ``(cos(a/2), sin(a/2) * k)``; identity for a tiny axis or angle."""
    if np.abs(axis).sum() < 1e-6 or abs(angle) < 1e-6:
        return np.eye(3)
    kx, ky, kz = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    w, s = math.cos(angle / 2), math.sin(angle / 2)
    x, y, z = kx * s, ky * s, kz * s
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


# ----------------------------------------------------------------------------- normalisation
def pre_normalize_loop(data: np.ndarray, z_bone: tuple[int, int] = (0, 1),
                       x_bone: tuple[int, int] = (4, 8), center_joint: int = 1) -> np.ndarray:
    """The 2s-AGCN/CMD normalisation of ``(N, C, T, V, M)`` with explicit loops (float64 inside)."""
    s = np.array(data, dtype=np.float64).transpose(0, 4, 2, 3, 1).copy()  # N, M, T, V, C
    n_samples, n_persons, n_frames, n_joints, _ = s.shape

    for n in range(n_samples):  # 1. pad null frames
        for m in range(n_persons):
            person = s[n, m]
            if not person.any():
                continue
            if not person[0].any():
                kept = [person[t].copy() for t in range(n_frames) if person[t].any()]
                person[:] = 0
                for t, frame in enumerate(kept):
                    person[t] = frame
            for t in range(n_frames):
                if not person[t].any() and not person[t:].any():
                    for k in range(t, n_frames):
                        person[k] = person[k % t]
                    break

    for n in range(n_samples):  # 2. centre on joint `center_joint` of person 0, per frame
        if not s[n].any():
            continue
        center = s[n, 0, :, center_joint, :].copy()
        for m in range(n_persons):
            if not s[n, m].any():
                continue
            for t in range(n_frames):
                for v in range(n_joints):
                    if s[n, m, t, v].any():
                        s[n, m, t, v] = s[n, m, t, v] - center[t]

    for bone, target in ((z_bone, np.array([0.0, 0.0, 1.0])), (x_bone, np.array([1.0, 0.0, 0.0]))):
        for n in range(n_samples):  # 3./4. rotate the bone of person 0, frame 0 onto the axis
            if not s[n].any():
                continue
            vec = s[n, 0, 0, bone[1]] - s[n, 0, 0, bone[0]]
            rot = rotation_matrix_loop(np.cross(vec, target), angle_between_loop(vec, target))
            for m in range(n_persons):
                if not s[n, m].any():
                    continue
                for t in range(n_frames):
                    if not s[n, m, t].any():
                        continue
                    for v in range(n_joints):
                        s[n, m, t, v] = np.dot(rot, s[n, m, t, v])

    return s.transpose(0, 4, 2, 3, 1).astype(data.dtype)
