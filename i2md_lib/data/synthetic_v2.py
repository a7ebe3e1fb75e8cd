"""Version 2 of the synthetic actions: families that share their mean pose (``SyntheticConfig.version=2``).

Version 1 (``synthetic_motions.ACTIONS``) has 13 classes that differ mostly in their pose,
so an untrained encoder already separates them. Version 2 (40 classes, :data:`FAMILIES`)
models what makes NTU RGB+D hard:

* **families** of classes that share the mean pose and differ in a limb detail, a
  direction or the temporal order: five *sites* of the right hand (mouth, top of the
  head, chest, overhead, arm forward) x six *patterns* of the hand there (still, side to
  side, up and down, tapping, circling clockwise, circling anticlockwise), like drink
  water / brush teeth / eat; movements played forwards and backwards (raise / lower
  both arms, sit down / stand up, walk towards / apart), which no single frame can tell
  apart; leg moves that differ in the limb detail (kick, knee strike, stomp) in any
  direction; a handshake;
* **nuisances**: onset and end of the gesture, per-clip jitter of the site, size, tilt
  of the movement's plane, 2-5 cycles at any tempo, the performer sitting or standing,
  turning during the clip, the idle left hand doing something unrelated for a while,
  wider body proportions and styles;
* **sensor** effects applied in camera space by :func:`sensor_artifacts`: noisier hand
  joints and extremities, occluded joints inferred towards their parent, joints that
  collapse onto their parent for a few frames (dropped tracking), swapped hands, frozen
  frames, and a first frame whose torso joints are off, so that ``pre_normalize`` leaves
  every clip turned by its own small rotation.

Every action is a function ``(ActionContext, Draws) -> list[Controls]`` built on the
kinematics of :mod:`.synthetic_motions` (``synthetic.py`` runs them). The constants below
are the knobs; ``data/README.md`` (version 2) records what each design measured.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from ..skeleton import PARENTS
from .synthetic_motions import (
    HEAD, L_FOOT, L_HAND, L_HAND_TIP, L_SHOULDER, L_THUMB, L_WRIST, R_HAND, R_HAND_TIP,
    R_FOOT, R_HIP, R_SHOULDER, R_THUMB, R_WRIST, SPINE_SHOULDER, UP, ActionContext, ActionSpec, BodyShape,
    Controls, Draws, Style, _blend, _col, _reach, _torso, _vec, arms_overhead, envelope, handshake, normalize,
    rest_wrists, rot_x, rot_y, rot_z, smoothstep, standing, walk_towards,
)

#: Uniform draws reserved per take (an action reads at most this many, see ``Draws``).
RANDOM_DRAWS = 96
P_SEATED = 0.15                # one-person gestures performed sitting on a chair
TURN_MAX = 0.3                 # rad the performer may turn during a clip
P_ASIDE = 0.3                  # clips in which the idle left hand does something unrelated
GESTURE_START = (-0.2, 0.15)   # onset of a gesture, in clip time (< 0: under way at frame 0)
P_RETURN = 0.4                 # gestures that end back at rest before the clip ends
GESTURE_STOP = (0.7, 0.95)     # when those gestures end, in clip time
GESTURE_SIZE = (0.16, 0.28)    # peak-to-peak size of a gesture (m, x the performer's amplitude)
GESTURE_CYCLES = (2.0, 5.0)    # oscillations (or turns) over the gesture
AXIS_TILT = 0.25               # rad the gesture's axes may tilt about each body axis
TAP_WIDTH = 0.12               # share of a cycle a tap lasts

# -- subjects -----------------------------------------------------------------------------
_REFERENCE_SEGMENTS: dict[str, float] = {
    "spine_low": 0.24, "spine_high": 0.24, "neck": 0.08, "head": 0.12,
    "shoulder_half": 0.18, "hip_half": 0.09, "hip_drop": 0.06,
    "upper_arm": 0.28, "forearm": 0.25, "hand": 0.08, "hand_tip": 0.07, "thumb": 0.05,
    "thigh": 0.42, "shin": 0.40, "foot": 0.13, "ankle_height": 0.08,
}
_GROUP = {"upper_arm": "arm", "forearm": "arm", "hand": "arm", "hand_tip": "arm", "thumb": "arm",
          "thigh": "leg", "shin": "leg", "foot": "leg", "shoulder_half": "width", "hip_half": "width",
          "spine_low": "torso", "spine_high": "torso", "neck": "torso"}


def sample_shapes(rng: np.random.Generator, n: int) -> BodyShape:
    """``n`` bodies, more varied than version 1: height 1.45-1.95 m, factors +-10-15 %."""
    height = rng.uniform(1.4, 2.0, n)
    factors = {"arm": rng.uniform(0.88, 1.12, n), "leg": rng.uniform(0.88, 1.12, n),
               "width": rng.uniform(0.8, 1.25, n), "torso": rng.uniform(0.88, 1.12, n)}
    return BodyShape(**{name: length * (height / 1.75) * factors.get(_GROUP.get(name, ""), 1.0)
                        for name, length in _REFERENCE_SEGMENTS.items()})


def sample_styles(rng: np.random.Generator, n: int) -> Style:
    """``n`` performer styles, wider than version 1 (gesture size, tempo, posture)."""
    return Style(amplitude=rng.uniform(0.8, 1.2, n), speed=rng.uniform(0.7, 1.4, n),
                 lean=rng.uniform(-0.1, 0.3, n), head_pitch=rng.uniform(-0.15, 0.25, n),
                 arm_spread=rng.uniform(0.03, 0.3, n), stance=rng.uniform(0.06, 0.18, n),
                 sway=rng.uniform(0.005, 0.03, n))


# -- shared nuisances ------------------------------------------------------------------------
def _seat(ctx: ActionContext, ctl: Controls, draw: Draws, amount: np.ndarray) -> None:
    """Lower the body onto a chair by ``amount`` ``(P, T)`` in [0, 1] (0 standing, 1 seated),
    feet planted forward, in place."""
    shape = ctx.shape
    chair = draw(0.42, 0.52)                                           # seat height (m)
    seated_root = chair + shape.hip_drop                                # spine base when seated
    drop = (shape.standing_pelvis_height - seated_root)[:, None] * amount   # (P, T)
    ctl.root = ctl.root.copy()
    ctl.root[..., 1] -= drop
    feet_forward = draw(0.3, 0.45)[:, None] * amount                    # ankles move forward
    floor = shape.ankle_height[:, None] - ctl.root[..., 1]              # ankle height in the body frame
    for side, name in ((1.0, "ankle_l"), (-1.0, "ankle_r")):
        ankle = getattr(ctl, name).copy()
        ankle[..., 1] = floor
        ankle[..., 2] = ankle[..., 2] * (1.0 - amount) + feet_forward + 0.03 * amount
        ankle[..., 0] = ankle[..., 0] + side * 0.05 * amount
        setattr(ctl, name, ankle)
    ctl.lean = ctl.lean - 0.08 * amount


def _turn(ctx: ActionContext, ctl: Controls, draw: Draws) -> None:
    """Turn the body by up to ``TURN_MAX`` rad over a random stretch of the clip (survives
    the first-frame alignment of ``pre_normalize``), in place."""
    start, length = draw(0.0, 0.8), draw(0.1, 0.5)
    ctl.yaw = ctl.yaw + draw(-TURN_MAX, TURN_MAX)[:, None] * smoothstep((ctx.u - start[:, None]) / length[:, None])


def _left_hand_aside(ctx: ActionContext, ctl: Controls, draw: Draws) -> None:
    """With probability ``P_ASIDE`` the idle left hand goes somewhere unrelated for 10-30 %
    of the clip."""
    torso, reach = _torso(ctx.shape, ctl), _col(ctx.shape.arm_reach)
    direction = normalize(_vec(draw(0.0, 1.0), draw(-1.0, 0.6), draw(-0.3, 1.0)))
    goal = torso[L_SHOULDER] + draw(0.5, 0.95)[:, None, None] * reach * direction
    start, length = draw(-0.1, 0.85), draw(0.1, 0.3)
    rise = draw(0.04, 0.1)
    on = (draw(0.0, 1.0) < P_ASIDE)[:, None]
    env = on * envelope(ctx.u, start, rise, start + length, rise)
    ctl.wrist_l = _reach(ctl.wrist_l, goal, env, bulge=0.05)


def _base(ctx: ActionContext, draw: Draws, seated: bool | None = None,
          left_free: bool = True) -> tuple[Controls, np.ndarray]:
    """A performer with the version-2 nuisances: standing or sitting (``P_SEATED``),
    turning, and (``left_free``) the idle left hand sometimes aside. Returns
    ``(controls, seated (P,) bool)``."""
    position = np.stack([draw(-0.4, 0.4), np.zeros(ctx.num_clips), draw(-0.4, 0.4)], -1)
    ctl = standing(ctx, ctx.shape, ctx.style, draw, position, draw(-0.7, 0.7))
    sit = draw(0.0, 1.0) < P_SEATED if seated is None else np.full(ctx.num_clips, seated)
    _seat(ctx, ctl, draw, np.broadcast_to(sit[:, None].astype(float), ctl.yaw.shape))
    ctl.wrist_l, ctl.wrist_r = rest_wrists(ctx.shape, ctx.style, ctl)
    _turn(ctx, ctl, draw)
    if left_free:
        _left_hand_aside(ctx, ctl, draw)
    return ctl, sit


def _action_timing(draw: Draws) -> tuple[np.ndarray, ...]:
    """``(start, rise, stop, fall)`` of a gesture: under way from the first frame or
    starting early (``GESTURE_START``), and (``P_RETURN``) back at rest before the end."""
    start, rise = draw(*GESTURE_START), draw(0.08, 0.15)
    returns = draw(0.0, 1.0) < P_RETURN
    stop, fall = np.where(returns, draw(*GESTURE_STOP), 5.0), draw(0.08, 0.15)
    return start, rise, stop, fall


# -- the right hand moving at a site --------------------------------------------------------------
#: site -> (torso joint, offset of the hand's centre in the body frame (x left, y up,
#: z forward), elbow pole direction)
SITES: dict[str, tuple[int, tuple[float, float, float], tuple[float, float, float]]] = {
    "mouth": (HEAD, (-0.04, -0.10, 0.22), (-1.0, -0.8, 0.0)),
    "crown": (HEAD, (-0.06, 0.16, 0.06), (-1.0, 0.2, 0.0)),
    "chest": (SPINE_SHOULDER, (-0.04, -0.16, 0.30), (-0.6, -1.0, 0.2)),
    "overhead": (R_SHOULDER, (-0.12, 0.40, 0.18), (-1.0, 0.0, -0.3)),
    "front": (R_SHOULDER, (0.0, 0.0, 0.34), (-0.5, -1.0, 0.0)),
}
#: How the right hand moves at a site: ``(first axis, second axis, sense, waveform)`` in the
#: body frame (x left, y up, z forward). The hand follows ``f(phase) * first + sense *
#: cos(phase) * second`` with ``f`` a sine ("sine") or a train of short taps ("tap").
#: Clockwise and anticlockwise circles visit the same places (same mean pose, same frames)
#: and differ only in the order; a linear map of the body with a positive determinant
#: (most views and shears) keeps the sense.
PATTERNS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float], float, str]] = {
    "still": ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0), 0.0, "sine"),
    "side to side": ((1.0, 0.0, 0.0), (0.0, 0.0, 0.0), 0.0, "sine"),
    "up and down": ((0.0, 1.0, 0.0), (0.0, 0.0, 0.0), 0.0, "sine"),
    "tapping": ((0.0, 0.0, 1.0), (0.0, 0.0, 0.0), 0.0, "tap"),
    "circling clockwise": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), 1.0, "sine"),
    "circling anticlockwise": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), -1.0, "sine"),
}


def waveform(kind: str, angle: np.ndarray) -> np.ndarray:
    """``sin(angle)`` ("sine"), or short taps once per cycle ("tap"), both with mean ~0
    and range within [-1, 1]."""
    if kind == "sine":
        return np.sin(angle)
    x = np.mod(angle / (2 * np.pi), 1.0)
    bump = np.exp(-((x - 0.5) / (0.5 * TAP_WIDTH)) ** 2)
    mean = 0.5 * TAP_WIDTH * np.sqrt(np.pi)                # of the bump over a cycle
    return (bump - mean) / (1.0 - mean)


def _small_rotation(draw: Draws, max_angle: float) -> np.ndarray:
    """Random rotations ``(P, 3, 3)`` of up to ``max_angle`` rad about each axis."""
    return rot_x(draw(-max_angle, max_angle)) @ rot_y(draw(-max_angle, max_angle)) \
        @ rot_z(draw(-max_angle, max_angle))


def site_gesture(site: str, pattern: str) -> Callable[[ActionContext, Draws], list[Controls]]:
    """The action "right hand at ``site``, ``pattern``".

    All patterns of a site draw the hand's centre, size (``GESTURE_SIZE`` x style), tilt
    (``AXIS_TILT``), tempo (``GESTURE_CYCLES``) and timing from the same ranges, so
    neither the mean pose nor one frame tells them apart."""
    joint, offset, pole = SITES[site]
    first, second, sense, kind = PATTERNS[pattern]

    def make(ctx: ActionContext, draw: Draws) -> list[Controls]:
        ctl, _ = _base(ctx, draw)
        start, rise, stop, fall = _action_timing(draw)
        env = envelope(ctx.u, start, rise, stop, fall)                        # (P, T)
        torso = _torso(ctx.shape, ctl)
        jitter = _vec(draw(-0.02, 0.02), draw(-0.02, 0.02), draw(-0.02, 0.02))
        centre = torso[joint] + np.array(offset) + jitter                     # (P, T, 3)
        radius = 0.5 * draw(*GESTURE_SIZE) * ctx.style.amplitude              # (P,) half the size
        cycles, phase = draw(*GESTURE_CYCLES), draw(0.0, 2 * np.pi)
        span = np.maximum(np.minimum(stop, 1.0) - np.maximum(start, 0.0), 0.3)
        angle = 2 * np.pi * cycles[:, None] * np.clip((ctx.u - start[:, None]) / span[:, None], 0.0, None) \
            + phase[:, None]                                                   # (P, T)
        axes = np.einsum("pij,kj->pki", _small_rotation(draw, AXIS_TILT), np.stack([first, second]))
        wave = waveform(kind, angle)[..., None] * axes[:, None, 0] \
            + sense * np.cos(angle)[..., None] * axes[:, None, 1]
        drift = 0.01 * np.sin(2 * np.pi * draw(0.2, 0.6)[:, None] * ctx.u + draw(0, 6.3)[:, None])
        goal = centre + radius[:, None, None] * wave + drift[..., None] * UP
        ctl.wrist_r = _reach(ctl.wrist_r, goal, env)
        ctl.elbow_pole_r = _blend(ctl.elbow_pole_r, _vec(*pole) + _vec(0.0, draw(-0.3, 0.3), draw(-0.3, 0.3)), env)
        return [ctl]

    return make


# -- movements and their reversals -----------------------------------------------------------
def reversed_in_time(make: Callable[[ActionContext, Draws], list[Controls]]
                     ) -> Callable[[ActionContext, Draws], list[Controls]]:
    """The action ``make`` played backwards within each clip's valid frames."""

    def make_reversed(ctx: ActionContext, draw: Draws) -> list[Controls]:
        t = np.arange(len(ctx.t))[None, :]
        last = ctx.length[:, None] - 1
        index = np.where(t <= last, last - t, t)                               # (P, T)
        rows = np.arange(ctx.num_clips)[:, None]
        return [Controls(**{f.name: getattr(ctl, f.name)[rows, index] for f in dataclasses.fields(ctl)})
                for ctl in make(ctx, draw)]

    return make_reversed


def _transition(ctx: ActionContext, draw: Draws) -> np.ndarray:
    """A 0 -> 1 ramp ``(P, T)`` centred at 25-75 % of the clip (symmetric, so the reversed
    action has the same distribution of frames)."""
    centre, duration = draw(0.25, 0.75), draw(0.15, 0.35)
    return smoothstep((ctx.u - (centre - 0.5 * duration)[:, None]) / duration[:, None])


def raise_both_arms(ctx: ActionContext, draw: Draws) -> list[Controls]:
    """Both arms go from the sides to overhead (spread and forward tilt vary) and stay there."""
    ctl, _ = _base(ctx, draw, left_free=False)
    arms_overhead(ctx, ctl, draw, _transition(ctx, draw), reach_share=0.95, spread=(0.05, 0.5))
    return [ctl]


def sit_down(ctx: ActionContext, draw: Draws) -> list[Controls]:
    """From standing onto a chair: the pelvis drops, the torso bends forward on the way."""
    ctl, _ = _base(ctx, draw, seated=False)
    ramp = _transition(ctx, draw)
    _seat(ctx, ctl, draw, ramp)
    ctl.lean = ctl.lean + draw(0.3, 0.6)[:, None] * 4.0 * ramp * (1.0 - ramp)
    ctl.wrist_l, ctl.wrist_r = rest_wrists(ctx.shape, ctx.style, ctl)
    return [ctl]


def leg_move(kind: str) -> Callable[[ActionContext, Draws], list[Controls]]:
    """1-3 quick moves of the right leg in a random direction (forward +-70 degrees):
    ``kick`` (straight leg swung out), ``knee`` (thigh up, shin hanging), ``stomp`` (foot
    lifted a little, then stamped down fast); hands up in a guard for part of the clip."""

    def make(ctx: ActionContext, draw: Draws) -> list[Controls]:
        ctl, _ = _base(ctx, draw, seated=False)
        u = ctx.u
        duration = draw(0.12, 0.2) / ctx.style.speed * 30.0 / np.maximum(ctx.length - 1, 1)
        count = np.floor(draw(1.0, 3.999))
        pulse = np.zeros_like(u)
        for k in range(3):
            x = (u - draw(0.15, 0.85)[:, None]) / duration[:, None]          # in pulse widths
            if kind == "stomp":   # slow lift, sudden drop
                shape = np.where(x < 0, np.exp(-(x / 1.5) ** 2), np.exp(-(x / 0.25) ** 2))
            else:
                shape = np.exp(-x ** 2)
            pulse = np.maximum(pulse, (count > k)[:, None] * shape)
        heading = draw(-1.2, 1.2)
        aim = _vec(-np.sin(heading), 0.0, np.cos(heading))                  # horizontal, (P, 1, 3)
        hip = _torso(ctx.shape, ctl)[R_HIP]
        leg = _col(ctx.shape.leg_length)
        if kind == "kick":
            lift = draw(0.7, 1.2)[:, None, None]
            goal = hip + 0.98 * leg * (np.cos(lift) * -UP + np.sin(lift) * aim)
        elif kind == "knee":
            goal = hip + leg * (-0.45 * UP + 0.35 * aim)
        else:
            goal = ctl.ankle_r + 0.18 * leg * UP + 0.1 * leg * aim
        ctl.ankle_r = _blend(ctl.ankle_r, goal, pulse)
        ctl.lean = ctl.lean - 0.15 * pulse * np.cos(heading)[:, None]
        guard = envelope(u, *_action_timing(draw)) * draw(0.0, 1.0)[:, None]
        torso = _torso(ctx.shape, ctl)
        for side, name in ((1.0, "wrist_l"), (-1.0, "wrist_r")):
            goal = torso[SPINE_SHOULDER] + _vec(side * 0.12, 0.0, 0.3)
            setattr(ctl, name, _blend(getattr(ctl, name), goal, guard))
        return [ctl]

    return make


# -- the class list ---------------------------------------------------------------------------
_SITE_NAMES: dict[str, tuple[str, ...]] = {   # in the order of PATTERNS
    "mouth": ("drink water", "brush teeth", "eat meal", "blow kiss", "wipe face", "wipe face (other way)"),
    "crown": ("touch head", "scratch head", "comb hair", "pat head", "rub head", "rub head (other way)"),
    "chest": ("hand on heart", "rub chest", "smooth shirt", "tap chest", "stir pot", "stir pot (other way)"),
    "overhead": ("hold hand up", "wave", "pump fist", "knock overhead", "twirl", "twirl (other way)"),
    "front": ("point", "wag hand", "bounce ball", "knock on door", "polish window", "polish window (other way)"),
}


def _build() -> tuple[tuple[ActionSpec, ...], dict[str, tuple[str, ...]]]:
    actions, families = [], {}
    for site, names in _SITE_NAMES.items():
        family = f"hand at {site}"
        families[family] = names
        for name, pattern in zip(names, PATTERNS):
            actions.append(ActionSpec(name, pattern, f"right hand at the {site}, {pattern}",
                                      site_gesture(site, pattern)))
    families["both arms"] = ("raise both arms", "lower both arms")
    actions += [ActionSpec("raise both arms", "temporal order", "arms go from the sides to overhead",
                           raise_both_arms),
                ActionSpec("lower both arms", "temporal order", "arms come down from overhead",
                           reversed_in_time(raise_both_arms))]
    families["chair"] = ("sit down", "stand up")
    actions += [ActionSpec("sit down", "temporal order", "standing -> seated", sit_down),
                ActionSpec("stand up", "temporal order", "seated -> standing", reversed_in_time(sit_down))]
    families["right leg"] = ("kick", "knee strike", "stomp")
    actions += [ActionSpec("kick", "limb detail", "1-3 straight-leg kicks, any direction", leg_move("kick")),
                ActionSpec("knee strike", "limb detail", "1-3 knee raises, any direction", leg_move("knee")),
                ActionSpec("stomp", "tempo", "1-3 slow lifts of the foot, stamped down fast", leg_move("stomp"))]
    families["mutual"] = ("handshake", "walk towards each other", "walk apart")
    actions += [ActionSpec("handshake", "two-person", "two people face each other and shake right hands",
                           handshake, persons=2),
                ActionSpec("walk towards each other", "two-person, temporal order",
                           "two people 2-2.6 m apart walk until ~1 m apart", walk_towards, persons=2),
                ActionSpec("walk apart", "two-person, temporal order",
                           "two people ~1 m apart walk until 2-2.6 m apart", reversed_in_time(walk_towards),
                           persons=2)]
    return tuple(actions), families


#: The version-2 classes in label order (the two-person ones last) and their families.
ACTIONS, FAMILIES = _build()
FAMILY_OF: dict[str, str] = {name: family for family, names in FAMILIES.items() for name in names}


# -- sensor --------------------------------------------------------------------------------------
HAND_JOINTS = (L_WRIST, L_HAND, L_HAND_TIP, L_THUMB, R_WRIST, R_HAND, R_HAND_TIP, R_THUMB)
HAND_NOISE_FACTOR = 1.5        # hand joints are the noisiest in Kinect data
INFERRED_PULL = 0.3            # occluded joints drift this far towards their parent
P_DROPPED = 0.3                # clips with a joint collapsed onto its parent for a few frames
P_SWAPPED = 0.1                # clips with the two hands swapped for a few frames
P_FROZEN = 0.15                # clips with a few repeated (frozen) frames
START_ERROR = 0.05             # m: the first frame's torso joints are off by up to this (per axis)
START_JOINTS = (0, 1, 4, 8)    # spine base, spine middle, shoulders: what pre_normalize aligns on
#: hands, hand tips, thumbs and feet: the joints Kinect tracks worst; they jitter by
#: EXTREMITY_NOISE (m, per axis and frame) on top of the common noise
EXTREMITY_JOINTS = (L_HAND, L_HAND_TIP, L_THUMB, R_HAND, R_HAND_TIP, R_THUMB, L_FOOT, R_FOOT)
EXTREMITY_NOISE = 0.03


def sensor_artifacts(cam: np.ndarray, occluded: np.ndarray, length: np.ndarray,
                     rng: np.random.Generator) -> np.ndarray:
    """Version-2 tracking errors on camera-space clips, in place and returned.

    Args:
        cam: ``(N, M, T, 25, 3)`` float32 (noise already added).
        occluded: ``(N, M, T, 25)`` bool, joints hidden behind the torso.
        length: ``(N,)`` valid frames of each clip.
    """
    parent = cam[..., PARENTS, :]
    pull = np.where(occluded, np.float32(INFERRED_PULL), np.float32(0.0))[..., None]
    cam += pull * (parent - cam)
    n = len(cam)
    # tracking settles in the first frames: the torso joints the normalisation aligns on are
    # off at frame 0, so every clip ends up turned by its own small rotation
    cam[:, 0, 0, list(START_JOINTS)] += rng.uniform(-START_ERROR, START_ERROR, (n, len(START_JOINTS), 3)
                                                    ).astype(np.float32)
    cam[:, :, :, list(EXTREMITY_JOINTS)] += rng.normal(
        0.0, EXTREMITY_NOISE, cam[:, :, :, list(EXTREMITY_JOINTS)].shape).astype(np.float32)
    draws = rng.random((n, 10))
    for i in range(n):
        t_len = int(length[i])
        if t_len < 4:
            continue
        d = draws[i]
        if d[0] < P_DROPPED:                       # a joint collapses onto its parent
            joint = int(4 + d[1] * (len(PARENTS) - 4))
            start = int(d[2] * (t_len - 2))
            stop = min(t_len, start + 2 + int(d[3] * 10))
            cam[i, 0, start:stop, joint] = cam[i, 0, start:stop, PARENTS[joint]]
        if d[4] < P_SWAPPED:                       # left and right hand swapped
            start = int(d[5] * (t_len - 3))
            stop = min(t_len, start + 3 + int(d[6] * 8))
            left, right = list(HAND_JOINTS[:4]), list(HAND_JOINTS[4:])
            block = cam[i, 0, start:stop]                 # a view: (frames, 25, 3)
            block[:, left], block[:, right] = block[:, right].copy(), block[:, left].copy()
        if d[7] < P_FROZEN:                        # the sensor repeats a frame
            start = int(d[8] * (t_len - 3))
            stop = min(t_len, start + 2 + int(d[9] * 5))
            cam[i, :, start:stop] = cam[i, :, start:start + 1]
    return cam
