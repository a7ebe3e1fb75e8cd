"""Fine-tuning: semi-supervised (a label fraction) and fully supervised (fraction 1).

The reference (``action_classification_cmd_semi.py``): the whole encoder plus a
new linear head are trained in train mode, SGD lr 0.01, momentum 0.9, no weight
decay, batch 64, 80 epochs, lr x0.1 at epochs 50 and 70, random training crop.
It draws the labelled subset with an unseeded ``np.random.shuffle`` over the
whole training split and repeats each setting 5 times.

Ours: the labelled subset is seeded (one run per seed in ``cfg.semi_seeds``),
stratified by class with at least one clip per class, and drawn from the training
clips left after carving out the validation split, so it never overlaps it. The
validation split itself is the same for every seed (seeded by ``cfg.seed``).
Note that it is *labelled*: at 1 % labels it holds more labels than the training
subset, which flatters model selection; ``top1_best_test`` (the reference's
number) flatters it even more. The encoder passed in is never modified: each run
fine-tunes a deep copy.
"""
from __future__ import annotations

import copy
import time
from typing import Sequence

import torch
from torch import nn

from ..data.datasets import set_epoch
from ..utils import set_seed
from .classifier import (StreamClassifier, new_linear_head, predict_probs, stack_history,
                         train_and_track)
from .features import check_modality, clip_loader
from .results import ClassifierResult, SemiResult, check_select_rule, summarise_curve
from .setup import EvalSetup
from .splits import label_fraction_subset, stratified_val_split


def finetune_eval(
    encoder: nn.Module,
    modality: str,
    setup: EvalSetup,
    *,
    fraction: float = 1.0,
    seed: int = 0,
    keep_probs: bool = False,
    keep_model: bool = False,
) -> ClassifierResult:
    """Fine-tune a copy of ``encoder`` with a new head on ``fraction`` of the labels.

    Args:
        encoder: ``forward(x (N, C, window, V, M)) -> (N, encoder.feature_dim)``; not modified.
        modality: stream the encoder was trained on (derived from the cropped joints).
        setup: the splits, ``setup.eval`` (``finetune_lr``, ``epochs``, ``lr_milestones``,
            ``val_fraction``, ...), ``setup.data``, the device.
        fraction: labelled fraction of the training split; 1.0 is full fine-tuning.
        seed: seeds the labelled subset, the initialisation of the head and the crops.
        keep_model: return the fine-tuned model (``StreamClassifier``, on the CPU) in ``model``.

    Returns:
        A :class:`ClassifierResult` (``extra`` holds ``fraction``, ``seed`` and
        ``labelled_index``, the labelled clips' indices into ``train_arrays``).
    """
    check_modality(modality)
    start = time.perf_counter()
    cfg, data, device, progress = setup.eval, setup.data, setup.device, setup.progress
    train_arrays, test_arrays = setup.train, setup.test
    train_idx, val_idx = stratified_val_split(train_arrays.labels, cfg.val_fraction, cfg.seed)
    check_select_rule(cfg.select_on, len(val_idx))
    labelled = label_fraction_subset(train_arrays.labels, fraction, seed, pool=train_idx)

    set_seed(seed)
    model = StreamClassifier(copy.deepcopy(encoder), modality,
                             new_linear_head(encoder.feature_dim, setup.classes),
                             freeze_encoder=False).to(device)
    for p in model.parameters():
        p.requires_grad_(True)
    fit_arrays = train_arrays.subset(labelled)
    val_arrays = train_arrays.subset(val_idx) if len(val_idx) else None
    val_loader = clip_loader(val_arrays, data, cfg, train=False) if val_arrays is not None else None
    test_loader = clip_loader(test_arrays, data, cfg, train=False)
    train_loader = clip_loader(fit_arrays, data, cfg, train=True, seed=seed)

    def train_batches(epoch: int):
        set_epoch(train_loader, epoch)   # fresh random crops and order every epoch
        return train_loader

    def evaluate():
        model.eval()
        val = predict_probs(model, val_loader, device) if val_loader is not None else None
        return val, predict_probs(model, test_loader, device)

    curve, val_hist, test_hist = train_and_track(
        model, model.parameters(), train_batches, evaluate,
        None if val_arrays is None else val_arrays.labels, test_arrays.labels,
        cfg.finetune_lr, cfg, device, progress=progress,
        desc=f"finetune {modality} {fraction:g}",
    )
    protocol = "finetune" if fraction == 1.0 else "semi"
    return summarise_curve(
        protocol, modality, curve, cfg.select_on,
        num_train=len(labelled), num_val=len(val_idx), num_test=len(test_arrays),
        seconds=time.perf_counter() - start,
        val_labels=None if val_arrays is None else val_arrays.labels, test_labels=test_arrays.labels,
        val_probs=stack_history(val_hist) if keep_probs else None,
        test_probs=stack_history(test_hist) if keep_probs else None,
        model=model.cpu().eval() if keep_model else None,
        extra={"fraction": fraction, "seed": seed, "labelled_index": labelled},
    )


def semi_supervised_eval(
    encoder: nn.Module,
    modality: str,
    setup: EvalSetup,
    *,
    fractions: Sequence[float] | None = None,
    seeds: Sequence[int] | None = None,
) -> dict[float, SemiResult]:
    """:func:`finetune_eval` for each label fraction (default ``eval.label_fractions``)
    and seed (default ``eval.semi_seeds``); mean and std over seeds per fraction."""
    fractions = tuple(setup.eval.label_fractions if fractions is None else fractions)
    seeds = tuple(setup.eval.semi_seeds if seeds is None else seeds)
    if not seeds:
        raise ValueError("need at least one seed")
    results: dict[float, SemiResult] = {}
    for fraction in fractions:
        runs = [finetune_eval(encoder, modality, setup, fraction=fraction, seed=s) for s in seeds]
        results[float(fraction)] = SemiResult(modality, float(fraction), list(seeds), runs)
    return results
