"""Typed configuration and the three scale profiles.

Every dataclass carries the *paper's* defaults (the scripts of the CMD reference code,
https://github.com/maoyunyao/CMD; Mao et al., ECCV 2022, arXiv 2208.12448), so
``ExperimentConfig()`` is the ``full`` profile. The ``smoke`` and ``book`` profiles are
small overrides of it:

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
import math
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from .skeleton import LAYOUTS, NTU25, Layout

PROFILES: tuple[str, ...] = ("smoke", "book", "full")
DEFAULT_PROFILE = "book"

# -- the choices of the config's text fields (checked by the dataclasses below) --------
#: Pretraining methods (``pretrain.method``); ``i2md_lib.methods`` composes their losses.
METHODS: tuple[str, ...] = ("moco", "moco3", "posmining", "cmd", "i2md")
#: Skeleton streams (``pretrain.modality``); ``i2md_lib.data.modalities`` computes them.
MODALITIES: tuple[str, ...] = ("joint", "motion", "bone")
#: Encoder kinds (``encoder.kind``); ``i2md_lib.models.encoders.ENCODER_KINDS`` builds them.
ENCODER_KINDS: tuple[str, ...] = ("bigru_cmd", "bigru")
#: Time stepping of ``bigru_cmd`` (``encoder.recurrence``; ``i2md_lib.models.encoders`` resolves ``auto``).
RECURRENCES: tuple[str, ...] = ("auto", "nn_gru", "loop", "grouped", "fused", "fused_c")
#: Mixed precision of pretraining (``pretrain.amp``).
AMP_MODES: tuple[str, ...] = ("none", "bf16", "fp16")
#: BatchNorm with several processes (``pretrain.dist_bn``): statistics of the global batch
#: (the same numbers as one process) or MoCo's shuffle BN.
DIST_BN_MODES: tuple[str, ...] = ("global", "shuffle")
#: DNA's neighbour gates (``pretrain.dna_gate``, see ``i2md_lib.dna``).
DNA_GATES: tuple[str, ...] = ("zscore", "fixed")
#: Where DNA ranks neighbours (``pretrain.dna_space``).
DNA_SPACES: tuple[str, ...] = ("cluster", "instance")
#: Split that picks the reported epoch of a probe (``eval.select_on``).
SELECT_ON: tuple[str, ...] = ("val", "test", "last")
#: Benchmarks of each dataset (``data.dataset`` -> the choices of ``data.benchmark``).
BENCHMARKS: dict[str, tuple[str, ...]] = {
    "synthetic": ("xsub", "xview", "xsub_val"),
    "ntu60": ("xsub", "xview"),
    "ntu120": ("xsub", "xset"),
    "pku1": ("xsub", "xview"),
    "pku2": ("xsub", "xview"),
    # MSR Action3D: cross-subject (odd subjects train), and xsub_val for every choice (training
    # subjects only, one of them held out: data/msr.py)
    "msr": ("xsub", "xsub_val"),
}
DATASETS: tuple[str, ...] = tuple(BENCHMARKS)
#: The skeleton layout of each dataset (``i2md_lib.skeleton.LAYOUTS``).
DATASET_LAYOUTS: dict[str, str] = {"synthetic": "ntu25", "ntu60": "ntu25", "ntu120": "ntu25",
                                   "pku1": "ntu25", "pku2": "ntu25", "msr": "kinect_v1"}
#: Values per frame the encoders read on the NTU layout: 25 joints x 3 coordinates x 2 bodies
#: (another dataset's: ``DataConfig.layout.frame_values``).
FRAME_VALUES = NTU25.frame_values
#: Config values that follow the dataset's layout: when an override changes ``data.dataset``
#: and does not set them itself, they take the new dataset's values (``ExperimentConfig.replace``).
#: Joint corruption picks 15 of NTU's 25 joints in the CMD reference; 12 of 20 keeps the share.
LAYOUT_DEFAULTS: dict[str, dict[str, Any]] = {
    name: {"encoder.input_size": layout.frame_values,
           "augment.corrupt_joints": round(15 * layout.num_joints / NTU25.num_joints)}
    for name, layout in LAYOUTS.items()
}
#: NTU RGB+D performer IDs are P001..P106 (the synthetic subjects take theirs).
MAX_SUBJECTS = 106
#: Seeds go to ``numpy.random.seed``, which takes 0 .. 2**32 - 1.
MAX_SEED = 2**32 - 1

#: Values a config saved *before* a field existed ran with, when they differ from today's
#: default: ``ExperimentConfig.from_dict`` fills them in, so an old run is neither
#: mistaken for one of today's default nor reported as changed by the new field.
LEGACY_DEFAULTS: dict[str, Any] = {"pretrain.dna_gate": "fixed"}

# -- environment variables the library reads (each read in one place)
PROFILE_ENV = "I2MD_PROFILE"          # scale profile (active_profile)
DEVICE_ENV = "I2MD_DEVICE"            # cpu | cuda | cuda:1 ... (utils.get_device)
DATA_DIR_ENV = "I2MD_DATA_DIR"        # where the synthetic data cache lives
RESULTS_DIR_ENV = "I2MD_RESULTS_DIR"  # result files of the experiment suites
RUNS_DIR_ENV = "I2MD_RUNS_DIR"        # run folders (checkpoints, logs)
DATASET_ENV = "I2MD_DATASET"          # full-scale cells: dataset, benchmark and folder
BENCHMARK_ENV = "I2MD_BENCHMARK"
DATA_ROOT_ENV = "I2MD_DATA_ROOT"

#: The repository root (editable install); default home of ``results/`` and ``runs/``.
REPO_ROOT = Path(__file__).resolve().parents[1]


def results_root() -> Path:
    """Folder of the experiment result files: ``$I2MD_RESULTS_DIR``, else ``<repo>/results``."""
    return Path(os.environ.get(RESULTS_DIR_ENV) or REPO_ROOT / "results")


def runs_root() -> Path:
    """Folder of run folders: ``$I2MD_RUNS_DIR``, else ``<repo>/runs``."""
    return Path(os.environ.get(RUNS_DIR_ENV) or REPO_ROOT / "runs")


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None


def launch_environment() -> dict[str, int]:
    """``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE`` as torchrun sets them
    (defaults: one process). The only place that reads torchrun's variables."""
    world = _env_int("WORLD_SIZE", 1)
    return {"rank": _env_int("RANK", 0), "world_size": world, "local_rank": _env_int("LOCAL_RANK", 0),
            "local_world_size": _env_int("LOCAL_WORLD_SIZE", world)}


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


# -- checks shared by the dataclasses' __post_init__ ----------------------------------
class ConfigError(ValueError):
    """A config value of the wrong type or out of range; the message names the dotted key."""


class _Fields:
    """Checks the fields of one config dataclass in its ``__post_init__``.

    Each method reads a field, raises :class:`ConfigError` naming ``<section>.<field>``
    when it is wrong, and stores the value in its normal form (``1`` -> ``1.0`` in a
    float field, ``3.0`` -> ``3`` in an integer one, a list -> a tuple).
    """

    def __init__(self, obj: Any, section: str) -> None:
        self.obj, self.section = obj, section

    def key(self, name: str) -> str:
        return f"{self.section}.{name}" if self.section else name

    def fail(self, name: str, problem: str) -> None:
        raise ConfigError(f"{self.key(name)} {problem}, got {getattr(self.obj, name)!r}")

    def _store(self, name: str, value: Any) -> None:
        object.__setattr__(self.obj, name, value)   # frozen dataclass: normal form only

    def integer(self, name: str, lo: int | None = None, hi: int | None = None) -> int:
        value = to_int(self.key(name), getattr(self.obj, name))
        _check_range(self.key(name), value, lo, hi)
        self._store(name, value)
        return value

    def number(self, name: str, lo: float | None = None, hi: float | None = None,
               lo_open: bool = False, hi_open: bool = False) -> float:
        value = to_float(self.key(name), getattr(self.obj, name))
        _check_range(self.key(name), value, lo, hi, lo_open, hi_open)
        self._store(name, value)
        return value

    def boolean(self, name: str) -> bool:
        value = getattr(self.obj, name)
        if not isinstance(value, bool):
            self.fail(name, "must be true or false")
        return value

    def choice(self, name: str, choices: Iterable[str], context: str = "") -> str:
        value, choices = getattr(self.obj, name), tuple(choices)
        if not isinstance(value, str) or value not in choices:
            self.fail(name, f"must be one of {', '.join(choices)}{context}")
        return value

    def optional_text(self, name: str) -> str | None:
        value = getattr(self.obj, name)
        if value is None:
            return None
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        elif isinstance(value, numbers.Number) and not isinstance(value, bool):
            value = str(value)          # --set data.root=2024: YAML reads a number
        if not isinstance(value, str) or not value.strip():
            self.fail(name, "must be a non-empty text or null")
        self._store(name, value)
        return value

    def integers(self, name: str, lo: int | None = None, hi: int | None = None,
                 length: int | None = None) -> tuple[int, ...]:
        items = self._items(name, length)
        value = tuple(to_int(f"{self.key(name)}[{i}]", v) for i, v in enumerate(items))
        for i, v in enumerate(value):
            _check_range(f"{self.key(name)}[{i}]", v, lo, hi)
        self._store(name, value)
        return value

    def numbers(self, name: str, lo: float | None = None, hi: float | None = None,
                lo_open: bool = False, hi_open: bool = False, length: int | None = None) -> tuple[float, ...]:
        items = self._items(name, length)
        value = tuple(to_float(f"{self.key(name)}[{i}]", v) for i, v in enumerate(items))
        for i, v in enumerate(value):
            _check_range(f"{self.key(name)}[{i}]", v, lo, hi, lo_open, hi_open)
        self._store(name, value)
        return value

    def _items(self, name: str, length: int | None) -> tuple[Any, ...]:
        value = getattr(self.obj, name)
        items = tuple(value) if isinstance(value, (list, tuple)) else (value,)   # a scalar: one item
        if length is not None and len(items) != length:
            self.fail(name, f"must hold {length} values")
        return items

    def section_of(self, name: str, cls: type) -> None:
        if not isinstance(getattr(self.obj, name), cls):
            self.fail(name, f"must be a {cls.__name__}")

    def rule(self, ok: bool, message: str) -> None:
        """A check across fields: ``message`` names the keys and values."""
        if not ok:
            raise ConfigError(message)


def to_int(key: str, value: Any) -> int:
    """``value`` as an ``int`` (an integral float such as ``3.0`` too), else :class:`ConfigError`."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and float(value).is_integer():
        return int(value)
    raise ConfigError(f"{key} must be an integer, got {value!r}")


def to_float(key: str, value: Any) -> float:
    """``value`` as a finite ``float`` (numbers, and text such as ``"1e-3"`` that YAML leaves a string)."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(f"{key} must be a number, got {value!r}") from None
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number, got {value!r}")
    return float(value)


def _check_range(key: str, value: float, lo: float | None = None, hi: float | None = None,
                 lo_open: bool = False, hi_open: bool = False) -> None:
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise ConfigError(f"{key} must be {'>' if lo_open else '>='} {lo}, got {value!r}")
    if hi is not None and (value >= hi if hi_open else value > hi):
        raise ConfigError(f"{key} must be {'<' if hi_open else '<='} {hi}, got {value!r}")


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
    residual_rotation: float = 0.0  # rad: after pre_normalize each clip turns by up to this about a random axis
    axis_stretch: float = 0.0       # ... and each of its axes is scaled by U(1 - s, 1 + s) (data/README.md)

    def __post_init__(self) -> None:
        f = _Fields(self, "data.synthetic")
        f.integer("seed", 0)
        f.integer("num_subjects", 1, MAX_SUBJECTS)
        f.integer("num_cameras", 1, 3)      # NTU cameras C001-C003
        f.integer("repetitions", 1, 2)      # NTU replications R001-R002
        f.integer("min_frames", 2)
        f.integer("max_frames", 2)
        f.integer("stored_frames", 1)
        f.number("noise_std", 0)
        f.boolean("two_person")
        f.integer("version", 1, 2)
        f.integer("test_every", 2)
        f.number("residual_rotation", 0, math.pi)
        f.number("axis_stretch", 0, 1, hi_open=True)
        f.rule(self.min_frames <= self.max_frames, f"data.synthetic.min_frames ({self.min_frames}) must be "
                                                   f"<= data.synthetic.max_frames ({self.max_frames})")


@dataclass(frozen=True)
class DataConfig:
    """Which dataset and split to read, and the clip length the model sees."""

    dataset: str = "synthetic"      # synthetic | ntu60 | ntu120 | pku1 | pku2 | msr
    benchmark: str = "xsub"         # xsub | xview (NTU-60, synthetic) | xset (NTU-120) | xsub_val (synthetic, msr)
    root: str | None = None         # folder of preprocessed arrays (real datasets)
    window: int = 64                # frames after temporal crop-resize
    max_frames: int = 300           # frames kept from each stored clip
    mmap: bool = True               # memory-map the large arrays instead of loading them
    num_workers: int = 0            # DataLoader workers (0 = in the main process)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)

    def __post_init__(self) -> None:
        f = _Fields(self, "data")
        f.choice("dataset", DATASETS)
        f.choice("benchmark", BENCHMARKS[self.dataset], f" for data.dataset={self.dataset!r}")
        f.optional_text("root")
        f.integer("window", 1)
        f.integer("max_frames", 1)
        f.boolean("mmap")
        f.integer("num_workers", 0)
        f.section_of("synthetic", SyntheticConfig)

    @property
    def layout(self) -> Layout:
        """The skeleton layout of the dataset (joints, bones, normalisation joints, bodies)."""
        return LAYOUTS[DATASET_LAYOUTS[self.dataset]]


@dataclass(frozen=True)
class AugmentConfig:
    """The CMD pretraining augmentations, applied independently to both views."""

    crop_min_ratio: float = 0.1     # temporal crop length ratio ~ U(min, max)
    crop_max_ratio: float = 1.0
    p_joint_corruption: float = 0.5 # else shear: exactly one spatial augmentation
    corrupt_joints: int = 15        # joints picked by joint corruption
    p_zero_joints: float = 0.5      # within corruption: zero them, else random 3x3 map
    shear_amplitude: float = 1.0    # off-diagonal shear entries ~ U(-a, a)

    def __post_init__(self) -> None:
        f = _Fields(self, "augment")
        low = f.number("crop_min_ratio", 0, 1, lo_open=True)
        high = f.number("crop_max_ratio", 0, 1, lo_open=True)
        f.number("p_joint_corruption", 0, 1)
        f.integer("corrupt_joints", 0)      # at most the layout's joints (ExperimentConfig)
        f.number("p_zero_joints", 0, 1)
        f.number("shear_amplitude", 0)
        f.rule(low <= high, f"augment.crop_min_ratio ({low}) must be <= augment.crop_max_ratio ({high})")


@dataclass(frozen=True)
class EncoderConfig:
    """The sequence encoder and its projection head."""

    kind: str = "bigru_cmd"         # bigru_cmd (reference-exact, both cells causal) | bigru (true bidirectional)
    input_size: int = 150           # V * C * M of the dataset's layout (NTU: 25 * 3 * 2)
    hidden_size: int = 1024
    num_layers: int = 3
    proj_hidden: int = 2048         # projection MLP: feature -> proj_hidden -> out_dim
    out_dim: int = 128
    recurrence: str = "auto"        # bigru_cmd time stepping: auto (the measured-faster path per size and device) | nn_gru | loop | grouped | fused | fused_c; same function

    def __post_init__(self) -> None:
        f = _Fields(self, "encoder")
        f.choice("kind", ENCODER_KINDS)
        for name in ("input_size", "hidden_size", "num_layers", "proj_hidden", "out_dim"):
            f.integer(name, 1)
        f.choice("recurrence", RECURRENCES)

    @property
    def feature_dim(self) -> int:
        """Size of the representation used downstream (two cells x hidden)."""
        return 2 * self.hidden_size


@dataclass(frozen=True)
class PretrainConfig:
    """Self-supervised pretraining: method, MoCo/CMD settings and optimisation."""

    method: str = "cmd"             # moco | moco3 | posmining | cmd | i2md (METHODS)
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
    dna_gate: str = "zscore"        # zscore (relative to the anchor's similarities) | fixed (threshold + margin)
    dna_zscore: float = 2.0         # zscore gate: standard deviations above the anchor's mean similarity
    dna_threshold: float = 0.5      # fixed gate: minimum cosine similarity of a kept neighbour
    dna_margin: float = 0.1         # fixed gate: kept neighbours lie within this of the best match (>= 2 disables)
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
    amp: str = "none"               # none | bf16 | fp16 (AMP_MODES)
    dist_bn: str = "global"         # BatchNorm under torchrun: global | shuffle (DIST_BN_MODES)
    device: str | None = None       # None: CUDA when available, else CPU

    def __post_init__(self) -> None:
        f = _Fields(self, "pretrain")
        f.choice("method", METHODS)
        f.choice("modality", MODALITIES)
        queue = f.integer("queue_size", 1)
        f.number("momentum", 0, 1, hi_open=True)
        for name in ("temperature", "cmd_tau_teacher", "cmd_tau_student", "dna_tau", "lr", "lr_gamma"):
            f.number(name, 0, lo_open=True)
        for name in ("cmd_weight", "cluster_weight", "imd_weight", "dna_margin", "weight_decay"):
            f.number(name, 0)
        for name in ("cmd_topk", "posmining_topk", "imd_topk", "batch_size", "epochs", "checkpoint_every"):
            f.integer(name, 1)
        for name in ("posmining_start_epoch", "dna_max_neighbors", "dna_warmup_epochs"):
            f.integer(name, 0)
        f.number("dna_threshold", -1, 1)        # a cosine similarity
        f.choice("dna_space", DNA_SPACES)
        milestones = f.integers("lr_milestones", 1)
        f.rule(all(m <= self.epochs for m in milestones),
               f"pretrain.lr_milestones {list(milestones)} must lie within pretrain.epochs ({self.epochs}); "
               f"lower them with the epochs ([] for no decay)")
        f.number("sgd_momentum", 0, 1, hi_open=True)
        f.integer("seed", 0, MAX_SEED)
        f.choice("amp", AMP_MODES)
        f.choice("dist_bn", DIST_BN_MODES)
        f.choice("dna_gate", DNA_GATES)
        f.number("dna_zscore", 0)
        f.optional_text("device")
        # the neighbour counts of the losses the method uses must fit the queue
        used = {"cmd": ("cmd_topk",), "posmining": ("posmining_topk",),
                "i2md": ("cmd_topk", "imd_topk", "dna_max_neighbors")}.get(self.method, ())
        for name in used:
            f.rule(getattr(self, name) <= queue, f"pretrain.{name} ({getattr(self, name)}) must be <= "
                                                 f"pretrain.queue_size ({queue}) for method {self.method!r}")

    @property
    def modalities(self) -> tuple[str, ...]:
        """The modalities the method trains: one for ``moco``, all three otherwise."""
        if self.method not in METHODS:
            raise ValueError(f"unknown pretraining method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.method == "moco":
            if self.modality not in MODALITIES:
                raise ValueError(f"unknown modality {self.modality!r}; choose one of {', '.join(MODALITIES)}")
            return (self.modality,)
        return MODALITIES

    @property
    def has_cluster_branch(self) -> bool:
        """Whether the method adds I²MD's cluster-level branch (a second head and queue per modality)."""
        return self.method == "i2md"


_CMD_KEYS = frozenset({"cmd_topk", "cmd_tau_teacher", "cmd_tau_student", "cmd_weight"})
#: The pretraining keys only some methods read (``pretrain.<key>``). A method's runs are the same
#: whatever the values of the others (``tests/test_methods.py`` trains every method with each key
#: it does not read changed, and checks that weights, queues and log stay bit for bit the same),
#: so a result or checkpoint stays current when only those change.
METHOD_KEYS: dict[str, frozenset[str]] = {
    "moco": frozenset({"modality"}),
    "moco3": frozenset(),
    "posmining": frozenset({"posmining_topk", "posmining_start_epoch"}),
    "cmd": _CMD_KEYS,
    "i2md": _CMD_KEYS | {"cluster_weight", "imd_weight", "imd_topk", "dna_max_neighbors", "dna_gate",
                         "dna_zscore", "dna_threshold", "dna_margin", "dna_tau", "dna_space", "dna_warmup_epochs"},
}


def unread_keys(method: str) -> frozenset[str]:
    """The dotted keys of :data:`METHOD_KEYS` that ``method`` never reads, e.g. ``pretrain.dna_zscore``
    for ``moco3``."""
    every = frozenset().union(*METHOD_KEYS.values())
    return frozenset(f"pretrain.{key}" for key in every - METHOD_KEYS[method])


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

    def __post_init__(self) -> None:
        f = _Fields(self, "eval")
        for name in ("linear_lr", "finetune_lr"):
            f.number(name, 0, lo_open=True)
        for name in ("epochs", "batch_size", "eval_every"):
            f.integer(name, 1)
        milestones = f.integers("lr_milestones", 1)
        f.rule(all(m <= self.epochs for m in milestones),
               f"eval.lr_milestones {list(milestones)} must lie within eval.epochs ({self.epochs}); "
               f"lower them with the epochs ([] for no decay)")
        f.number("weight_decay", 0)
        if not f.integers("knn_k", 1):
            f.fail("knn_k", "must hold at least one k")
        f.number("test_crop_ratio", 0, 1, lo_open=True)
        low, high = f.numbers("train_crop_range", 0, 1, lo_open=True, length=2)
        f.rule(low <= high, f"eval.train_crop_range must be (low, high) with low <= high, got ({low}, {high})")
        f.numbers("label_fractions", 0, 1, lo_open=True)
        f.integers("semi_seeds", 0, MAX_SEED)
        val = f.number("val_fraction", 0, 1, hi_open=True)
        f.choice("select_on", SELECT_ON)
        f.rule(self.select_on != "val" or val > 0,
               "eval.select_on='val' needs a validation split: set eval.val_fraction > 0 or select_on='test'")
        f.integer("seed", 0, MAX_SEED)


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything one run needs. ``ExperimentConfig()`` is the paper (``full``)."""

    profile: str = "full"
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        f = _Fields(self, "")
        f.choice("profile", PROFILES)
        for name, cls in (("data", DataConfig), ("augment", AugmentConfig), ("encoder", EncoderConfig),
                          ("pretrain", PretrainConfig), ("eval", EvalConfig)):
            f.section_of(name, cls)
        layout = self.data.layout
        f.rule(self.encoder.input_size == layout.frame_values,
               f"encoder.input_size must be {layout.frame_values} for data.dataset={self.data.dataset!r}, "
               f"layout {layout.describe()}, got {self.encoder.input_size}")
        f.rule(self.augment.corrupt_joints <= layout.num_joints,
               f"augment.corrupt_joints ({self.augment.corrupt_joints}) must be <= the {layout.num_joints} "
               f"joints of data.dataset={self.data.dataset!r}")

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
        """Return a copy with dotted keys replaced, e.g. ``{"pretrain.lr": 0.1}``.

        All keys of one call are applied together, so each section is checked once,
        with all its new values (``{"pretrain.epochs": 3, "pretrain.lr_milestones": [2]}``
        is valid whatever the order). Raises :class:`ConfigError` (a ``ValueError``)
        naming the key of an unknown or invalid value.
        """
        tree: dict[str, Any] = {}
        for key, value in overrides.items():
            _insert(tree, key, value)
        dataset = tree.get("data", {}).get("dataset") if isinstance(tree.get("data"), _Section) else None
        if isinstance(dataset, str) and dataset in DATASET_LAYOUTS:     # layout-bound values follow
            for key, value in LAYOUT_DEFAULTS[DATASET_LAYOUTS[dataset]].items():
                section, name = key.split(".")
                if name not in tree.get(section, {}):
                    _insert(tree, key, value)
        return _apply(self, tree, "")

    # -- serialisation -----------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ExperimentConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``. A key of
        :data:`LEGACY_DEFAULTS` that ``d`` lacks (a config saved before the field existed)
        takes the value such runs used."""
        flat = dict(_flatten(d))
        for key, value in LEGACY_DEFAULTS.items():
            flat.setdefault(key, value)
        return cls().replace(flat)

    def digest(self) -> str:
        """A short stable hash of the whole config (cache keys, run names)."""
        return config_digest(self.to_dict())


def config_digest(d: Mapping[str, Any]) -> str:
    """:meth:`ExperimentConfig.digest` of a config as :meth:`~ExperimentConfig.to_dict` wrote it
    (say, into a result file): checks that a stored config is the one its digest was made from,
    whatever fields the library has added since."""
    blob = json.dumps(d, sort_keys=True, default=list)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _flatten(d: Mapping[str, Any], prefix: str = ""):
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            yield from _flatten(v, key + ".")
        else:
            yield key, v


def check_trainable(cfg: ExperimentConfig) -> None:
    """Rules that only training needs; a model built to show one piece (a queue of 6 slots
    in Chapter 2) may break them. Raises :class:`ConfigError` naming the keys."""
    p = cfg.pretrain
    if p.queue_size < p.batch_size:
        raise ConfigError(f"pretrain.queue_size ({p.queue_size}) must be >= pretrain.batch_size "
                          f"({p.batch_size}): every step puts the whole batch into the queue")


class _Section(dict):
    """Overrides of one config section, by field name (a node of :func:`_insert`'s tree)."""


def _insert(tree: dict[str, Any], key: str, value: Any) -> None:
    """Put the override ``key = value`` into ``tree``; a mapping value opens a section."""
    *parents, leaf = key.split(".")
    node = tree
    for part in parents:
        child = node.get(part)
        if not isinstance(child, _Section):
            child = node[part] = _Section()
        node = child
    if isinstance(value, Mapping):
        section = node.get(leaf)
        if not isinstance(section, _Section):
            section = node[leaf] = _Section()
        for sub_key, sub_value in value.items():
            _insert(section, str(sub_key), sub_value)
    else:
        node[leaf] = value


def _apply(obj: Any, tree: Mapping[str, Any], prefix: str) -> Any:
    """``obj`` with the overrides of ``tree``: one ``dataclasses.replace`` per section."""
    fields = {f.name for f in dataclasses.fields(obj)}
    changes: dict[str, Any] = {}
    for name, value in tree.items():
        key = prefix + name
        if name not in fields:
            raise ConfigError(f"unknown config key {key!r}: {type(obj).__name__} has no field {name!r}")
        current = getattr(obj, name)
        if isinstance(value, _Section):
            if not dataclasses.is_dataclass(current):
                raise ConfigError(f"config key {key!r} is not a section: {name!r} holds a value, "
                                  f"not keys")
            value = _apply(current, value, key + ".")
        elif dataclasses.is_dataclass(current) and not isinstance(value, type(current)):
            raise ConfigError(f"config key {key!r} is a section: give its keys ({key}.KEY=VALUE), "
                              f"got {value!r}")
        elif isinstance(current, tuple) and isinstance(value, list):
            value = tuple(value)
        changes[name] = value
    return dataclasses.replace(obj, **changes) if changes else obj


#: What each profile changes relative to the paper's defaults.
PROFILE_OVERRIDES: dict[str, dict[str, Any]] = {
    "full": {},
    "book": {
        "data.window": 32,
        "data.max_frames": 120,
        "data.synthetic.min_frames": 40,
        "data.synthetic.max_frames": 120,
        "data.synthetic.stored_frames": 120,
        # testbed v3 (data/README.md): a residual view and build distortion that the normalisation
        # leaves in every clip; with version 1's classes it puts a random encoder >20 points under
        # the pretrained ones (results/book/testbed_v3/, tools/testbed.py --design v1 rebuilds the old book)
        "data.synthetic.residual_rotation": 0.5,
        "data.synthetic.axis_stretch": 0.25,
        "encoder.hidden_size": 64,
        "encoder.num_layers": 2,
        "encoder.proj_hidden": 128,
        "encoder.out_dim": 64,
        "pretrain.queue_size": 512,
        "pretrain.cmd_topk": 256,
        "pretrain.imd_topk": 256,
        "pretrain.dna_max_neighbors": 32,
        "pretrain.dna_warmup_epochs": 5,
        "pretrain.batch_size": 64,
        "pretrain.epochs": 200,
        "pretrain.lr": 0.05,
        "pretrain.lr_milestones": (160,),
        "pretrain.momentum": 0.99,
        "pretrain.checkpoint_every": 10,
        # chosen on the validation split (results/book/search: "w0.5", by less than the noise of two seeds)
        "pretrain.cluster_weight": 0.5,
        "pretrain.imd_weight": 0.5,
        "eval.epochs": 30,
        "eval.lr_milestones": (20, 26),
        "eval.eval_every": 5,
        # ten label draws: with 1 % labels (13 clips) one draw's SD is about 4 points
        "eval.semi_seeds": tuple(range(10)),
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
        "pretrain.dna_max_neighbors": 8,
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
