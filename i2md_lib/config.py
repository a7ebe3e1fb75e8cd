"""Typed configuration and the three scale profiles.

Every dataclass carries the *paper's* defaults (CMD reference code, see
``shared/reference/method-cmd-i2md.md``), so ``ExperimentConfig()`` is the
``full`` profile. The ``smoke`` and ``book`` profiles are small overrides of it:

* ``smoke`` -- seconds; used by the tests and by ``pytest --nbval-lax``.
* ``book``  -- minutes on a laptop CPU; what the built book shows.
* ``full``  -- the paper's settings, for a GPU and the real datasets.

The profile is chosen by, in order: an explicit ``profile=`` argument, the
environment variable ``I2MD_PROFILE``, and finally ``book``.

>>> cfg = ExperimentConfig.for_profile("smoke", {"pretrain.epochs": 3})
>>> cfg.pretrain.epochs
3
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

PROFILES: tuple[str, ...] = ("smoke", "book", "full")
PROFILE_ENV = "I2MD_PROFILE"
DEFAULT_PROFILE = "book"


def active_profile(name: str | None = None) -> str:
    """Return the profile to use: ``name``, else ``$I2MD_PROFILE``, else ``book``."""
    chosen = name or os.environ.get(PROFILE_ENV) or DEFAULT_PROFILE
    chosen = chosen.strip().lower()
    if chosen not in PROFILES:
        raise ValueError(
            f"unknown scale profile {chosen!r} (from "
            f"{'argument' if name else PROFILE_ENV}); choose one of {', '.join(PROFILES)}"
        )
    return chosen


@dataclass(frozen=True)
class SyntheticConfig:
    """Size and difficulty of the built-in synthetic skeleton-action dataset."""

    seed: int = 0
    num_subjects: int = 20          # performers; even/odd-ish split decides xsub
    num_cameras: int = 3            # horizontal views at -45, 0, +45 degrees
    repetitions: int = 2            # takes per (subject, camera, class)
    min_frames: int = 60            # shortest clip
    max_frames: int = 160           # longest clip
    stored_frames: int = 300        # T of the stored array (CMD layout pads to 300)
    noise_std: float = 0.01         # metres of Gaussian jitter per joint
    two_person: bool = True         # include the two-person classes
    version: int = 1                # 1: 13 classes that differ in pose; 2: 40 classes in families (data/README.md)
    test_every: int = 2             # xsub: every test_every-th subject is a test subject (2: alternate)


@dataclass(frozen=True)
class DataConfig:
    """Which dataset and split to read, and the clip length the model sees."""

    dataset: str = "synthetic"      # synthetic | ntu60 | ntu120 | pku1 | pku2
    benchmark: str = "xsub"         # xsub | xview (NTU-60, synthetic) | xset (NTU-120)
    root: str | None = None         # folder of preprocessed arrays (real datasets)
    window: int = 64                # frames after temporal crop-resize
    max_frames: int = 300           # frames kept from each stored clip
    mmap: bool = True               # memory-map the large arrays instead of loading them
    num_workers: int = 0            # DataLoader workers (0 = in the main process)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass(frozen=True)
class AugmentConfig:
    """The CMD pretraining augmentations, applied independently to both views."""

    crop_min_ratio: float = 0.1     # temporal crop length ratio ~ U(min, max)
    crop_max_ratio: float = 1.0
    p_joint_corruption: float = 0.5 # else shear: exactly one spatial augmentation
    corrupt_joints: int = 15        # joints picked by joint corruption
    p_zero_joints: float = 0.5      # within corruption: zero them, else random 3x3 map
    shear_amplitude: float = 1.0    # off-diagonal shear entries ~ U(-a, a)


@dataclass(frozen=True)
class EncoderConfig:
    """The sequence encoder and its projection head."""

    kind: str = "bigru_cmd"         # bigru_cmd (reference-exact, both cells causal) | bigru (true bidirectional)
    input_size: int = 150           # V * C * M = 25 * 3 * 2
    hidden_size: int = 1024
    num_layers: int = 3
    proj_hidden: int = 2048         # projection MLP: feature -> proj_hidden -> out_dim
    out_dim: int = 128
    recurrence: str = "nn_gru"      # bigru_cmd time stepping: nn_gru (whole-sequence calls) | loop (opt-in CPU path); same function

    @property
    def feature_dim(self) -> int:
        """Size of the representation used downstream (two cells x hidden)."""
        return 2 * self.hidden_size


@dataclass(frozen=True)
class PretrainConfig:
    """Self-supervised pretraining: method, MoCo/CMD settings and optimisation."""

    method: str = "cmd"             # moco | moco3 | posmining | cmd | i2md
    modality: str = "joint"         # stream trained by the single-modality method
    queue_size: int = 16384         # K
    momentum: float = 0.999         # key-encoder EMA
    temperature: float = 0.07       # InfoNCE temperature
    cmd_topk: int = 8192            # neighbours the teacher keeps
    cmd_tau_teacher: float = 0.05
    cmd_tau_student: float = 0.1
    cmd_weight: float = 1.0
    posmining_topk: int = 1         # CrosSCLR-style mined positives per sample
    posmining_start_epoch: int = 0  # epoch from which mined positives are used
    # I²MD (method "i2md"): only the paper's abstract is available, so every value
    # below is OUR choice (see i2md_lib/dna.py and Chapters 4-5 of the book).
    cluster_weight: float = 1.0     # weight of each modality's cluster-level (DNA) InfoNCE
    imd_weight: float = 1.0         # weight of intra-modal mutual distillation (both directions)
    imd_topk: int = 8192            # neighbours the IMD teacher keeps (as cmd_topk)
    dna_max_neighbors: int = 32     # candidate neighbours per anchor (0 disables DNA)
    dna_threshold: float = 0.5      # minimum cosine similarity of a kept neighbour
    dna_margin: float = 0.1         # kept neighbours lie within this of the best match (>= 2 disables)
    dna_tau: float = 0.1            # temperature of the aggregation weights
    dna_space: str = "cluster"      # rank neighbours in the cluster or the instance branch
    dna_warmup_epochs: int = 50     # plain instance contrast in the cluster branch before this epoch
    batch_size: int = 64
    epochs: int = 451
    lr: float = 0.01
    lr_milestones: tuple[int, ...] = (351,)
    lr_gamma: float = 0.1
    sgd_momentum: float = 0.9
    weight_decay: float = 1e-4
    seed: int = 42
    checkpoint_every: int = 10      # epochs between checkpoints
    amp: str = "none"               # none | bf16 | fp16
    device: str | None = None       # None: CUDA when available, else CPU


@dataclass(frozen=True)
class EvalConfig:
    """Downstream protocols: linear, kNN, semi-supervised and fine-tuning."""

    linear_lr: float = 0.1
    finetune_lr: float = 0.01
    epochs: int = 80
    lr_milestones: tuple[int, ...] = (50, 70)
    batch_size: int = 64
    weight_decay: float = 0.0
    eval_every: int = 5
    knn_k: tuple[int, ...] = (1, 20)
    test_crop_ratio: float = 0.95
    train_crop_range: tuple[float, float] = (0.5, 1.0)
    label_fractions: tuple[float, ...] = (0.01, 0.1)
    semi_seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    val_fraction: float = 0.1       # held out of the training split for model selection
    select_on: str = "val"          # val (ours, honest) | test (what the reference reports)
    seed: int = 0


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything one run needs. ``ExperimentConfig()`` is the paper (``full``)."""

    profile: str = "full"
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    # -- construction -------------------------------------------------
    @classmethod
    def for_profile(
        cls, profile: str | None = None, overrides: Mapping[str, Any] | None = None
    ) -> "ExperimentConfig":
        """The config of ``profile`` (see :func:`active_profile`) plus dotted ``overrides``."""
        name = active_profile(profile)
        cfg = cls(profile=name).replace(PROFILE_OVERRIDES[name])
        return cfg.replace(overrides or {})

    def replace(self, overrides: Mapping[str, Any]) -> "ExperimentConfig":
        """Return a copy with dotted keys replaced, e.g. ``{"pretrain.lr": 0.1}``."""
        cfg: Any = self
        for key, value in overrides.items():
            cfg = _replace_dotted(cfg, key.split("."), value, key)
        return cfg

    # -- serialisation -----------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ExperimentConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        flat = dict(_flatten(d))
        return cls().replace(flat)

    def digest(self) -> str:
        """A short stable hash of the whole config (cache keys, run names)."""
        blob = json.dumps(self.to_dict(), sort_keys=True, default=list)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _flatten(d: Mapping[str, Any], prefix: str = ""):
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            yield from _flatten(v, key + ".")
        else:
            yield key, v


def _replace_dotted(obj: Any, parts: list[str], value: Any, full_key: str) -> Any:
    names = {f.name: f for f in dataclasses.fields(obj)}
    head = parts[0]
    if head not in names:
        raise ValueError(f"unknown config key {full_key!r}: {type(obj).__name__} has no field {head!r}")
    if len(parts) == 1:
        current = getattr(obj, head)
        if dataclasses.is_dataclass(current) and isinstance(value, Mapping):
            value = _replace_dotted_many(current, value, full_key)
        elif isinstance(current, tuple) and isinstance(value, list):
            value = tuple(value)
        return dataclasses.replace(obj, **{head: value})
    child = getattr(obj, head)
    if not dataclasses.is_dataclass(child):
        raise ValueError(f"config key {full_key!r}: {head!r} is not a section")
    return dataclasses.replace(obj, **{head: _replace_dotted(child, parts[1:], value, full_key)})


def _replace_dotted_many(obj: Any, values: Mapping[str, Any], full_key: str) -> Any:
    for k, v in _flatten(values):
        obj = _replace_dotted(obj, k.split("."), v, f"{full_key}.{k}")
    return obj


#: What each profile changes relative to the paper's defaults.
PROFILE_OVERRIDES: dict[str, dict[str, Any]] = {
    "full": {},
    "book": {
        "data.window": 32,
        "data.max_frames": 120,
        "data.synthetic.min_frames": 40,
        "data.synthetic.max_frames": 120,
        "data.synthetic.stored_frames": 120,
        "encoder.hidden_size": 64,
        "encoder.num_layers": 2,
        "encoder.proj_hidden": 128,
        "encoder.out_dim": 64,
        "pretrain.queue_size": 512,
        "pretrain.cmd_topk": 256,
        "pretrain.imd_topk": 256,
        "pretrain.dna_max_neighbors": 8,
        "pretrain.dna_warmup_epochs": 5,
        "pretrain.batch_size": 64,
        "pretrain.epochs": 40,
        "pretrain.lr": 0.05,
        "pretrain.lr_milestones": (32,),
        "pretrain.momentum": 0.99,
        "pretrain.checkpoint_every": 10,
        "eval.epochs": 30,
        "eval.lr_milestones": (20, 26),
        "eval.eval_every": 5,
        "eval.semi_seeds": (0, 1, 2),
    },
    "smoke": {
        "data.window": 16,
        "data.max_frames": 48,
        "data.synthetic.num_subjects": 4,
        "data.synthetic.num_cameras": 3,
        "data.synthetic.repetitions": 1,
        "data.synthetic.min_frames": 20,
        "data.synthetic.max_frames": 48,
        "data.synthetic.stored_frames": 48,
        "encoder.hidden_size": 16,
        "encoder.num_layers": 2,
        "encoder.proj_hidden": 32,
        "encoder.out_dim": 16,
        "pretrain.queue_size": 64,
        "pretrain.cmd_topk": 32,
        "pretrain.imd_topk": 32,
        "pretrain.dna_max_neighbors": 4,
        "pretrain.dna_warmup_epochs": 1,
        "pretrain.batch_size": 16,
        "pretrain.epochs": 2,
        "pretrain.lr": 0.05,
        "pretrain.lr_milestones": (1,),
        "pretrain.momentum": 0.99,
        "pretrain.checkpoint_every": 1,
        "eval.epochs": 2,
        "eval.lr_milestones": (1,),
        "eval.eval_every": 1,
        "eval.semi_seeds": (0,),
    },
}
