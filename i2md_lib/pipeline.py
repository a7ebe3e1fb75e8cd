"""Pretrain -> load -> evaluate: the path every experiment, chapter and full-scale cell takes.

:func:`pretrained_model` trains a run folder (resuming; a finished run returns at
once) and loads the result back, or builds the untrained baseline; :func:`evaluate_model`
runs the downstream protocols on its query encoders and returns the result rows.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from .config import ExperimentConfig
from .eval.suite import evaluate_encoders, results_table
from .models.moco import MoCo, build_model, encoders_for_eval
from .models.pretrained import load_pretrained
from .train import pretrain
from .utils import set_seed


def pretrained_model(cfg: ExperimentConfig, run_dir: str | Path | None,
                     progress: bool = False) -> tuple[MoCo, list[dict[str, float]]]:
    """``(model, log rows)`` of ``cfg`` trained in ``run_dir``.

    ``run_dir=None`` gives the untrained baseline instead: a model freshly initialised
    with the seed ``cfg.pretrain.seed``, and no log.
    """
    if run_dir is None:
        set_seed(cfg.pretrain.seed)
        return build_model(cfg), []
    history = pretrain(cfg, run_dir, progress=progress)
    _, model = load_pretrained(run_dir)
    return model, history


def evaluate_model(model: MoCo, cfg: ExperimentConfig, protocols: Sequence[str], augment: bool = False,
                   progress: bool = False) -> list[dict[str, Any]]:
    """The result rows (``results_table``) of ``protocols`` on the model's query encoders."""
    results = evaluate_encoders(encoders_for_eval(model), cfg, protocols=tuple(protocols), augment=augment,
                                progress=progress)
    return results_table(results)
