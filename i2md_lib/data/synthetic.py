"""The built-in synthetic skeleton-action dataset, in the exact NTU RGB+D / CMD format.

Procedurally animated Kinect-v2 bodies (25 joints, :mod:`synthetic_motions`) perform
the classes of :data:`SYNTHETIC_CLASSES` (version 1) or of :mod:`synthetic_v2`
(``SyntheticConfig.version = 2``: 40 classes in families that share their mean pose,
more nuisances and tracking errors); each take is seen by ``num_cameras``
horizontal cameras at -45..+45 degrees, 2.5-3.5 m away, in camera-space metres
(``y`` up, ``z`` depth) with Gaussian joint noise. Samples are named
``S001CcccPpppRrrrAaaa`` so the NTU split rules apply unchanged (``xsub``: performers
in the NTU training list; ``xview``: cameras 2 and 3 train, camera 1 tests).
``xsub_val`` is for design decisions without the test split: the xsub training
subjects only, every :data:`VAL_EVERY`-th of them held out as its ``val`` part.
Version 1 stays byte-for-byte what it was.

Pipeline: :func:`generate_raw` (camera space, zero padded) -> the same
``preprocess.pre_normalize`` as real NTU -> ``store.save_split`` into
``{data root}/cache/synthetic/{config hash}/{benchmark}/`` (:func:`synthetic_split`).
:func:`write_skeleton_corpus` writes raw clips as real ``.skeleton`` text files.
``data/README.md`` is the dataset card.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import DATA_DIR_ENV, SyntheticConfig
from ..skeleton import MAX_BODIES, NUM_JOINTS
from ..utils import atomic_write
from . import ntu_format, preprocess, store, synthetic_v2
from .synthetic_motions import (
    ACTIONS, FPS, SPINE_BASE, SPINE_MID, SPINE_SHOULDER, ActionContext, ActionSpec, BodyShape,
    Draws, Style, pose_bodies, sample_shapes, sample_styles,
)

#: ``{SyntheticConfig.version: generator revision}``. Bump a dataset version's entry when
#: its generator changes what it produces: it is part of the cache key.
GENERATOR_VERSIONS: dict[int, int] = {1: 1, 2: 1}
GENERATOR_VERSION = GENERATOR_VERSIONS[1]   # version 1's (older callers)
#: Version 1's class names, label order (the two-person classes come last).
SYNTHETIC_CLASSES: tuple[str, ...] = tuple(a.name for a in ACTIONS)
BENCHMARKS: tuple[str, ...] = ("xsub", "xview", "xsub_val")
VAL_EVERY = 4                   # xsub_val: every 4th training subject validates

SETUP = 1                       # every synthetic sample is setup S001
CAMERA_DISTANCE = (2.5, 3.5)    # metres from the room centre
CAMERA_HEIGHT = (0.7, 1.3)      # metres above the floor
DEPTH_NOISE_FACTOR = 1.5        # Kinect depth (z) is noisier than x, y
OCCLUDED_NOISE_FACTOR = 3.0     # joints hidden behind the torso are "inferred", noisier
NOISE_CORRELATION = 0.8         # lag-1 correlation of the joint noise over frames
_RANDOM_DRAWS = 48              # uniform numbers reserved per take (see synthetic_motions.Draws), version 1
_MAX_PERFORMER = 106            # NTU performer IDs are P001..P106


# ----------------------------------------------------------------------------- design
def active_classes(cfg: SyntheticConfig) -> tuple[ActionSpec, ...]:
    """The classes ``cfg`` generates (of its version): all of them, or only the one-person ones."""
    actions = ACTIONS if cfg.version == 1 else synthetic_v2.ACTIONS
    return actions if cfg.two_person else tuple(a for a in actions if a.persons == 1)


def class_names(cfg: SyntheticConfig) -> tuple[str, ...]:
    """``class_names(cfg)[label]`` for the labels ``cfg`` produces."""
    return tuple(a.name for a in active_classes(cfg))


def performer_ids(num_subjects: int, test_every: int = 2) -> list[int]:
    """NTU performer IDs of the synthetic subjects: subject ``i`` is on the xsub test side
    when ``i % test_every == test_every - 1``, else in the training list (while IDs last),
    so both sides are non-empty from ``test_every`` subjects on.

    >>> performer_ids(4)
    [1, 3, 2, 6]
    >>> performer_ids(6, test_every=3)
    [1, 2, 3, 4, 5, 6]
    """
    train = sorted(ntu_format.TRAINING_SUBJECTS)
    test = [p for p in range(1, _MAX_PERFORMER + 1) if p not in ntu_format.TRAINING_SUBJECTS]
    if not 1 <= num_subjects <= len(train) + len(test):
        raise ValueError(f"synthetic.num_subjects must be 1..{len(train) + len(test)}, got {num_subjects}")
    if test_every < 2:
        raise ValueError(f"synthetic.test_every must be >= 2, got {test_every}")
    ids: list[int] = []
    for i in range(num_subjects):
        first, second = (test, train) if i % test_every == test_every - 1 else (train, test)
        ids.append((first or second).pop(0))
    return ids


def camera_angles(num_cameras: int) -> np.ndarray:
    """Horizontal angle (degrees) of cameras C001, C002, ... around the room centre."""
    if num_cameras == 1:
        return np.zeros(1)
    return np.linspace(-45.0, 45.0, num_cameras)


def validate(cfg: SyntheticConfig) -> None:
    """Raise ``ValueError`` naming the field when ``cfg`` cannot be generated."""
    problems = []
    if not 1 <= cfg.num_cameras <= 3:
        problems.append(f"num_cameras must be 1..3 (NTU cameras C001-C003), got {cfg.num_cameras}")
    if not 1 <= cfg.repetitions <= 2:
        problems.append(f"repetitions must be 1 or 2 (NTU replications R001-R002), got {cfg.repetitions}")
    if not 2 <= cfg.min_frames <= cfg.max_frames:
        problems.append(f"need 2 <= min_frames <= max_frames, got {cfg.min_frames}, {cfg.max_frames}")
    if cfg.stored_frames < 1:
        problems.append(f"stored_frames must be positive, got {cfg.stored_frames}")
    if cfg.noise_std < 0:
        problems.append(f"noise_std must be >= 0, got {cfg.noise_std}")
    if cfg.version not in GENERATOR_VERSIONS:
        problems.append(f"version must be one of {sorted(GENERATOR_VERSIONS)}, got {cfg.version}")
    if cfg.test_every < 2:
        problems.append(f"test_every must be >= 2, got {cfg.test_every}")
    if problems:
        raise ValueError("invalid SyntheticConfig: " + "; ".join(problems))
    performer_ids(cfg.num_subjects, cfg.test_every)


# ----------------------------------------------------------------------------- generation
@dataclass
class Takes:
    """One row per performed take (subject x replication x class), seen by every camera."""

    subject: np.ndarray      # (P,) 0-based subject index
    replication: np.ndarray  # (P,) 0-based
    action: np.ndarray       # (P,) 0-based label
    length: np.ndarray       # (P,) frames
    rand: np.ndarray         # (P, K) uniform draws private to the take


def _plan_takes(cfg: SyntheticConfig, num_classes: int) -> Takes:
    rows = [(s, r, a) for s in range(cfg.num_subjects) for r in range(cfg.repetitions)
            for a in range(num_classes)]
    lengths, rands = [], []
    draws = _RANDOM_DRAWS if cfg.version == 1 else synthetic_v2.RANDOM_DRAWS
    for s, r, a in rows:  # one small generator per take: a take does not depend on the others
        rng = np.random.default_rng([cfg.seed, 2, s, r, a])
        lengths.append(rng.integers(cfg.min_frames, cfg.max_frames + 1))
        rands.append(rng.random(draws))
    s, r, a = (np.array(c, dtype=np.int64) for c in zip(*rows))
    return Takes(s, r, a, np.array(lengths, dtype=np.int64), np.stack(rands))


def _subjects(cfg: SyntheticConfig) -> tuple[BodyShape, Style]:
    """Shapes and styles of the subjects ``(S,)``; subject ``i`` is the same for any ``num_subjects``."""
    shapes, styles = [], []
    module = synthetic_v2 if cfg.version == 2 else None
    for i in range(cfg.num_subjects):
        rng = np.random.default_rng([cfg.seed, 1, i])
        shapes.append((module.sample_shapes if module else sample_shapes)(rng, 1))
        styles.append((module.sample_styles if module else sample_styles)(rng, 1))
    return _concat(shapes), _concat(styles)


def _concat(items: list) -> BodyShape | Style:
    """Concatenate dataclasses of ``(1,)`` arrays field by field."""
    return type(items[0])(**{f.name: np.concatenate([getattr(x, f.name) for x in items])
                             for f in dataclasses.fields(items[0])})


def animate_takes(cfg: SyntheticConfig) -> tuple[Takes, np.ndarray]:
    """Every take in room coordinates, noise free.

    Returns:
        ``(takes, room)`` with ``room`` ``(P, M=2, T=max_frames, 25, 3)`` float64 metres
        (floor at ``y = 0``); the second body of one-person takes is zeros, and frames
        after a take's length are zeros.
    """
    validate(cfg)
    classes = active_classes(cfg)
    takes = _plan_takes(cfg, len(classes))
    shape, style = _subjects(cfg)
    partner = (takes.subject + 1) % cfg.num_subjects   # the partner is the next performer
    t = np.arange(cfg.max_frames) / FPS
    room = np.zeros((len(takes.action), MAX_BODIES, cfg.max_frames, NUM_JOINTS, 3))
    for label, spec in enumerate(classes):
        idx = np.flatnonzero(takes.action == label)
        ctx = ActionContext(shape.take(takes.subject[idx]), style.take(takes.subject[idx]),
                            shape.take(partner[idx]), style.take(partner[idx]),
                            t, takes.length[idx], takes.rand[idx])
        bodies = spec.make(ctx, Draws(ctx.rand))
        owners = (takes.subject[idx], partner[idx])
        for m, ctl in enumerate(bodies):
            room[idx, m] = pose_bodies(shape.take(owners[m]), ctl)
    valid = np.arange(cfg.max_frames)[None, :] < takes.length[:, None]      # (P, T)
    room *= valid[:, None, :, None, None]
    return takes, room


def _camera_frames(cfg: SyntheticConfig, num_takes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per take and camera: rotation rows (camera axes in the room) ``(P, C, 3, 3)`` and
    camera position ``(P, C, 3)``. Cameras look at the room centre, slightly pitched."""
    rng = np.random.default_rng([cfg.seed, 3])
    p, c = num_takes, cfg.num_cameras
    v1 = cfg.version == 1   # version 2: cameras placed more freely, like NTU's set-ups
    angle = np.deg2rad(camera_angles(c)[None, :] + rng.uniform(*((-5, 5) if v1 else (-12, 12)), (p, c)))
    dist = rng.uniform(*(CAMERA_DISTANCE if v1 else (2.0, 4.5)), (p, c))
    height = rng.uniform(*(CAMERA_HEIGHT if v1 else (0.5, 1.8)), (p, c))
    pitch = rng.uniform(*((-0.08, 0.08) if v1 else (-0.3, 0.3)), (p, c))
    out = np.stack([np.sin(angle), np.zeros_like(angle), np.cos(angle)], -1)   # room centre -> camera
    position = dist[..., None] * out
    position[..., 1] = height
    forward = -out * np.cos(pitch)[..., None]
    forward[..., 1] = np.sin(pitch)  # looking a little up (+) or down (-)
    up_hint = np.broadcast_to([0.0, 1.0, 0.0], forward.shape)
    x_axis = np.cross(up_hint, forward)           # the sensor's left
    x_axis /= np.linalg.norm(x_axis, axis=-1, keepdims=True)
    y_axis = np.cross(forward, x_axis)
    return np.stack([x_axis, y_axis, forward], -2), position


def occluded_joints(cam: np.ndarray) -> np.ndarray:
    """Joints hidden behind the torso from the camera: ``(..., 25, 3)`` camera space ->
    ``(..., 25)`` bool. A joint is hidden when it is more than 8 cm deeper than the spine
    and inside the torso's silhouette."""
    centre = cam[..., SPINE_MID:SPINE_MID + 1, :]
    top = cam[..., SPINE_SHOULDER:SPINE_SHOULDER + 1, 1]
    bottom = cam[..., SPINE_BASE:SPINE_BASE + 1, 1]
    behind = cam[..., 2] > centre[..., 2] + 0.08
    inside = (np.abs(cam[..., 0] - centre[..., 0]) < 0.2) \
        & (cam[..., 1] < top + 0.05) & (cam[..., 1] > bottom - 0.1)
    return behind & inside


def correlated_noise(rng: np.random.Generator, shape: tuple[int, ...], rho: float,
                     time_axis: int = 3) -> np.ndarray:
    """Unit-variance Gaussian noise, AR(1) along ``time_axis`` with lag-1 correlation
    ``rho`` (Kinect jitter is smooth over a few frames, not white) -> float32 ``shape``."""
    white = np.moveaxis(rng.standard_normal(shape, dtype=np.float32), time_axis, 0)
    out = np.empty_like(white)
    out[0] = white[0]
    keep, fresh = np.float32(rho), np.float32(np.sqrt(1.0 - rho * rho))
    for t in range(1, len(white)):
        out[t] = keep * out[t - 1] + fresh * white[t]
    return np.moveaxis(out, 0, time_axis)


def generate_camera_space(cfg: SyntheticConfig, noise: bool = True
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], np.ndarray]:
    """All clips in camera space at ``max_frames`` frames.

    Returns:
        ``(cam, num_frame, labels, names, occluded)``: ``cam`` ``(N, M=2, T, 25, 3)``
        float32 metres (zeros where no body / after the clip), ``occluded`` ``(N, M, T, 25)``.
        Clip ``n`` is take ``n // num_cameras`` seen by camera ``n % num_cameras + 1``.
    """
    takes, room = animate_takes(cfg)
    rot, position = _camera_frames(cfg, len(takes.action))
    present = (room != 0).any(axis=(-2, -1))                                   # (P, M, T)
    p, c = rot.shape[:2]
    flat = room.astype(np.float32).reshape(p, 1, -1, 3)                      # (P, 1, M*T*V, 3)
    to_camera = rot.transpose(0, 1, 3, 2).astype(np.float32)                 # (P, C, 3, 3)
    cam = (flat - position[:, :, None, :].astype(np.float32)) @ to_camera     # (P, C, M*T*V, 3)
    cam = cam.reshape((p, c) + room.shape[1:])                                # (P, C, M, T, V, 3)
    occluded = occluded_joints(cam) & present[:, None, :, :, None]
    if noise and cfg.noise_std > 0:
        rng = np.random.default_rng([cfg.seed, 4])
        scale = np.array([1.0, 1.0, DEPTH_NOISE_FACTOR]) * cfg.noise_std
        jitter = correlated_noise(rng, cam.shape, NOISE_CORRELATION) * scale.astype(np.float32)
        jitter *= np.where(occluded, OCCLUDED_NOISE_FACTOR, 1.0).astype(np.float32)[..., None]
        if cfg.version == 2:
            jitter[..., synthetic_v2.HAND_JOINTS, :] *= np.float32(synthetic_v2.HAND_NOISE_FACTOR)
        cam += jitter
        if cfg.version == 2:
            flat = cam.reshape((-1,) + cam.shape[2:])                             # (P*C, M, T, V, 3)
            synthetic_v2.sensor_artifacts(flat, occluded.reshape((-1,) + occluded.shape[2:]),
                                          np.repeat(takes.length, c), np.random.default_rng([cfg.seed, 6]))
    cam *= present[:, None, :, :, None, None]
    n = len(takes.action)
    ids = performer_ids(cfg.num_subjects, cfg.test_every)
    names = [f"S{SETUP:03d}C{ci + 1:03d}P{ids[s]:03d}R{r + 1:03d}A{a + 1:03d}"
             for s, r, a in zip(takes.subject, takes.replication, takes.action) for ci in range(c)]
    return (cam.reshape((n * c,) + cam.shape[2:]).astype(np.float32), np.repeat(takes.length, c),
            np.repeat(takes.action, c), names, occluded.reshape((n * c,) + occluded.shape[2:]))


def generate_raw(cfg: SyntheticConfig, noise: bool = True
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """The whole dataset in camera space, in the CMD array layout.

    Returns:
        ``(raw, num_frame, labels, names)``: ``raw`` ``(N, 3, stored_frames, 25, 2)``
        float32 metres, zero after ``num_frame[n]`` frames and for absent bodies;
        ``num_frame`` ``(N,)`` int64; ``labels`` ``(N,)`` int64 0-based; ``names`` in the
        ``SsssCcccPpppRrrrAaaa`` scheme. ``noise=False`` leaves out the joint noise.
    """
    cam, length, labels, names, _ = generate_camera_space(cfg, noise)
    keep = min(cfg.stored_frames, cfg.max_frames)
    raw = np.zeros((len(cam), 3, cfg.stored_frames, NUM_JOINTS, MAX_BODIES), dtype=np.float32)
    raw[:, :, :keep] = cam[:, :, :keep].transpose(0, 4, 2, 3, 1)  # (N, M, T, V, C) -> (N, C, T, V, M)
    num_frame = np.minimum(length, cfg.stored_frames).astype(np.int64)
    return raw, num_frame, labels.astype(np.int64), names


def generate(cfg: SyntheticConfig, benchmark: str = "xsub"
             ) -> tuple[store.SkeletonArrays, store.SkeletonArrays]:
    """Generate and normalise (no cache): the ``(train, val)`` splits of ``benchmark``."""
    parts = _split(*_normalised(cfg), benchmark)
    for part in store.PARTS:
        if part not in parts:
            raise ValueError(_empty_part_message(benchmark, part))
    return parts["train"], parts["val"]


def _empty_part_message(benchmark: str, part: str) -> str:
    return (f"the synthetic {benchmark} benchmark has no {part!r} clips with this config "
            f"(xsub needs num_subjects >= test_every, xview needs num_cameras >= 2, "
            f"xsub_val needs 2 training subjects)")


def _normalised(cfg: SyntheticConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """:func:`generate_raw` followed by the NTU normalisation (``preprocess.pre_normalize``),
    then the residual distortions of :func:`residual_distortions` (when the config asks)."""
    raw, num_frame, labels, names = generate_raw(cfg)
    data = preprocess.pre_normalize(raw)
    if cfg.residual_rotation > 0 or cfg.axis_stretch > 0:
        data = distort(data, residual_distortions(cfg, names))
    return data, num_frame, labels, names


def residual_distortions(cfg: SyntheticConfig, names: list[str]) -> np.ndarray:
    """``(N, 3, 3)`` float64: one linear map per clip, what the normalisation leaves of the view
    and the build of the body.

    ``pre_normalize`` turns every clip so that its frame-0 spine and shoulders lie on fixed
    axes; on real data those joints are noisy and the bodies differ in build, so clips keep
    a view and a shape of their own. Here the map of a clip is a rotation by
    ``U(-residual_rotation, residual_rotation)`` about a uniformly random axis, after a
    stretch of each axis by ``U(1 - axis_stretch, 1 + axis_stretch)``. Each clip's draw
    depends only on ``cfg.seed`` and its name, so a clip keeps its map whatever else the
    config generates. These maps lie in the family the pretraining augmentations sample
    (shear: a random linear map), which is why pretraining can learn to ignore them.
    """
    maps = np.empty((len(names), 3, 3))
    for i, name in enumerate(names):
        n = ntu_format.parse_name(name)
        rng = np.random.default_rng([cfg.seed, 8, n.setup, n.camera, n.subject, n.replication, n.action])
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        angle = rng.uniform(-cfg.residual_rotation, cfg.residual_rotation)
        stretch = rng.uniform(1.0 - cfg.axis_stretch, 1.0 + cfg.axis_stretch, 3)
        maps[i] = _axis_angle_matrix(axis, angle) @ np.diag(stretch)
    return maps


def _axis_angle_matrix(axis: np.ndarray, angle: float) -> np.ndarray:
    """``(3, 3)`` rotation by ``angle`` rad about the unit vector ``axis`` (Rodrigues)."""
    k = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    return np.eye(3) + np.sin(angle) * k + (1.0 - np.cos(angle)) * k @ k


def distort(data: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """``data (N, 3, T, V, M)`` with clip ``n``'s coordinates mapped by ``maps[n]`` ``(3, 3)``;
    float32. Absent bodies and padding stay zero (the maps are linear)."""
    if maps.shape != (len(data), 3, 3):
        raise ValueError(f"need one (3, 3) map per clip, got {maps.shape} for {len(data)} clips")
    out = np.empty(data.shape, dtype=np.float32)
    for n in range(len(data)):  # clip by clip: the whole-array einsum would double the memory peak
        out[n] = np.einsum("ij,jtvm->itvm", maps[n], data[n])
    return out


def _split(data: np.ndarray, num_frame: np.ndarray, labels: np.ndarray, names: list[str],
           benchmark: str) -> dict[str, store.SkeletonArrays]:
    """The non-empty parts of ``benchmark`` under the NTU split rules (``ntu_format.is_training``);
    ``xsub_val`` splits the xsub training part (:func:`validation_mask`)."""
    if benchmark not in BENCHMARKS:
        raise ValueError(f"synthetic data has benchmarks {', '.join(BENCHMARKS)}, not {benchmark!r}")
    if benchmark == "xsub_val":
        keep = np.flatnonzero([ntu_format.is_training(n, "xsub") for n in names])
        data, num_frame, labels, names = data[keep], num_frame[keep], labels[keep], [names[i] for i in keep]
        train = ~validation_mask(names)
    else:
        train = np.array([ntu_format.is_training(n, benchmark) for n in names])
    parts = {}
    for part, mask in (("train", train), ("val", ~train)):
        idx = np.flatnonzero(mask)
        if len(idx):  # e.g. xview with a single camera has no training part
            parts[part] = store.SkeletonArrays(data[idx], num_frame[idx], labels[idx],
                                               [names[i] for i in idx])
    return parts


def validation_mask(names: list[str]) -> np.ndarray:
    """``(N,)`` bool: the clips of every :data:`VAL_EVERY`-th performer (in ID order) among
    those in ``names`` -- the held-out subjects of ``xsub_val``. With fewer than
    :data:`VAL_EVERY` performers (the tiny ``smoke`` data) every second one is held out."""
    performers = np.array([ntu_format.parse_name(n).subject for n in names])
    subjects = np.unique(performers)
    every = VAL_EVERY if len(subjects) >= VAL_EVERY else 2
    return np.isin(performers, subjects[every - 1::every])


# ----------------------------------------------------------------------------- cache
def data_root() -> Path:
    """``$I2MD_DATA_DIR``, else the repository's ``data/`` folder."""
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env).expanduser() if env else Path(__file__).resolve().parents[2] / "data"


def config_hash(cfg: SyntheticConfig) -> str:
    """Short stable hash of ``cfg``, :data:`GENERATOR_VERSION` and the source of the
    generator and the normalisation (the cache key): editing the code that makes the
    data never serves a stale cache."""
    blob = json.dumps({"generator_version": GENERATOR_VERSIONS.get(cfg.version), "code": _code_fingerprint(),
                       **dataclasses.asdict(cfg)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _code_fingerprint() -> str:
    here = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for name in ("synthetic.py", "synthetic_motions.py", "synthetic_v2.py", "preprocess.py"):
        digest.update((here / name).read_bytes())
    return digest.hexdigest()[:16]


def cache_folder(cfg: SyntheticConfig, cache_dir: str | Path | None = None) -> Path:
    """``{cache_dir or data_root()/cache/synthetic}/{config_hash(cfg)}``."""
    base = Path(cache_dir) if cache_dir is not None else data_root() / "cache" / "synthetic"
    return base / config_hash(cfg)


_DONE_MARKER = "complete.json"


def synthetic_split(syn_cfg: SyntheticConfig, benchmark: str, part: str,
                    cache_dir: str | Path | None = None, mmap: bool = True) -> store.SkeletonArrays:
    """One normalised split, generated and cached on first use, then loaded from the cache.

    The first call writes both benchmarks and parts (each file atomically, then a
    ``complete.json`` marker), so concurrent first calls only duplicate work.
    """
    if benchmark not in BENCHMARKS:
        raise ValueError(f"synthetic data has benchmarks {', '.join(BENCHMARKS)}, not {benchmark!r}")
    if part not in store.PARTS:
        raise ValueError(f"part must be one of {store.PARTS}, got {part!r}")
    folder = cache_folder(syn_cfg, cache_dir)
    if not (folder / _DONE_MARKER).is_file():
        normalised = _normalised(syn_cfg)
        sizes = {}
        for bench in BENCHMARKS:  # one benchmark at a time: bounds the copies in memory
            parts = _split(*normalised, bench)
            for name, arrays in parts.items():
                store.save_split(folder / bench, name, arrays)
            sizes[bench] = {name: len(arrays) for name, arrays in parts.items()}
            del parts
        meta = {"generator_version": GENERATOR_VERSIONS[syn_cfg.version], "config": dataclasses.asdict(syn_cfg),
                "classes": list(class_names(syn_cfg)), "clips": sizes}
        atomic_write(folder / _DONE_MARKER, lambda p: p.write_text(json.dumps(meta, indent=1)))
    bench_folder = folder / benchmark
    if not store.split_paths(bench_folder, part)["label"].is_file():
        raise ValueError(f"{bench_folder}: {_empty_part_message(benchmark, part)}")
    return store.load_split(bench_folder, part, mmap=mmap, num_classes=len(class_names(syn_cfg)))


# ----------------------------------------------------------------------------- .skeleton corpus
_BODY_ID_BASE = 72057594037927936  # 2**56: real Kinect IDs are 17-digit numbers above 2**53


@dataclass
class CorpusClip:
    """One clip of the ``.skeleton`` corpus: what is written, and the clean arrays behind it.

    ``raw``: ``(3, T, 25, 2)`` float32 camera-space metres of the two real bodies;
    ``present``: ``(T, 3)`` which bodies the file lists in each frame (the two real ones,
    then the noise body; bodies are listed in that order); ``skeleton``: the file content."""

    name: str
    label: int
    raw: np.ndarray
    present: np.ndarray
    skeleton: ntu_format.SkeletonFile


def make_skeleton_corpus(n: int, seed: int = 0, min_frames: int = 16, max_frames: int = 40
                         ) -> list[CorpusClip]:
    """``n`` raw clips as ``.skeleton`` contents, cycling through the classes.

    Clips get a leading or middle frame with 0 bodies, and some an extra low-activity
    "noise" body (a chair, say) for a few frames, as in the real files, so parsing and
    body selection are exercised. Joint fields depthX/Y, colorX/Y are pinhole projections
    of xyz; occluded joints have trackingState 1 (inferred), the others 2.
    """
    num_classes = len(ACTIONS)
    most = 2 * _MAX_PERFORMER * num_classes
    if not 1 <= n <= most:
        raise ValueError(f"the .skeleton corpus holds 1..{most} clips (NTU performer and "
                         f"replication IDs run out), asked for {n}")
    reps = 1 if n <= _MAX_PERFORMER * num_classes else 2
    subjects = max(2, -(-n // (reps * num_classes)))
    cfg = SyntheticConfig(seed=seed, num_subjects=subjects, num_cameras=3, repetitions=reps,
                          min_frames=min_frames, max_frames=max_frames, stored_frames=max_frames)
    cam, length, labels, names, occluded = generate_camera_space(cfg)
    rng = np.random.default_rng([seed, 5])
    # clip k: take k (class k % classes) seen by camera k % 3
    order = [k * 3 + k % 3 for k in range(n)]
    clips = []
    for i in order:
        t = int(length[i])
        xyz = cam[i, :, :t].transpose(1, 0, 2, 3).astype(np.float64)        # (T, M, 25, 3)
        noise_frames = np.zeros((t, 1), dtype=bool)
        if rng.random() < 0.6:                        # a static object seen as a body
            start = int(rng.integers(0, t - 3))
            noise_frames[start:start + int(rng.integers(2, 6))] = True
        present = np.concatenate([(xyz != 0).any(axis=(2, 3)), noise_frames], axis=1)   # (T, 3)
        if rng.random() < 0.5:
            present[0] = False                        # tracking starts a frame late
        present[rng.integers(1, t)] = False           # a frame where nobody was tracked
        spot = xyz[:, 0, 0].mean(axis=0) + [rng.uniform(-1, 1), -0.5, rng.uniform(0.3, 1.0)]
        chair = spot + rng.uniform(-0.08, 0.08, (NUM_JOINTS, 3))              # a compact blob
        chair = chair + 0.003 * rng.standard_normal((t, NUM_JOINTS, 3))
        all_xyz = np.concatenate([xyz, chair[:, None]], axis=1)               # (T, 3, 25, 3)
        ids = _BODY_ID_BASE + rng.integers(1, 10**5, 3, dtype=np.int64).astype(np.uint64)
        skel = ntu_format.SkeletonFile.from_dense(all_xyz, ids.tolist(), present)
        hidden = np.concatenate([occluded[i, :, :t].transpose(1, 0, 2),
                                 np.zeros((t, 1, NUM_JOINTS), bool)], axis=1)       # (T, 3, 25)
        _fill_sensor_fields(skel, hidden, present, rng)
        raw = cam[i, :, :t].transpose(3, 1, 2, 0).copy()                      # (3, T, 25, 2)
        clips.append(CorpusClip(names[i], int(labels[i]), raw, present, skel))
    return clips


def _fill_sensor_fields(skel: ntu_format.SkeletonFile, occluded: np.ndarray, present: np.ndarray,
                        rng: np.random.Generator) -> None:
    """Depth/colour pixels (pinhole model of Kinect v2), tracking states and body info, in place."""
    xyz = skel.joints[..., :3]
    depth = np.maximum(xyz[..., 2], 0.1)
    skel.joints[..., 3] = 256.0 + 365.0 * xyz[..., 0] / depth     # 512 x 424 depth image
    skel.joints[..., 4] = 212.0 - 365.0 * xyz[..., 1] / depth
    skel.joints[..., 5] = 960.0 + 1060.0 * xyz[..., 0] / depth    # 1920 x 1080 colour image
    skel.joints[..., 6] = 540.0 - 1060.0 * xyz[..., 1] / depth
    skel.joints[..., 7] = 1.0                                      # identity orientation
    skel.joints[..., 11] = np.where(occluded[present], 1, 2)
    b = len(skel.body_ids)
    skel.body_info[:, 1:5] = rng.integers(0, 2, (b, 4))            # hand confidences / states
    skel.body_info[:, 6:8] = rng.uniform(-0.1, 0.1, (b, 2))        # leanX, leanY


def write_skeleton_corpus(folder: str | Path, n: int, seed: int = 0, min_frames: int = 16,
                          max_frames: int = 40) -> list[Path]:
    """Write ``n`` clips of :func:`make_skeleton_corpus` as ``{folder}/{name}.skeleton``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return [ntu_format.write_skeleton(folder / f"{clip.name}.skeleton", clip.skeleton)
            for clip in make_skeleton_corpus(n, seed, min_frames, max_frames)]
