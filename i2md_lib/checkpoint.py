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
    digest      SHA-256 of all the entries above (:func:`state_digest`)

Only plain types and tensors are stored, so it loads with ``torch.load(weights_only=True)``.

The digest is written at save (:func:`seal`) and checked at load (:func:`check_digest`): a
file changed after it was written -- one byte flipped inside a tensor, say -- is refused
with one line naming it. A file without a digest (written before digests existed, such as
the model files committed under ``results/``) is accepted; a digest that is present but
wrong never is.
"""
from __future__ import annotations

import hashlib
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import torch

from .config import ExperimentConfig, _flatten
from .utils import atomic_write, check_safe_torch_load, describe_non_finite, load_failure

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
    """Write ``state`` and its digest (:func:`seal`) to ``path`` atomically (a temporary file, then one rename)."""
    sealed = seal(state)
    return atomic_write(path, lambda tmp: torch.save(sealed, tmp))


# -- digests ----------------------------------------------------------------------
DIGEST_KEY = "digest"


def state_digest(state: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of every entry of ``state`` but :data:`DIGEST_KEY`: each tensor's key path,
    dtype, shape and bytes, and the ``repr`` of each plain value (tuples and lists alike)."""
    digest = hashlib.sha256()
    _feed(digest, "", {k: v for k, v in state.items() if k != DIGEST_KEY})
    return digest.hexdigest()


def _feed(digest: "hashlib._Hash", path: str, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        flat = value.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{path}:tensor:{flat.dtype}:{tuple(value.shape)}\n".encode())
        digest.update(flat.view(torch.uint8).numpy().data)
    elif isinstance(value, Mapping):
        digest.update(f"{path}:map:{len(value)}\n".encode())
        for key, item in value.items():
            _feed(digest, f"{path}/{key!r}", item)
    elif isinstance(value, (list, tuple)):
        digest.update(f"{path}:seq:{len(value)}\n".encode())
        for i, item in enumerate(value):
            _feed(digest, f"{path}/{i}", item)
    else:
        digest.update(f"{path}:{type(value).__name__}:{value!r}\n".encode())


def seal(state: Mapping[str, Any]) -> dict[str, Any]:
    """``state`` with its :func:`state_digest` under :data:`DIGEST_KEY` (what every save writes)."""
    return {**{k: v for k, v in state.items() if k != DIGEST_KEY}, DIGEST_KEY: state_digest(state)}


def check_digest(path: str | Path, state: Mapping[str, Any]) -> None:
    """Raise :class:`CheckpointError` naming ``path`` if ``state`` holds a digest that does not match
    its contents; a state without one (a file older than digests) passes."""
    stored = state.get(DIGEST_KEY)
    if stored is None:
        return
    if stored != state_digest(state):
        raise CheckpointError(f"{path}: the contents do not match the digest written with them (the file was "
                              f"changed or damaged after it was saved); do not resume or evaluate it, use "
                              f"another copy or train again")


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
        raise CheckpointError(f"{path}: unreadable checkpoint (corrupt or truncated?): {load_failure(e)}") from e
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: not an i2md_lib pretraining checkpoint (format "
            f"{state.get('format') if isinstance(state, dict) else type(state).__name__!r}, "
            f"expected {CHECKPOINT_FORMAT})"
        )
    missing = {"model", "optimizer", "scheduler", "epoch", "batch_in_epoch", "step", "rng", "config"} - set(state)
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks the entries {sorted(missing)}")
    check_digest(path, state)
    check_stored_config(path, state["config"])
    problem = describe_non_finite({"model": state["model"], "optimizer": state["optimizer"]})
    if problem:
        raise CheckpointError(f"{path}: {problem}; the run diverged before this checkpoint, "
                              f"do not resume or evaluate it")
    return state


def check_stored_config(path: str | Path, config: Any) -> None:
    """Raise :class:`CheckpointError` naming ``path`` unless the stored ``config`` is a mapping of
    config sections (``ExperimentConfig.to_dict()``: a mapping per section, and the profile)."""
    if not isinstance(config, Mapping):
        what = f"a {type(config).__name__}"
    else:
        bad = [k for k, v in config.items() if k != "profile" and not isinstance(v, Mapping)]
        if not bad:
            return
        what = f"a mapping whose section {bad[0]!r} is a {type(config[bad[0]]).__name__}"
    raise CheckpointError(f"{path}: the stored config is {what}, not a mapping of config sections "
                          f"(ExperimentConfig.to_dict()); the file was not written by this library")


def load_weights(path: str | Path, module: torch.nn.Module, weights: Mapping[str, torch.Tensor]) -> None:
    """``module.load_state_dict(weights)``; a mismatch raises one :class:`CheckpointError` line naming
    ``path`` and counting the tensors of another shape, the missing and the unexpected ones."""
    ours = module.state_dict()
    other = [k for k in weights if k in ours and tuple(getattr(weights[k], "shape", ())) != tuple(ours[k].shape)]
    missing = [k for k in ours if k not in weights]
    unexpected = [k for k in weights if k not in ours]
    if other or missing or unexpected:
        first = (f"first {other[0]}: stored {tuple(weights[other[0]].shape)}, model {tuple(ours[other[0]].shape)}"
                 if other else f"first {(missing or unexpected)[0]}")
        raise CheckpointError(f"{path}: the stored weights do not fit the model of this config: {len(other)} "
                              f"tensor(s) of another shape, {len(missing)} missing, {len(unexpected)} unexpected "
                              f"({first}); use the config the file was saved with, or start over")
    module.load_state_dict(weights)


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
