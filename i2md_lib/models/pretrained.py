"""A pretrained model back from its run folder: the config it was trained with and its weights.

:func:`load_pretrained` reads a run folder (or its ``checkpoint.pt``), rebuilds the
:class:`~i2md_lib.models.moco.MoCo` of the stored config and loads the weights and
queues; downstream tasks take its query encoders (:func:`~i2md_lib.models.moco.encoders_for_eval`).
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoint import CheckpointError, checkpoint_path, load_checkpoint
from ..config import ExperimentConfig
from .moco import MoCo, build_model


def load_pretrained(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[ExperimentConfig, MoCo]:
    """``(cfg, model)`` from a run folder or a checkpoint file; the model is in eval mode.

    Raises:
        FileNotFoundError: no checkpoint there.
        CheckpointError: unreadable file, or weights that do not fit the stored config
            (the message names the file).
    """
    path = Path(path)
    file = checkpoint_path(path) if path.is_dir() else path
    state = load_checkpoint(file, map_location)
    try:
        cfg = ExperimentConfig.from_dict(state["config"])
    except ValueError as e:
        raise CheckpointError(f"{file}: the stored config is not valid here: {e}") from e
    model = build_model(cfg)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise CheckpointError(f"{file}: model weights do not fit the stored config: {e}") from e
    return cfg, model.to(map_location).eval()
