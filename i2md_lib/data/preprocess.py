"""Body selection and the 2s-AGCN/CMD ``pre_normalization``, vectorised with NumPy.

What the CMD reference (``data_gen/ntu_gendata.py`` + ``data_gen/preprocess.py``) does,
step by step, over a batch ``(N, C, T, V, M)``:

1. :func:`select_bodies` -- keep the 2 most active of the (up to 4) bodies read *by
   position* in each frame; activity = sum over x, y, z of the std over the body's
   non-empty frames (all joints pooled).
2. :func:`pad_null_frames` -- a person whose first frame is empty has its non-empty
   frames moved to the front; then the empty frames after its last non-empty frame are
   filled by repeating frames ``0 .. last`` cyclically.
3. :func:`center_on_main_body` -- subtract joint 1 (spine middle) of person 0 *at each
   frame*; joints that are all-zero stay zero.
4. :func:`align_bone` twice -- rotate every sample so that ``joint1 - joint0`` of person 0
   at frame 0 points along +z, then so that ``joint8 - joint4`` (right minus left
   shoulder) points along +x.

The second rotation keeps the shoulders on +x but tilts the spine off +z unless the two
bones are perpendicular in frame 0, so normalising twice equals normalising once only in
that case (as in the reference).

Two deliberate, documented choices where the reference is ambiguous: "empty" means
*all coordinates are zero* (the reference tests ``sum() == 0``, which also fires when
non-zero values cancel), and bodies of equal activity are ranked with the later body
first (what the reference's ``argsort()[::-1]`` gives whenever its sort is stable).
``benchmarks/_preprocess_reference.py`` holds a per-joint loop version of every step;
the tests check both agree.
"""
from __future__ import annotations

import numpy as np

from ..skeleton import CENTER_JOINT, MAX_BODIES, NTU25, Layout

#: joints whose bone is aligned: (from, to); the vector ``p[to] - p[from]`` is rotated onto the axis
Z_BONE = NTU25.z_bone   # spine base -> spine middle  onto +z
X_BONE = NTU25.x_bone   # left shoulder -> right shoulder onto +x (the reference's joint8 - joint4)
_TINY = 1e-6      # below this |axis|_1, |angle| or |v|_1 the reference uses the identity
_CHUNK = 8        # samples normalised at once: temporaries stay small (no page faults)


def body_energy(xyz: np.ndarray) -> np.ndarray:
    """Activity of each body: ``(T, M, V, 3) -> (M,)``.

    Sum over x, y, z of the standard deviation over the body's non-empty frames
    (all joints pooled); 0 for a body that never appears.
    """
    t, m, v, c = xyz.shape
    # (M, 3, T*V): sums over the contiguous last axis are the fast ones in NumPy
    points = xyz.transpose(1, 3, 0, 2).astype(np.float64, order="C", copy=True).reshape(m, c, t * v)
    valid = (xyz != 0).any(axis=(2, 3)).T                                         # (M, T)
    count = valid.sum(axis=1) * v                                                 # (M,)
    denom = np.maximum(count, 1)[:, None]
    mean = points.sum(axis=2) / denom              # empty frames are zeros, so they add nothing
    points -= mean[..., None]                      # in place: fewer large temporaries
    points *= np.repeat(valid, v, axis=1)[:, None, :]                             # (M, 1, T*V)
    np.square(points, out=points)
    std = np.sqrt(points.sum(axis=2) / denom)                                     # (M, 3)
    return np.where(count > 0, std.sum(axis=1), 0.0)


def select_bodies(xyz: np.ndarray, num_bodies: int = MAX_BODIES) -> np.ndarray:
    """Keep the ``num_bodies`` most active bodies: ``(T, M_in, V, 3) -> (3, T, V, num_bodies)``.

    Bodies are ranked by :func:`body_energy`, highest first (ties: later body first);
    missing slots (``M_in < num_bodies``) are zero.
    """
    if xyz.ndim != 4 or xyz.shape[-1] != 3:
        raise ValueError(f"xyz must be (T, M, V, 3), got {xyz.shape}")
    t, m_in, v, _ = xyz.shape
    if m_in < num_bodies:
        xyz = np.concatenate([xyz, np.zeros((t, num_bodies - m_in, v, 3), xyz.dtype)], axis=1)
    order = np.argsort(body_energy(xyz), kind="stable")[::-1][:num_bodies]  # (num_bodies,)
    return xyz[:, order].transpose(3, 0, 2, 1)                               # (3, T, V, M)


def to_fixed_length(sample: np.ndarray, max_frames: int) -> tuple[np.ndarray, int]:
    """Zero-pad or cut ``(3, T, V, M)`` to ``(3, max_frames, V, M)``; returns it and the kept length."""
    c, t, v, m = sample.shape
    out = np.zeros((c, max_frames, v, m), dtype=np.float32)
    kept = min(t, max_frames)
    out[:, :kept] = sample[:, :kept]
    return out, kept


# ----------------------------------------------------------------------------- normalisation
def pre_normalize(data: np.ndarray, z_bone: tuple[int, int] = Z_BONE,
                  x_bone: tuple[int, int] = X_BONE, center_joint: int = CENTER_JOINT) -> np.ndarray:
    """The CMD/2s-AGCN normalisation of a batch ``(N, C=3, T, V, M)`` -> same shape and dtype.

    Pads null frames, centres on ``center_joint`` of person 0 per frame, then rotates
    ``z_bone`` of person 0 at frame 0 onto +z and ``x_bone`` onto +x (module docstring).
    The two rotations are composed (matrices in float64) and applied in one pass. The
    coordinates are computed in the input's precision (at least float32, as the
    reference, which stores every step in its float32 array), a few samples at a time
    so that temporaries stay small; the input is not modified.
    """
    _check_batch(data)
    out = np.empty(data.shape, dtype=data.dtype)
    for start in range(0, len(data), _CHUNK):
        y = _to_nmtcv(data[start:start + _CHUNK])                                  # (N, M, T, C, V)
        y, nonzero = _pad_null_frames(y, _nonzero(y))
        y = _center(y, nonzero, center_joint)
        rot_z = rotation_to(_bone(y, z_bone), _Z)                                  # (N, 3, 3)
        rot_x = rotation_to(np.einsum("nij,nj->ni", rot_z, _bone(y, x_bone)), _X)  # x bone after rot_z
        out[start:start + _CHUNK] = _rotate(y, rot_x @ rot_z).transpose(0, 3, 2, 4, 1)
    return out


def pre_normalize_layout(data: np.ndarray, layout: Layout) -> np.ndarray:
    """:func:`pre_normalize` with the normalisation joints of ``layout`` (``skeleton.Layout``);
    for NTU's layout the same as the defaults."""
    if data.ndim == 5 and data.shape[3] != layout.num_joints:
        raise ValueError(f"layout {layout.name} has {layout.num_joints} joints, got shape {data.shape}")
    return pre_normalize(data, layout.z_bone, layout.x_bone, layout.center_joint)


def pad_null_frames(data: np.ndarray) -> np.ndarray:
    """Step 2 alone on ``(N, C, T, V, M)``: move/repeat frames of each person (see module doc)."""
    _check_batch(data)
    y = _to_nmtcv(data)
    return _pad_null_frames(y, _nonzero(y))[0].transpose(0, 3, 2, 4, 1).astype(data.dtype)


def center_on_main_body(data: np.ndarray, center_joint: int = CENTER_JOINT) -> np.ndarray:
    """Step 3 alone on ``(N, C, T, V, M)``: subtract person 0's ``center_joint`` per frame."""
    _check_batch(data)
    y = _to_nmtcv(data)
    return _center(y, _nonzero(y), center_joint).transpose(0, 3, 2, 4, 1).astype(data.dtype)


def align_bone(data: np.ndarray, bone: tuple[int, int], axis: np.ndarray) -> np.ndarray:
    """Rotate each sample of ``(N, C, T, V, M)`` so ``p[bone[1]] - p[bone[0]]`` of person 0,
    frame 0 points along unit vector ``axis``."""
    _check_batch(data)
    y = _to_nmtcv(data)
    rotated = _rotate(y, rotation_to(_bone(y, bone), np.asarray(axis, dtype=np.float64)))
    return rotated.transpose(0, 3, 2, 4, 1).astype(data.dtype)


def rotation_to(v: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Rotation matrices ``(N, 3, 3)`` taking each ``v (N, 3)`` onto the direction ``target (3,)``.

    Rodrigues' formula ``R = I + sin(a) K + (1 - cos(a)) K^2`` about the unit axis
    ``k = v x target / |v x target|`` by ``a = angle(v, target)``. Like the reference, it
    is the identity when ``|v|_1``, ``|v x target|_1`` or ``a`` is below 1e-6 (so an
    anti-parallel ``v`` is left as it is).
    """
    v = np.asarray(v, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    axis = np.cross(v, target)                                          # (N, 3)
    norm_v = np.linalg.norm(v, axis=-1)
    cos = np.einsum("nc,c->n", v, target) / (np.maximum(norm_v, 1e-300) * np.linalg.norm(target))
    angle = np.arccos(np.clip(cos, -1.0, 1.0))                          # (N,)
    identity = (np.abs(v).sum(-1) < _TINY) | (np.abs(axis).sum(-1) < _TINY) | (np.abs(angle) < _TINY)
    k = axis / np.where(identity, 1.0, np.linalg.norm(axis, axis=-1))[:, None]
    kx = np.zeros(v.shape[:-1] + (3, 3))                                # cross-product matrix [k]x
    kx[:, 0, 1], kx[:, 0, 2], kx[:, 1, 2] = -k[:, 2], k[:, 1], -k[:, 0]
    kx[:, 1, 0], kx[:, 2, 0], kx[:, 2, 1] = k[:, 2], -k[:, 1], k[:, 0]
    sin, one_minus_cos = np.sin(angle)[:, None, None], (1.0 - np.cos(angle))[:, None, None]
    rot = np.eye(3) + sin * kx + one_minus_cos * (kx @ kx)
    rot[identity] = np.eye(3)
    return rot


# ----------------------------------------------------------------------------- internals
# They work on (N, M, T, C, V): one person-frame is a contiguous row of C*V values, so
# padding is a row gather and the rotation a batched (3, 3) @ (3, V) product.
_Z, _X = np.array([0.0, 0.0, 1.0]), np.array([1.0, 0.0, 0.0])


def _check_batch(data: np.ndarray) -> None:
    if data.ndim != 5 or data.shape[1] != 3:
        raise ValueError(f"expected a batch (N, C=3, T, V, M), got shape {data.shape}")


def _to_nmtcv(data: np.ndarray) -> np.ndarray:
    """A contiguous ``(N, M, T, C, V)`` copy in float32 or float64 (whichever holds the input)."""
    dtype = np.result_type(data.dtype, np.float32)
    return np.ascontiguousarray(data.transpose(0, 4, 2, 1, 3), dtype=dtype)


def _nonzero(y: np.ndarray) -> np.ndarray:
    """``(N, M, T, V)``: joints with any non-zero coordinate."""
    return (y[:, :, :, 0] != 0) | (y[:, :, :, 1] != 0) | (y[:, :, :, 2] != 0)


def _pad_null_frames(y: np.ndarray, nonzero: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n, m, t, c, v = y.shape
    valid = nonzero.any(axis=-1).reshape(n * m, t)                      # (P, T) non-empty frames
    present = valid.any(axis=1)
    shift = present & ~valid[:, 0]                                      # empty first frame
    frames = np.broadcast_to(np.arange(t), valid.shape)
    # a shifted person reads its non-empty frames first (stable), the others keep their order
    order = np.where(shift[:, None], np.argsort(~valid, axis=1, kind="stable"), frames)
    last = np.where(shift, valid.sum(axis=1) - 1, t - 1 - np.argmax(valid[:, ::-1], axis=1))
    period = np.where(present, last + 1, t)                             # frames kept before repeating
    index = np.take_along_axis(order, frames % period[:, None], axis=1)  # (P, T) source frame
    rows = np.arange(n * m)[:, None]
    padded = y.reshape(n * m, t, c * v)[rows, index].reshape(y.shape)
    return padded, nonzero.reshape(n * m, t, v)[rows, index].reshape(nonzero.shape)


def _center(y: np.ndarray, nonzero: np.ndarray, center_joint: int) -> np.ndarray:
    out = y - y[:, :1, :, :, center_joint:center_joint + 1]             # minus (N, 1, T, C, 1) of person 0
    np.copyto(out, 0.0, where=~nonzero[:, :, :, None, :])               # absent joints stay (+)0
    return out


def _bone(y: np.ndarray, bone: tuple[int, int]) -> np.ndarray:
    """``(N, 3)`` ``p[bone[1]] - p[bone[0]]`` of person 0 in frame 0."""
    return y[:, 0, 0, :, bone[1]] - y[:, 0, 0, :, bone[0]]


def _rotate(y: np.ndarray, rot: np.ndarray) -> np.ndarray:
    return rot.astype(y.dtype)[:, None, None] @ y                       # (N,1,1,3,3) @ (N,M,T,3,V)
