"""Kinematics of the synthetic Kinect-25 bodies: proportions, posture, inverse kinematics.

The synthetic dataset (``synthetic.py``) describes each action as *controls* over time
(where the pelvis is, how the torso leans, where each wrist and ankle should go) and
this module turns controls into the 25 NTU joints. Every bone is placed at a fixed
length, so bone lengths are constant per body over time by construction.

Body frame: origin at the spine base, ``x`` to the body's **left**, ``y`` up, ``z``
forward (right-handed, like Kinect camera space seen from behind the body). The room
frame has the same axes before the body's yaw is applied; the floor is ``y = 0``.

Shapes: ``B`` bodies (clips x persons), ``T`` frames; positions are ``(B, T, 3)``.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from ..skeleton import NUM_JOINTS

FPS = 30.0  # Kinect v2 frame rate

LEFT = np.array([1.0, 0.0, 0.0])
UP = np.array([0.0, 1.0, 0.0])
FORWARD = np.array([0.0, 0.0, 1.0])

# 0-based NTU joint indices used here (names as in skeleton.JOINT_NAMES).
SPINE_BASE, SPINE_MID, NECK, HEAD = 0, 1, 2, 3
L_SHOULDER, L_ELBOW, L_WRIST, L_HAND = 4, 5, 6, 7
R_SHOULDER, R_ELBOW, R_WRIST, R_HAND = 8, 9, 10, 11
L_HIP, L_KNEE, L_ANKLE, L_FOOT = 12, 13, 14, 15
R_HIP, R_KNEE, R_ANKLE, R_FOOT = 16, 17, 18, 19
SPINE_SHOULDER = 20
L_HAND_TIP, L_THUMB, R_HAND_TIP, R_THUMB = 21, 22, 23, 24


# -- small vector helpers ---------------------------------------------------------
def normalize(v: np.ndarray, fallback: np.ndarray | None = None) -> np.ndarray:
    """Unit vectors along the last axis; near-zero vectors become ``fallback``."""
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    out = v / np.maximum(norm, 1e-9)
    if fallback is not None:
        out = np.where(norm > 1e-6, out, normalize(np.broadcast_to(fallback, v.shape)))
    return out


def rot_x(angle: np.ndarray) -> np.ndarray:
    """Rotations about ``x`` by ``angle`` (any shape) -> ``angle.shape + (3, 3)``.

    A positive angle tilts ``+y`` towards ``+z`` (a forward bend in the body frame)."""
    c, s = np.cos(angle), np.sin(angle)
    o, i = np.zeros_like(c), np.ones_like(c)
    return np.stack([np.stack([i, o, o], -1), np.stack([o, c, -s], -1), np.stack([o, s, c], -1)], -2)


def rot_y(angle: np.ndarray) -> np.ndarray:
    """Rotations about the vertical ``y`` axis (yaw); ``+z`` turns towards ``+x``."""
    c, s = np.cos(angle), np.sin(angle)
    o, i = np.zeros_like(c), np.ones_like(c)
    return np.stack([np.stack([c, o, s], -1), np.stack([o, i, o], -1), np.stack([-s, o, c], -1)], -2)


def rot_z(angle: np.ndarray) -> np.ndarray:
    """Rotations about ``z``; a positive angle tilts ``+y`` towards ``-x`` (a bend to the right)."""
    c, s = np.cos(angle), np.sin(angle)
    o, i = np.zeros_like(c), np.ones_like(c)
    return np.stack([np.stack([c, -s, o], -1), np.stack([s, c, o], -1), np.stack([o, o, i], -1)], -2)


def apply(rot: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``rot @ v`` over leading axes: rot ``(..., 3, 3)``, v ``(..., 3)``."""
    return np.einsum("...ij,...j->...i", rot, v)


def smoothstep(x: np.ndarray) -> np.ndarray:
    """0 below 0, 1 above 1, a C1 ramp ``3x^2 - 2x^3`` between."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def envelope(u: np.ndarray, start: np.ndarray, rise: np.ndarray,
             stop: np.ndarray, fall: np.ndarray) -> np.ndarray:
    """Action intensity in [0, 1] over normalised clip time ``u`` ``(P, T)``.

    Rises over ``[start, start + rise]`` and falls over ``[stop, stop + fall]``; the
    per-clip parameters are ``(P,)``. ``start + rise < 0`` means the clip begins with
    the action already under way, ``stop > 1`` that it never returns to rest."""
    s = lambda a: a[:, None]  # noqa: E731
    return smoothstep((u - s(start)) / s(rise)) * (1.0 - smoothstep((u - s(stop)) / s(fall)))


# -- bodies -------------------------------------------------------------------------
@dataclass
class BodyShape:
    """Segment lengths in metres, one entry per body: every field is ``(B,)``."""

    spine_low: np.ndarray      # spine base -> spine middle
    spine_high: np.ndarray     # spine middle -> spine shoulder
    neck: np.ndarray           # spine shoulder -> neck
    head: np.ndarray           # neck -> head centre
    shoulder_half: np.ndarray  # spine shoulder -> shoulder, sideways
    hip_half: np.ndarray       # spine base -> hip, sideways
    hip_drop: np.ndarray       # spine base -> hip, downwards
    upper_arm: np.ndarray
    forearm: np.ndarray
    hand: np.ndarray           # wrist -> hand
    hand_tip: np.ndarray       # hand -> hand tip
    thumb: np.ndarray          # hand -> thumb
    thigh: np.ndarray
    shin: np.ndarray
    foot: np.ndarray           # ankle -> foot
    ankle_height: np.ndarray   # ankle above the floor

    @property
    def arm_reach(self) -> np.ndarray:
        return self.upper_arm + self.forearm

    @property
    def leg_length(self) -> np.ndarray:
        return self.thigh + self.shin

    @property
    def standing_pelvis_height(self) -> np.ndarray:
        """Spine-base height when standing with slightly bent knees."""
        return self.hip_drop + STANDING_LEG_EXTENSION * self.leg_length + self.ankle_height

    def take(self, index: np.ndarray) -> "BodyShape":
        """The bodies at ``index``."""
        return BodyShape(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


STANDING_LEG_EXTENSION = 0.97  # hip-ankle distance / (thigh + shin) when standing

# Segment lengths of a 1.75 m adult (metres), and how much each may vary beyond height.
_REFERENCE_SEGMENTS: dict[str, float] = {
    "spine_low": 0.24, "spine_high": 0.24, "neck": 0.08, "head": 0.12,
    "shoulder_half": 0.18, "hip_half": 0.09, "hip_drop": 0.06,
    "upper_arm": 0.28, "forearm": 0.25, "hand": 0.08, "hand_tip": 0.07, "thumb": 0.05,
    "thigh": 0.42, "shin": 0.40, "foot": 0.13, "ankle_height": 0.08,
}
_GROUP = {  # segments sharing one subject factor (arm length, leg length, width, torso)
    "upper_arm": "arm", "forearm": "arm", "hand": "arm", "hand_tip": "arm", "thumb": "arm",
    "thigh": "leg", "shin": "leg", "foot": "leg",
    "shoulder_half": "width", "hip_half": "width",
    "spine_low": "torso", "spine_high": "torso", "neck": "torso",
}


def sample_shapes(rng: np.random.Generator, n: int) -> BodyShape:
    """``n`` random adult bodies: height 1.50-1.92 m, arm/leg/torso/width factors +-8-12 %."""
    height = rng.uniform(1.50, 1.92, n)
    factors = {
        "arm": rng.uniform(0.92, 1.08, n), "leg": rng.uniform(0.92, 1.08, n),
        "width": rng.uniform(0.88, 1.14, n), "torso": rng.uniform(0.93, 1.07, n),
    }
    scale = height / 1.75
    return BodyShape(**{
        name: length * scale * factors.get(_GROUP.get(name, ""), 1.0)
        for name, length in _REFERENCE_SEGMENTS.items()
    })


@dataclass
class Style:
    """How a performer moves, one entry per body: every field is ``(B,)``."""

    amplitude: np.ndarray      # scales gesture sizes
    speed: np.ndarray          # scales oscillation frequencies
    lean: np.ndarray           # habitual forward lean of the torso (rad)
    head_pitch: np.ndarray     # habitual head nod (rad, + = down)
    arm_spread: np.ndarray     # resting arm abduction (rad)
    stance: np.ndarray         # half distance between the ankles (m)
    sway: np.ndarray           # idle sway amplitude (m)

    def take(self, index: np.ndarray) -> "Style":
        return Style(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


def sample_styles(rng: np.random.Generator, n: int) -> Style:
    """``n`` random performer styles."""
    return Style(
        amplitude=rng.uniform(0.8, 1.2, n), speed=rng.uniform(0.8, 1.25, n),
        lean=rng.uniform(-0.03, 0.15, n), head_pitch=rng.uniform(-0.1, 0.2, n),
        arm_spread=rng.uniform(0.04, 0.25, n), stance=rng.uniform(0.07, 0.16, n),
        sway=rng.uniform(0.005, 0.025, n),
    )


# -- controls -> joints ---------------------------------------------------------------
@dataclass
class Controls:
    """What one batch of bodies does over time.

    ``root``: ``(B, T, 3)`` spine-base position in the room; ``yaw``: ``(B, T)`` facing
    (rad, 0 = room ``+z``); ``lean``/``side_lean``/``head_pitch``: ``(B, T)`` rad;
    wrist/ankle targets and elbow/knee pole directions: ``(B, T, 3)`` in the body frame.
    """

    root: np.ndarray
    yaw: np.ndarray
    lean: np.ndarray
    side_lean: np.ndarray
    head_pitch: np.ndarray
    wrist_l: np.ndarray
    wrist_r: np.ndarray
    elbow_pole_l: np.ndarray
    elbow_pole_r: np.ndarray
    ankle_l: np.ndarray
    ankle_r: np.ndarray


def torso_joints(shape: BodyShape, lean: np.ndarray, side_lean: np.ndarray,
                 head_pitch: np.ndarray) -> dict[int, np.ndarray]:
    """Spine, head, shoulders and hips in the body frame, each ``(B, T, 3)``.

    The lower spine bends by 40 % of ``lean``, the upper spine and shoulders by all of it."""
    col = lambda a: a[:, None, None]  # (B,) -> (B, 1, 1)  # noqa: E731
    low = rot_x(0.4 * lean) @ rot_z(0.4 * side_lean)                  # (B, T, 3, 3)
    high = rot_x(lean) @ rot_z(side_lean)
    head_rot = high @ rot_x(head_pitch)
    zeros = np.zeros(lean.shape + (3,))
    joints = {SPINE_BASE: zeros}
    joints[SPINE_MID] = apply(low, UP * col(shape.spine_low))
    joints[SPINE_SHOULDER] = joints[SPINE_MID] + apply(high, UP * col(shape.spine_high))
    joints[NECK] = joints[SPINE_SHOULDER] + apply(high, UP * col(shape.neck))
    joints[HEAD] = joints[NECK] + apply(head_rot, UP * col(shape.head))
    for side, joint in ((1.0, L_SHOULDER), (-1.0, R_SHOULDER)):
        offset = side * LEFT * col(shape.shoulder_half) - 0.02 * UP
        joints[joint] = joints[SPINE_SHOULDER] + apply(high, offset + zeros)
    for side, joint in ((1.0, L_HIP), (-1.0, R_HIP)):
        joints[joint] = zeros + side * LEFT * col(shape.hip_half) - UP * col(shape.hip_drop)
    return joints


def two_bone_ik(root: np.ndarray, target: np.ndarray, pole: np.ndarray,
                upper: np.ndarray, lower: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Place a two-segment limb (shoulder-elbow-wrist or hip-knee-ankle).

    Args:
        root, target, pole: ``(B, T, 3)``; the middle joint bends towards ``pole``.
        upper, lower: ``(B,)`` segment lengths.
    Returns:
        ``(middle, end, plane_normal)``, each ``(B, T, 3)``. ``end`` is ``target`` pulled
        within reach; both segments keep their exact lengths.
    """
    a, b = upper[:, None, None], lower[:, None, None]
    offset = target - root
    dist = np.linalg.norm(offset, axis=-1, keepdims=True)
    direction = normalize(offset, fallback=-UP)
    dist = np.clip(dist, np.abs(a - b) + 1e-3, 0.995 * (a + b))
    bend = pole - np.sum(pole * direction, -1, keepdims=True) * direction
    spare = FORWARD - np.sum(FORWARD * direction, -1, keepdims=True) * direction
    bend = normalize(np.where(np.linalg.norm(bend, axis=-1, keepdims=True) > 1e-4, bend, spare),
                     fallback=LEFT)
    cos_root = np.clip((a * a + dist * dist - b * b) / (2 * a * dist), -1.0, 1.0)
    middle = root + a * (cos_root * direction + np.sqrt(1.0 - cos_root ** 2) * bend)
    end = root + dist * direction
    return middle, end, np.cross(direction, bend)


def pose_bodies(shape: BodyShape, ctl: Controls) -> np.ndarray:
    """Joint positions in the room, ``(B, T, 25, 3)`` float64, from controls."""
    col = lambda a: a[:, None, None]  # noqa: E731
    joints = torso_joints(shape, ctl.lean, ctl.side_lean, ctl.head_pitch)
    arms = ((1.0, L_SHOULDER, L_ELBOW, L_WRIST, L_HAND, L_HAND_TIP, L_THUMB, ctl.wrist_l, ctl.elbow_pole_l),
            (-1.0, R_SHOULDER, R_ELBOW, R_WRIST, R_HAND, R_HAND_TIP, R_THUMB, ctl.wrist_r, ctl.elbow_pole_r))
    for side, sh, el, wr, ha, tip, th, target, pole in arms:
        elbow, wrist, normal = two_bone_ik(joints[sh], target, pole, shape.upper_arm, shape.forearm)
        along = normalize(wrist - elbow)
        thumb_side = normalize(side * normal, fallback=FORWARD)
        joints[el], joints[wr] = elbow, wrist
        joints[ha] = wrist + along * col(shape.hand)
        joints[tip] = joints[ha] + along * col(shape.hand_tip)
        joints[th] = joints[ha] + col(shape.thumb) * (0.5 * along + 0.866 * thumb_side)
    legs = ((L_HIP, L_KNEE, L_ANKLE, L_FOOT, ctl.ankle_l), (R_HIP, R_KNEE, R_ANKLE, R_FOOT, ctl.ankle_r))
    for hip, knee, ankle, foot, target in legs:
        knee_pos, ankle_pos, _ = two_bone_ik(joints[hip], target, FORWARD + 0.0 * target,
                                            shape.thigh, shape.shin)
        shin = normalize(ankle_pos - knee_pos)
        toes = FORWARD - np.sum(FORWARD * shin, -1, keepdims=True) * shin
        toes = normalize(normalize(toes, fallback=UP) + 0.35 * shin)
        joints[knee], joints[ankle] = knee_pos, ankle_pos
        joints[foot] = ankle_pos + toes * col(shape.foot)
    body = np.stack([joints[v] for v in range(NUM_JOINTS)], axis=2)    # (B, T, 25, 3)
    room = np.einsum("btij,btvj->btvi", rot_y(ctl.yaw), body)
    return room + ctl.root[:, :, None, :]


def to_body_frame(points: np.ndarray, root: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    """Room points ``(B, T, 3)`` into the frame of a body at ``root`` ``(B, T, 3)``, ``yaw`` ``(B, T)``."""
    return np.einsum("btji,btj->bti", rot_y(yaw), points - root)


def from_body_frame(points: np.ndarray, root: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_body_frame`."""
    return apply(rot_y(yaw), points) + root


# -- the action library ---------------------------------------------------------------
@dataclass
class ActionContext:
    """Everything an action needs for ``P`` clips of one class.

    ``shape``/``style``: the performers ``(P,)``; ``partner_*``: the second person of
    two-person actions ``(P,)``; ``t``: ``(T,)`` seconds since the clip's first frame;
    ``length``: ``(P,)`` valid frames; ``rand``: ``(P, K)`` uniform draws private to
    each clip (an action reads them in a fixed order, see :class:`Draws`)."""

    shape: BodyShape
    style: Style
    partner_shape: BodyShape
    partner_style: Style
    t: np.ndarray
    length: np.ndarray
    rand: np.ndarray

    @property
    def num_clips(self) -> int:
        return len(self.length)

    @property
    def u(self) -> np.ndarray:
        """``(P, T)`` normalised clip time: 0 at the first frame, 1 at the last valid one."""
        return (self.t * FPS)[None, :] / np.maximum(self.length[:, None] - 1, 1)


class Draws:
    """Hands out the columns of ``rand`` ``(P, K)`` one by one, scaled to ``[lo, hi)``."""

    def __init__(self, rand: np.ndarray) -> None:
        self.rand, self.next = rand, 0

    def __call__(self, lo: float, hi: float) -> np.ndarray:
        if self.next >= self.rand.shape[1]:
            raise RuntimeError(f"action needs more than {self.rand.shape[1]} random draws per clip")
        col = self.rand[:, self.next]
        self.next += 1
        return lo + (hi - lo) * col


def _col(a: np.ndarray) -> np.ndarray:
    """``(P,)`` -> ``(P, 1, 1)`` for broadcasting against ``(P, T, 3)``."""
    return np.asarray(a)[:, None, None]


def _vec(x, y, z) -> np.ndarray:
    """A body-frame vector from components that are scalars or ``(P,)`` arrays -> ``(P, 1, 3)``."""
    parts = np.broadcast_arrays(*(np.asarray(c, dtype=float) for c in (x, y, z)))
    return np.stack(parts, -1).reshape(-1, 1, 3)


def _blend(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``a + w (b - a)`` with weights ``w`` ``(P, T)`` over positions ``(P, T, 3)``."""
    return a + w[..., None] * (b - a)


def _reach(rest: np.ndarray, goal: np.ndarray, env: np.ndarray, bulge: float = 0.12) -> np.ndarray:
    """A wrist path from ``rest`` to ``goal`` that swings forward on the way (avoids the body)."""
    return _blend(rest, goal, env) + (4.0 * bulge * env * (1.0 - env))[..., None] * FORWARD


def _timing(draw: Draws) -> tuple[np.ndarray, ...]:
    """Random onset/offset of a held action: ``(start, rise, stop, fall)``, each ``(P,)``.

    Some clips begin with the action already under way and about half never return."""
    start, rise = draw(-0.3, 0.15), draw(0.12, 0.3)
    returns = draw(0.0, 1.0) < 0.5
    stop, fall = np.where(returns, draw(0.68, 0.85), 5.0), draw(0.1, 0.2)
    return start, rise, stop, fall


def _oscillation(ctx: ActionContext, draw: Draws, hz: float, speed: np.ndarray) -> np.ndarray:
    """``sin`` of a random-phase oscillation at ``hz * speed`` -> ``(P, T)``."""
    phase = draw(0.0, 2 * np.pi)
    return np.sin(2 * np.pi * hz * speed[:, None] * ctx.t[None, :] + phase[:, None])


def standing(ctx: ActionContext, shape: BodyShape, style: Style, draw: Draws,
             position: np.ndarray, facing: np.ndarray) -> Controls:
    """A body standing idle at ``position`` ``(P, 3)`` (floor level) facing ``facing`` ``(P,)``:
    slight sway, breathing-like lean, arms hanging at its habitual spread."""
    p, t = ctx.num_clips, ctx.t[None, :]
    sway = [np.sin(2 * np.pi * draw(0.15, 0.4)[:, None] * t + draw(0, 2 * np.pi)[:, None])
            for _ in range(3)]
    root = np.repeat(position[:, None, :], len(ctx.t), axis=1).astype(float)
    root[..., 0] += style.sway[:, None] * sway[0]
    root[..., 2] += 0.5 * style.sway[:, None] * sway[1]
    root[..., 1] += shape.standing_pelvis_height[:, None]
    turn = draw(-0.3, 0.3)[:, None] * np.clip(ctx.u, 0.0, 1.0)   # slowly turning a little
    ctl = Controls(
        root=root, yaw=facing[:, None] + 0.04 * sway[2] + turn,
        lean=(style.lean + draw(-0.05, 0.25))[:, None] + 0.02 * sway[1],   # posture of the take
        side_lean=draw(-0.12, 0.12)[:, None] + 0.02 * sway[0],
        head_pitch=style.head_pitch[:, None] + 0.05 * sway[2],
        wrist_l=np.zeros((p, len(ctx.t), 3)), wrist_r=np.zeros((p, len(ctx.t), 3)),
        elbow_pole_l=np.broadcast_to(_vec(0.3, 0.0, -1.0), (p, len(ctx.t), 3)).copy(),
        elbow_pole_r=np.broadcast_to(_vec(-0.3, 0.0, -1.0), (p, len(ctx.t), 3)).copy(),
        ankle_l=np.zeros((p, len(ctx.t), 3)), ankle_r=np.zeros((p, len(ctx.t), 3)),
    )
    ctl.wrist_l, ctl.wrist_r = rest_wrists(shape, style, ctl)
    plant_feet(shape, style, ctl, position, facing)
    return ctl


def rest_wrists(shape: BodyShape, style: Style, ctl: Controls) -> tuple[np.ndarray, np.ndarray]:
    """Wrist targets of arms hanging at the body's sides (left, right), ``(P, T, 3)`` each."""
    torso = torso_joints(shape, ctl.lean, ctl.side_lean, ctl.head_pitch)
    out = []
    for side, joint in ((1.0, L_SHOULDER), (-1.0, R_SHOULDER)):
        spread = style.arm_spread
        hang = _vec(side * np.sin(spread), -np.cos(spread), 0.12)
        out.append(torso[joint] + 0.96 * _col(shape.arm_reach) * normalize(hang))
    return out[0], out[1]


def plant_feet(shape: BodyShape, style: Style, ctl: Controls, position: np.ndarray,
               facing: np.ndarray) -> None:
    """Set the ankle targets to fixed spots on the floor beside ``position`` (in place)."""
    for side, name in ((1.0, "ankle_l"), (-1.0, "ankle_r")):
        spot = _vec(side * style.stance, shape.ankle_height, 0.03)[:, 0]     # (P, 3)
        room = position + np.einsum("pij,pj->pi", rot_y(facing), spot)
        room = np.repeat(room[:, None, :], len(ctl.yaw[0]), axis=1)
        setattr(ctl, name, to_body_frame(room, ctl.root, ctl.yaw))


def feet_under(shape: BodyShape, style: Style, ctl: Controls) -> None:
    """Set the ankle targets on the floor right under the hips, moving with the body (in place)."""
    floor = shape.ankle_height[:, None] - ctl.root[..., 1]                     # (P, T)
    for side, name in ((1.0, "ankle_l"), (-1.0, "ankle_r")):
        lateral = np.broadcast_to((side * style.stance)[:, None], floor.shape)
        setattr(ctl, name, np.stack([lateral, floor, np.full_like(floor, 0.03)], -1))


def _single(ctx: ActionContext, draw: Draws) -> Controls:
    """The performer standing idle somewhere near the room centre, facing a random way,
    the left hand resting in one of three places (hanging, on the hip, on the belly)."""
    position = np.stack([draw(-0.3, 0.3), np.zeros(ctx.num_clips), draw(-0.3, 0.3)], -1)
    ctl = standing(ctx, ctx.shape, ctx.style, draw, position, draw(-0.6, 0.6))
    torso, mode = _torso(ctx.shape, ctl), draw(0.0, 1.0)
    on_hip = torso[L_HIP] + _vec(0.07, draw(0.05, 0.12), -0.02)
    on_belly = 0.5 * (torso[SPINE_BASE] + torso[SPINE_MID]) + _vec(-0.05, 0.0, 0.16)
    for chosen, goal, pole in ((mode > 0.75, on_hip, _vec(1.0, 0.0, -0.3)),
                               ((mode > 0.5) & (mode <= 0.75), on_belly, _vec(0.5, -1.0, 0.0))):
        pick = chosen[:, None, None]
        ctl.wrist_l = np.where(pick, goal, ctl.wrist_l)
        ctl.elbow_pole_l = np.where(pick, pole, ctl.elbow_pole_l)
    return ctl


def _torso(shape: BodyShape, ctl: Controls) -> dict[int, np.ndarray]:
    return torso_joints(shape, ctl.lean, ctl.side_lean, ctl.head_pitch)


def arms_overhead(ctx: ActionContext, ctl: Controls, draw: Draws, weight: np.ndarray,
                  reach_share: float = 0.97, spread: tuple[float, float] = (0.05, 0.45)) -> None:
    """Both wrists a share ``weight`` ``(P, T)`` of the way to overhead (random spread and
    forward tilt), in place."""
    torso, reach = _torso(ctx.shape, ctl), _col(ctx.shape.arm_reach)
    out, fwd = draw(*spread), draw(-0.05, 0.6)
    for side, sh, name, pole in ((1.0, L_SHOULDER, "wrist_l", "elbow_pole_l"),
                                 (-1.0, R_SHOULDER, "wrist_r", "elbow_pole_r")):
        goal = torso[sh] + reach_share * reach * normalize(_vec(side * out, 1.0, fwd))
        setattr(ctl, name, _reach(getattr(ctl, name), goal, weight))
        setattr(ctl, pole, _blend(getattr(ctl, pole), _vec(side, 0.0, -0.5), weight))


def raise_both_hands(ctx: ActionContext, draw: Draws) -> list[Controls]:
    """Both arms raised overhead (varying spread and forward tilt) and held."""
    ctl = _single(ctx, draw)
    arms_overhead(ctx, ctl, draw, envelope(ctx.u, *_timing(draw)))
    return [ctl]


def reach_forward(ctx: ActionContext, draw: Draws) -> list[Controls]:
    """Both arms stretched forward (varying height and spread) and held."""
    ctl = _single(ctx, draw)
    env = envelope(ctx.u, *_timing(draw))
    torso, reach = _torso(ctx.shape, ctl), _col(ctx.shape.arm_reach)
    up, out = draw(-0.4, 0.4), draw(-0.08, 0.25)
    for side, sh, name, pole in ((1.0, L_SHOULDER, "wrist_l", "elbow_pole_l"),
                                 (-1.0, R_SHOULDER, "wrist_r", "elbow_pole_r")):
        goal = torso[sh] + 0.95 * reach * normalize(_vec(side * out, up, 1.0))
        setattr(ctl, name, _reach(getattr(ctl, name), goal, env, bulge=0.0))
        setattr(ctl, pole, _blend(getattr(ctl, pole), _vec(side, -1.0, 0.0), env))
    return [ctl]


def squat(ctx: ActionContext, draw: Draws) -> list[Controls]:
    """Pelvis drops, knees bend forward over planted feet, torso leans, arms balance."""
    ctl = _single(ctx, draw)
    position = ctl.root[:, 0].copy()
    position[:, 1] = 0.0
    env = envelope(ctx.u, *_timing(draw))
    ctl.root = ctl.root - (env * (draw(0.2, 0.34) * ctx.shape.leg_length)[:, None])[..., None] * UP
    ctl.lean = ctl.lean + env * draw(0.25, 0.55)[:, None]
    plant_feet(ctx.shape, ctx.style, ctl, position, ctl.yaw[:, 0] - 0.0)
    torso, reach = _torso(ctx.shape, ctl), _col(ctx.shape.arm_reach)
    rest_l, rest_r = rest_wrists(ctx.shape, ctx.style, ctl)
    balance = draw(0.2, 0.8)[:, None] * env
    ctl.wrist_l = _blend(rest_l, torso[L_SHOULDER] + 0.9 * reach * normalize(_vec(0.1, -0.4, 1.0)), balance)
    ctl.wrist_r = _blend(rest_r, torso[R_SHOULDER] + 0.9 * reach * normalize(_vec(-0.1, -0.4, 1.0)), balance)
    return [ctl]


def _right_hand_up(ctx: ActionContext, draw: Draws, wave_hz: float) -> list[Controls]:
    """Right hand raised beside the head and held; ``wave_hz > 0`` waves it side to side."""
    ctl = _single(ctx, draw)
    env = envelope(ctx.u, *_timing(draw))
    torso, amp = _torso(ctx.shape, ctl), ctx.style.amplitude
    goal = torso[R_SHOULDER] + _vec(-draw(0.04, 0.2), draw(0.28, 0.45) * amp, draw(0.0, 0.2))
    swing = draw(0.1, 0.16) * amp
    if wave_hz > 0:
        goal = goal + (swing[:, None] * _oscillation(ctx, draw, wave_hz, ctx.style.speed))[..., None] * LEFT
    else:  # holding still: only a slow, small drift
        goal = goal + (0.01 * _oscillation(ctx, draw, 0.3, ctx.style.speed))[..., None] * LEFT
    ctl.wrist_r = _reach(ctl.wrist_r, goal, env)
    ctl.elbow_pole_r = _blend(ctl.elbow_pole_r, _vec(-1.0, -0.8, -0.2), env)
    return [ctl]


def hold_hand_up(ctx: ActionContext, draw: Draws) -> list[Controls]:
    """Right hand raised beside the head and held still."""
    return _right_hand_up(ctx, draw, wave_hz=0.0)


def wave_slowly(ctx: ActionContext, draw: Draws) -> list[Controls]:
    """Right hand raised beside the head, waving sideways at ~0.5 Hz x speed."""
    return _right_hand_up(ctx, draw, wave_hz=0.5)


def wave_quickly(ctx: ActionContext, draw: Draws) -> list[Controls]:
    """Right hand raised beside the head, waving sideways at ~2 Hz x speed."""
    return _right_hand_up(ctx, draw, wave_hz=2.0)


def touch_head(ctx: ActionContext, draw: Draws) -> list[Controls]:
    """Right hand on top of the head with a small scratching motion, elbow out."""
    ctl = _single(ctx, draw)
    env = envelope(ctx.u, *_timing(draw))
    torso = _torso(ctx.shape, ctl)
    goal = torso[HEAD] + _vec(-draw(0.05, 0.14), draw(-0.02, 0.1), draw(-0.08, 0.06))
    scratch = 0.015 * _oscillation(ctx, draw, 2.5, ctx.style.speed)
    ctl.wrist_r = _reach(ctl.wrist_r, goal + scratch[..., None] * FORWARD, env)
    ctl.elbow_pole_r = _blend(ctl.elbow_pole_r, _vec(-1.0, 0.3, -0.2), env)
    return [ctl]


def touch_opposite_shoulder(ctx: ActionContext, draw: Draws) -> list[Controls]:
    """Right hand patting the left shoulder, elbow in front of the chest."""
    ctl = _single(ctx, draw)
    env = envelope(ctx.u, *_timing(draw))
    torso = _torso(ctx.shape, ctl)
    goal = torso[L_SHOULDER] + _vec(draw(-0.1, 0.0), draw(-0.02, 0.06), draw(0.05, 0.1))
    pat = 0.015 * _oscillation(ctx, draw, 1.5, ctx.style.speed)
    ctl.wrist_r = _reach(ctl.wrist_r, goal + pat[..., None] * UP, env)
    ctl.elbow_pole_r = _blend(ctl.elbow_pole_r, _vec(-0.2, -0.7, 0.7), env)
    return [ctl]


def clap(ctx: ActionContext, draw: Draws) -> list[Controls]:
    """Both hands meet and part repeatedly in front of the chest."""
    ctl = _single(ctx, draw)
    env = envelope(ctx.u, *_timing(draw))
    torso = _torso(ctx.shape, ctl)
    centre = torso[SPINE_SHOULDER] + _vec(0.0, -draw(0.05, 0.22), draw(0.25, 0.35))
    open_ = 0.5 * (1 + _oscillation(ctx, draw, 1.6, ctx.style.speed))
    half = 0.015 + (draw(0.08, 0.14) * ctx.style.amplitude)[:, None] * open_
    for side, name, pole in ((1.0, "wrist_l", "elbow_pole_l"), (-1.0, "wrist_r", "elbow_pole_r")):
        goal = centre + (side * half)[..., None] * LEFT
        setattr(ctl, name, _reach(getattr(ctl, name), goal, env))
        setattr(ctl, pole, _blend(getattr(ctl, pole), _vec(side, -1.0, 0.0), env))
    return [ctl]


def kick(ctx: ActionContext, draw: Draws) -> list[Controls]:
    """One or two quick forward kicks of the right leg, hands in a guard."""
    ctl = _single(ctx, draw)
    u, speed = ctx.u, ctx.style.speed
    duration = draw(0.1, 0.16) / speed * FPS / np.maximum(ctx.length - 1, 1)   # in u units
    first, second = draw(0.2, 0.45), draw(0.55, 0.8)
    twice = draw(0.0, 1.0) < 0.5
    pulse = np.exp(-((u - first[:, None]) / duration[:, None]) ** 2)
    pulse = np.maximum(pulse, twice[:, None] * np.exp(-((u - second[:, None]) / duration[:, None]) ** 2))
    hip = _torso(ctx.shape, ctl)[R_HIP]
    angle = draw(0.8, 1.25)
    goal = hip + 0.98 * _col(ctx.shape.leg_length) * _vec(0.0, -np.cos(angle), np.sin(angle))
    ctl.ankle_r = _blend(ctl.ankle_r, goal, pulse)
    ctl.lean = ctl.lean - 0.2 * pulse
    guard = envelope(u, *_timing(draw)) * draw(0.3, 1.0)[:, None]
    torso = _torso(ctx.shape, ctl)
    for side, name in ((1.0, "wrist_l"), (-1.0, "wrist_r")):
        goal = torso[SPINE_SHOULDER] + _vec(side * 0.12, 0.0, 0.3)
        setattr(ctl, name, _blend(getattr(ctl, name), goal, guard))
    return [ctl]


# -- two-person actions ----------------------------------------------------------------
def _pair(ctx: ActionContext, draw: Draws, distance: np.ndarray) -> tuple[Controls, Controls]:
    """Performer and partner standing ``distance`` ``(P,)`` apart, facing each other,
    side-on to the front camera (as in NTU's mutual actions)."""
    axis = np.where(draw(0.0, 1.0) < 0.5, 0.5, -0.5) * np.pi + draw(-0.25, 0.25)
    direction = np.stack([np.sin(axis), np.zeros_like(axis), np.cos(axis)], -1)    # (P, 3)
    centre = np.stack([draw(-0.2, 0.2), np.zeros_like(axis), draw(-0.2, 0.2)], -1)
    half = (0.5 * distance)[:, None] * direction
    first = standing(ctx, ctx.shape, ctx.style, draw, centre - half, axis)
    second = standing(ctx, ctx.partner_shape, ctx.partner_style, draw, centre + half, axis + np.pi)
    return first, second


def handshake(ctx: ActionContext, draw: Draws) -> list[Controls]:
    """Two people facing each other join right hands at the midpoint and shake."""
    bodies = _pair(ctx, draw, draw(0.9, 1.2))
    start, rise, stop, fall = _timing(draw)
    meet = 0.5 * (bodies[0].root + bodies[1].root)
    pelvis = 0.5 * (ctx.shape.standing_pelvis_height + ctx.partner_shape.standing_pelvis_height)
    meet[..., 1] = pelvis[:, None]
    meet[..., 1] += draw(0.0, 0.15)[:, None]
    meet[..., 1] += 0.03 * _oscillation(ctx, draw, 2.5, ctx.style.speed)
    for k, ctl in enumerate(bodies):
        delay = 0.05 * k * draw(0.0, 1.0)
        env = envelope(ctx.u, start + delay, rise, stop, fall)
        goal = to_body_frame(meet, ctl.root, ctl.yaw) + _vec(0.0, 0.0, -0.04)
        ctl.wrist_r = _reach(ctl.wrist_r, goal, env, bulge=0.05)
        ctl.elbow_pole_r = _blend(ctl.elbow_pole_r, _vec(-0.5, -1.0, 0.0), env)
    return list(bodies)


def push(ctx: ActionContext, draw: Draws) -> list[Controls]:
    """The performer shoves the partner's chest with both hands; the partner steps back."""
    pusher, pushed = _pair(ctx, draw, draw(0.75, 0.95))
    u = ctx.u
    start, rise = draw(-0.05, 0.25), draw(0.12, 0.22)
    contact = start + rise
    shove = smoothstep((u - contact[:, None]) / draw(0.12, 0.25)[:, None])     # (P, T)
    away = normalize(pushed.root[:, 0] - pusher.root[:, 0])                      # (P, 3)
    away[:, 1] = 0.0
    pushed.root = pushed.root + (shove * draw(0.25, 0.5)[:, None])[..., None] * away[:, None, :]
    pushed.lean = pushed.lean - 0.25 * shove * np.exp(-3.0 * np.clip(u - contact[:, None], 0, None))
    pushed.wrist_l = _blend(pushed.wrist_l, pushed.wrist_l + 0.25 * FORWARD + 0.15 * UP, shove)
    pushed.wrist_r = _blend(pushed.wrist_r, pushed.wrist_r + 0.25 * FORWARD + 0.15 * UP, shove)
    feet_under(ctx.partner_shape, ctx.partner_style, pushed)  # it steps back with the shove
    env = envelope(u, start, rise, contact + draw(0.15, 0.45), draw(0.1, 0.2))
    pusher.lean = pusher.lean + 0.15 * env
    chest = _torso(ctx.partner_shape, pushed)
    target_room = from_body_frame(0.5 * (chest[SPINE_MID] + chest[SPINE_SHOULDER]), pushed.root, pushed.yaw)
    target = to_body_frame(target_room, pusher.root, pusher.yaw)
    for side, name, pole in ((1.0, "wrist_l", "elbow_pole_l"), (-1.0, "wrist_r", "elbow_pole_r")):
        goal = target + _vec(side * 0.12, 0.0, -0.02)
        setattr(pusher, name, _reach(getattr(pusher, name), goal, env, bulge=0.0))
        setattr(pusher, pole, _blend(getattr(pusher, pole),
                                     _vec(side, -1.0, 0.0), env))
    return [pusher, pushed]


def walk_towards(ctx: ActionContext, draw: Draws) -> list[Controls]:
    """Two people walk towards each other (gait from the distance covered)."""
    far, near = draw(2.0, 2.6), draw(0.9, 1.3)
    bodies = _pair(ctx, draw, far)
    start, stop = draw(-0.15, 0.15), draw(0.75, 1.05)
    progress = smoothstep((ctx.u - start[:, None]) / (stop - start)[:, None])      # (P, T)
    share = draw(0.35, 0.65)
    meters = 0.5 * progress * (far - near)[:, None]   # each walks about half the gap
    for k, (ctl, shape, style) in enumerate(zip(bodies, (ctx.shape, ctx.partner_shape),
                                                (ctx.style, ctx.partner_style))):
        walked = meters * 2.0 * (share if k == 0 else 1.0 - share)[:, None]   # (P, T)
        heading = np.stack([np.sin(ctl.yaw[:, 0]), np.zeros(ctx.num_clips), np.cos(ctl.yaw[:, 0])], -1)
        ctl.root = ctl.root + walked[..., None] * heading[:, None, :]
        stride = 0.75 * shape.leg_length * style.amplitude                    # (P,)
        phase = np.pi * walked / stride[:, None] + draw(0.0, 2 * np.pi)[:, None]
        speed = np.gradient(walked, axis=1) * FPS
        gait = np.clip(speed / 0.6, 0.0, 1.0)
        ctl.root[..., 1] += 0.015 * gait * np.cos(2 * phase)
        for side, ankle, wrist, shift in ((1.0, "ankle_l", "wrist_l", 0.0),
                                          (-1.0, "ankle_r", "wrist_r", np.pi)):
            swing = np.sin(phase + shift)
            lift = 0.08 * gait * np.clip(np.cos(phase + shift), 0.0, None)
            feet_under(shape, style, ctl)
            base = getattr(ctl, ankle)
            base[..., 1] += lift
            base[..., 2] += 0.5 * stride[:, None] * gait * swing
            arm = getattr(ctl, wrist)
            setattr(ctl, wrist, arm - (0.3 * stride[:, None] * gait * swing)[..., None] * FORWARD)
    return list(bodies)


@dataclass(frozen=True)
class ActionSpec:
    """One synthetic action class: its name, what tells it apart, and its generator."""

    name: str
    cue: str             # pose | tempo | limb relation | motion | two-person
    description: str
    make: object         # (ActionContext, Draws) -> list[Controls] (one per person)
    persons: int = 1


ACTIONS: tuple[ActionSpec, ...] = (
    ActionSpec("raise both hands", "pose", "both arms raised overhead and held", raise_both_hands),
    ActionSpec("reach forward", "pose", "both arms stretched forward and held", reach_forward),
    ActionSpec("squat", "pose", "knees bend, pelvis drops, torso leans forward, arms forward for balance",
               squat),
    ActionSpec("hold hand up", "tempo",
               "right hand held up beside the head, still (same place as the waves)", hold_hand_up),
    ActionSpec("wave slowly", "tempo", "right hand up, waving side to side at ~0.5 Hz", wave_slowly),
    ActionSpec("wave quickly", "tempo", "right hand up, waving side to side at ~2 Hz", wave_quickly),
    ActionSpec("touch head", "limb relation", "right hand on top of the head, elbow out", touch_head),
    ActionSpec("touch opposite shoulder", "limb relation",
               "right hand on the left shoulder, elbow in front of the chest", touch_opposite_shoulder),
    ActionSpec("clap", "limb relation", "both hands meet repeatedly in front of the chest (~1.6 Hz)", clap),
    ActionSpec("kick", "motion", "one or two quick forward kicks of the right leg, hands in guard", kick),
    ActionSpec("handshake", "two-person", "two people face each other and shake right hands",
               handshake, persons=2),
    ActionSpec("push", "two-person", "one person shoves the other's chest; the other steps back",
               push, persons=2),
    ActionSpec("walk towards each other", "two-person", "two people 2-2.6 m apart walk until ~1 m apart",
               walk_towards, persons=2),
)
