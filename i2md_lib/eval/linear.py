"""Linear evaluation: a new linear classifier on top of the frozen encoder.

The reference (``action_classification_cmd.py``): encoder frozen and in eval mode
(BatchNorm uses its running statistics), ``fc = Linear(feature_dim, classes)``
initialised ``N(0, 0.01)`` with zero bias, SGD lr 0.1, momentum 0.9, no weight
decay, batch 64, 80 epochs, lr x0.1 at epochs 50 and 70; training clips get a
random crop (ratio U(0.5, 1)), test clips the centre crop 0.95.

Two ways to train the head, both exact for what they compute:

* ``augment=True`` (the reference): every epoch encodes a fresh random crop of
  each training clip, so the head sees a different view each time. The encoder
  is frozen, so validation and test features are computed once.
* ``augment=False`` (fast): training features are computed once from the centre
  crop and the head is trained on them (``protocol="linear_fast"`` in the result).
  It is the same schedule without the training-crop augmentation: one encoder pass
  over the training split instead of one per epoch, so the saving grows with the
  encoder's cost (on the ``book`` profile, one CPU thread: 1.5 s instead of 5.1 s
  for 30 epochs). The head never sees augmented views, so its numbers can differ
  from the reference protocol's; say which path produced a number.
"""
from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ..data.datasets import set_epoch
from ..utils import set_seed
from .classifier import (StreamClassifier, new_linear_head, predict_probs, stack_history,
                         train_and_track)
from .features import SplitFeatures, check_modality, clip_loader, extract_features, frozen, split_features
from .results import ClassifierResult, check_select_rule, summarise_curve
from .setup import EvalSetup
from .splits import stratified_val_split


def feature_batches(features: np.ndarray, labels: np.ndarray, batch_size: int, seed: int, epoch: int):
    """Shuffled batches ``(features (B, D), labels (B,))``; the order depends on ``(seed, epoch)``."""
    order = np.random.default_rng([seed, epoch]).permutation(len(features))
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        yield torch.from_numpy(features[idx]), torch.from_numpy(labels[idx])


def linear_eval(
    encoder: nn.Module,
    modality: str,
    setup: EvalSetup,
    *,
    augment: bool = True,
    features: SplitFeatures | None = None,
    keep_probs: bool = False,
) -> ClassifierResult:
    """Train a linear classifier on the frozen ``encoder`` and report test accuracy.

    A validation split (``eval.val_fraction``, stratified, seeded by ``eval.seed``) is
    held out of the training split; the result's ``top1`` follows ``eval.select_on`` and
    it also carries the reference's best-test number (``top1_best_test``).

    Args:
        encoder: ``forward(x (N, C, window, V, M)) -> (N, encoder.feature_dim)``;
            left unchanged (mode and ``requires_grad`` restored afterwards).
        modality: stream the encoder was trained on (derived from the cropped joints).
        setup: the splits, ``setup.eval`` (``linear_lr``, ``epochs``, ``lr_milestones``,
            ``batch_size``, crops, ...), ``setup.data``, the device.
        augment: random training crop every epoch (reference) or precomputed centre crop (fast).
        features: precomputed centre-crop features of both splits (skips re-encoding them).
        keep_probs: keep per-evaluation probabilities (needed by ensembles).

    Returns:
        A :class:`ClassifierResult`; ``model`` is the head after the last epoch.
    """
    check_modality(modality)
    start = time.perf_counter()
    cfg, data, device, progress = setup.eval, setup.data, setup.device, setup.progress
    train_arrays, test_arrays = setup.train, setup.test
    set_seed(cfg.seed)
    train_idx, val_idx = stratified_val_split(train_arrays.labels, cfg.val_fraction, cfg.seed)
    check_select_rule(cfg.select_on, len(val_idx))
    encoder.to(device)
    with frozen(encoder):
        if features is None and not augment:
            features = split_features(encoder, modality, setup)
        if features is not None:
            all_train, all_labels = features.train
            if len(all_train) != len(train_arrays):
                raise ValueError(f"features.train has {len(all_train)} rows for {len(train_arrays)} clips")
            train_feats = (all_train[train_idx], all_labels[train_idx])
            val_feats = (all_train[val_idx], all_labels[val_idx]) if len(val_idx) else None
            test_feats = features.test
        else:  # augment: training features come from fresh random crops every epoch
            kw = dict(data=data, progress=progress)
            val_feats = (extract_features(encoder, train_arrays.subset(val_idx), modality, cfg,
                                          device, **kw) if len(val_idx) else None)
            test_feats = extract_features(encoder, test_arrays, modality, cfg, device, **kw)

        head = new_linear_head(encoder.feature_dim, setup.classes).to(device)
        if augment:
            model: nn.Module = StreamClassifier(encoder, modality, head, freeze_encoder=True)
            loader = clip_loader(train_arrays.subset(train_idx), data, cfg, train=True, seed=cfg.seed)

            def train_batches(epoch: int):
                set_epoch(loader, epoch)   # fresh random crops and order every epoch
                return loader
        else:
            model = head
            feats, labels = train_feats

            def train_batches(epoch: int):
                return feature_batches(feats, labels, cfg.batch_size, cfg.seed, epoch)

        def evaluate():
            head.eval()
            val = (predict_probs(head, _as_batches(val_feats, cfg.batch_size * 4), device)
                   if val_feats is not None else None)
            return val, predict_probs(head, _as_batches(test_feats, cfg.batch_size * 4), device)

        curve, val_hist, test_hist = train_and_track(
            model, head.parameters(), train_batches, evaluate,
            None if val_feats is None else val_feats[1], test_feats[1], cfg.linear_lr, cfg, device,
            progress=progress, desc=f"linear {modality}",
        )
    return summarise_curve(
        "linear" if augment else "linear_fast", modality, curve, cfg.select_on,
        num_train=len(train_idx), num_val=len(val_idx), num_test=len(test_arrays),
        seconds=time.perf_counter() - start,
        val_labels=None if val_feats is None else val_feats[1], test_labels=test_feats[1],
        val_probs=stack_history(val_hist) if keep_probs else None,
        test_probs=stack_history(test_hist) if keep_probs else None,
        model=head.cpu(),
        extra={"augment": augment},
    )


def _as_batches(features: tuple[np.ndarray, np.ndarray], batch_size: int) -> DataLoader:
    """In-order batches ``(features (B, D), labels (B,))``."""
    feats, labels = features
    return DataLoader(TensorDataset(torch.from_numpy(feats), torch.from_numpy(labels)),
                      batch_size=batch_size, shuffle=False)
