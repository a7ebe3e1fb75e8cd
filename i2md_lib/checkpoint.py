"""Checkpoints of a pretraining run: atomic save, checked load, RNG capture, config diffs.

A run folder holds one checkpoint file, ``checkpoint.pt``, replaced atomically each
time (a crash mid-write leaves the previous one intact). It is a plain dict::

    format      CHECKPOINT_FORMAT
    model       MoCo state dict (encoders, heads, queues, queue pointer)
    optimizer   SGD state dict
    scheduler   MultiStepLR state dict
    scaler      GradScaler state dict (fp16 only; else empty)
    epoch       epoch the run is in (== epochs done when batch_in_epoch == 0)
    batch_in_epoch  batches of that epoch already trained
    step        optimizer steps done in total
    rng         Python, NumPy, torch CPU (and CUDA) generator states
    config      ExperimentConfig.to_dict() of the run

Only plain types and tensors are stored, so it loads with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import pickle
import random
import zipfile
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import torch

from .config import ExperimentConfig, _flatten
from .utils import atomic_write, check_safe_torch_load, describe_non_finite

CHECKPOINT_NAME = "checkpoint.pt"
CONFIG_NAME = "config.yaml"
CHECKPOINT_FORMAT = 1


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read or does not fit the run (the message names the file)."""


class ConfigMismatchError(ValueError):
    """Resuming with a config that differs from the checkpoint's (the message lists the keys)."""


def checkpoint_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINT_NAME


def save_checkpoint(path: str | Path, state: Mapping[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (a temporary file, then one rename)."""
    return atomic_write(path, lambda tmp: torch.save(dict(state), tmp))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: the file is truncated, corrupt or not one of our checkpoints.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint file")
    check_safe_torch_load()
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, pickle.UnpicklingError) as e:
        raise CheckpointError(f"{path}: unreadable checkpoint (corrupt or truncated?): {e}") from e
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: not an i2md_lib pretraining checkpoint (format "
            f"{state.get('format') if isinstance(state, dict) else type(state).__name__!r}, "
            f"expected {CHECKPOINT_FORMAT})"
        )
    missing = {"model", "optimizer", "scheduler", "epoch", "batch_in_epoch", "step", "rng", "config"} - set(state)
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks the entries {sorted(missing)}")
    problem = describe_non_finite({"model": state["model"], "optimizer": state["optimizer"]})
    if problem:
        raise CheckpointError(f"{path}: {problem}; the run diverged before this checkpoint, "
                              f"do not resume or evaluate it")
    return state


# -- random generators ----------------------------------------------------------
def capture_rng_state() -> dict[str, Any]:
    """The states of Python's, NumPy's and torch's global generators (plain types only)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state` (CUDA states only when CUDA is present)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, gauss_np = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss_np))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


# -- configs ----------------------------------------------------------------------
#: Keys that may differ on resume without being asked for: they do not change the maths
#: (``data.root`` is where the prepared arrays lie: moving them moves no number).
RUNTIME_KEYS: frozenset[str] = frozenset({"pretrain.device", "data.num_workers", "data.mmap",
                                           "encoder.recurrence", "data.root"})


def config_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Dotted keys whose values differ between two ``to_dict()`` configs -> ``(old, new)``.

    ``old`` is first brought up to the current config classes: a field added to the
    library after ``old`` was saved takes its default instead of counting as a change.
    """
    try:
        old = ExperimentConfig.from_dict(old).to_dict()
    except (TypeError, ValueError):
        pass   # a key that no longer exists: compare as saved (it shows up as a difference)
    a, b = dict(_flatten(old)), dict(_flatten(new))
    norm = lambda v: list(v) if isinstance(v, (tuple, list)) else v  # noqa: E731 (YAML gives lists)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if norm(a.get(k)) != norm(b.get(k))}


#: Config sections pretraining never reads: a pretrained run stays valid when only these change
#: (more label draws of the semi-supervised protocol, another probe schedule, ...).
EVAL_ONLY_SECTIONS: tuple[str, ...] = ("eval",)


def pretraining_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """:func:`config_differences` that change the pretrained weights: without :data:`RUNTIME_KEYS`,
    the keys of :data:`EVAL_ONLY_SECTIONS` and the keys ``new``'s method does not read."""
    return {k: v for k, v in result_differences(old, new).items() if k.split(".")[0] not in EVAL_ONLY_SECTIONS}


def result_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """:func:`config_differences` that change a run's results: without :data:`RUNTIME_KEYS` and the
    pretraining keys ``new``'s method does not read (``config.unread_keys``; a change of method
    is itself a difference)."""
    from .config import unread_keys

    ignored = RUNTIME_KEYS | unread_keys(new["pretrain"]["method"])
    return {k: v for k, v in config_differences(old, new).items() if k not in ignored}


def check_resume_config(path: Path, saved: Mapping[str, Any], cfg: ExperimentConfig,
                        allow_changes: Iterable[str] = ()) -> None:
    """Raise :class:`ConfigMismatchError` if ``cfg`` differs from the checkpoint's config
    in a key that changes the pretrained weights (:func:`pretraining_differences`) other than
    ``allow_changes``."""
    allowed = set(allow_changes)
    diffs = {k: v for k, v in pretraining_differences(saved, cfg.to_dict()).items() if k not in allowed}
    if diffs:
        lines = "\n".join(f"  {k}: checkpoint {old!r}, now {new!r}" for k, (old, new) in diffs.items())
        raise ConfigMismatchError(
            f"{path}: the run was started with a different config:\n{lines}\n"
            f"resume with the checkpoint's config, start over (--no-resume / resume=False), or "
            f"allow these changes explicitly (--allow-change KEY / allow_changes=[...])"
        )
