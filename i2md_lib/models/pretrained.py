"""A pretrained model back from its run folder: the config it was trained with and its weights.

:func:`load_pretrained` reads a run folder (or its ``checkpoint.pt``), rebuilds the
:class:`~i2md_lib.models.moco.MoCo` of the stored config and loads the weights and
queues; downstream tasks take its query encoders (:func:`~i2md_lib.models.moco.encoders_for_eval`).

A *model file* (``*_model.pt``, :func:`save_model_file`) is the slim form the book
commits next to its result files: the config, the weights and the queues (what a
chapter inspects), without the optimiser and random-generator state of a checkpoint.
:func:`load_pretrained` reads it too.
"""
from __future__ import annotations

from pathlib import Path

import torch

import pickle
import zipfile
from typing import Any, Mapping

from ..checkpoint import CheckpointError, check_digest, check_stored_config, checkpoint_path, load_checkpoint, \
    load_weights, seal
from ..config import ExperimentConfig
from ..utils import atomic_write, check_safe_torch_load, describe_non_finite, load_failure
from .moco import MoCo, build_model

MODEL_FILE_FORMAT = "i2md-model-1"
MODEL_FILE_SUFFIX = "_model.pt"


def save_model_file(path: str | Path, cfg: ExperimentConfig, model: MoCo,
                    meta: Mapping[str, Any] | None = None) -> Path:
    """Write ``cfg``, the weights and the queues of ``model`` (no optimiser state) atomically.

    ``path`` must end in ``_model.pt``; ``meta`` (plain types) records where it came from,
    e.g. the commit and the command. The file carries the digest of its contents
    (:func:`i2md_lib.checkpoint.seal`), checked by :func:`load_model_file`.
    """
    path = Path(path)
    if not path.name.endswith(MODEL_FILE_SUFFIX):
        raise ValueError(f"{path}: a model file's name ends in {MODEL_FILE_SUFFIX!r}")
    state = seal({"format": MODEL_FILE_FORMAT, "config": cfg.to_dict(), "model": model.state_dict(),
                  "meta": dict(meta or {})})
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_model_file(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The contents of a :func:`save_model_file` file (read with ``weights_only=True``).

    Its digest is checked (:func:`i2md_lib.checkpoint.check_digest`); a file without one, such
    as the model files committed before digests existed, is accepted.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no model file")
    check_safe_torch_load()
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, pickle.UnpicklingError) as e:
        raise CheckpointError(f"{path}: unreadable model file (corrupt or truncated?): {load_failure(e)}") from e
    if not isinstance(state, dict) or state.get("format") != MODEL_FILE_FORMAT or not {"config", "model"} <= set(state):
        raise CheckpointError(f"{path}: not an i2md_lib model file (expected format {MODEL_FILE_FORMAT!r})")
    check_digest(path, state)
    check_stored_config(path, state["config"])
    problem = describe_non_finite({"model": state["model"]})
    if problem:
        raise CheckpointError(f"{path}: {problem}")
    return state


def check_same_layout(source: str | Path, trained: ExperimentConfig, wanted: ExperimentConfig) -> None:
    """Refuse to use a model trained on one skeleton layout with data of another: ``ValueError``
    naming ``source`` (the run's file), both datasets and both layouts."""
    have, want = trained.data.layout, wanted.data.layout
    if have != want:
        raise ValueError(f"{source}: the model was trained on data.dataset={trained.data.dataset!r}, layout "
                         f"{have.describe()}; data.dataset={wanted.data.dataset!r} has layout "
                         f"{want.describe()}: use data of the layout the model was trained on")


def load_pretrained(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[ExperimentConfig, MoCo]:
    """``(cfg, model)`` from a run folder, a checkpoint file or a model file; the model is in eval mode.

    Raises:
        FileNotFoundError: no checkpoint there.
        CheckpointError: unreadable file, a digest that does not match, a stored config that is
            not one, or weights that do not fit the stored config (one line naming the file).
    """
    path = Path(path)
    file = checkpoint_path(path) if path.is_dir() else path
    is_model_file = file.name.endswith(MODEL_FILE_SUFFIX)
    state = load_model_file(file, map_location) if is_model_file else load_checkpoint(file, map_location)
    try:
        cfg = ExperimentConfig.from_dict(state["config"])
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{file}: the stored config is not valid here: {e}") from e
    model = build_model(cfg)
    load_weights(file, model, state["model"])
    return cfg, model.to(map_location).eval()
