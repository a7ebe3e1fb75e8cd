"""Seeded, class-stratified index splits for the evaluation protocols.

Two splits are drawn from the *training* split of a benchmark:

* a validation split for model selection (:func:`stratified_val_split`); the
  CMD reference has none and selects on the test set instead;
* the labelled subset of the semi-supervised protocol
  (:func:`label_fraction_subset`). The reference draws it uniformly at random
  with an unseeded ``np.random.shuffle``, so a class can be missing at 1 %
  labels; ours is seeded, stratified by class and keeps every class.

Per-class counts come from :func:`allocate_per_class` (largest-remainder
rounding), so the total is ``round(fraction * N)`` whenever the "at least one
per class" rule allows it.
"""
from __future__ import annotations

import numpy as np


def allocate_per_class(
    counts: np.ndarray, fraction: float, min_per_class: int = 1
) -> np.ndarray:
    """How many items to take from each class so that the total is ``round(fraction * sum)``.

    Each class gets ``floor(fraction * count)``; the leftover is handed out by the
    largest fractional remainders (ties: the lower class index). Classes then get
    at least ``min(min_per_class, count)``, which can push the total above the target.

    Args:
        counts: ``(K,)`` number of items per class.
        fraction: in ``[0, 1]``.
        min_per_class: floor applied to every non-empty class.

    Returns:
        ``(K,)`` int64 quotas with ``0 <= quota <= count``.

    >>> allocate_per_class(np.array([10, 10, 5]), 0.1).tolist()
    [1, 1, 1]
    """
    counts = np.asarray(counts, dtype=np.int64)
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    exact = fraction * counts
    quota = np.floor(exact).astype(np.int64)
    leftover = int(round(fraction * counts.sum())) - int(quota.sum())
    if leftover > 0:
        remainder = np.round(exact - quota, 9)   # so float noise (7 * 0.2 = 1.4000000000000001) cannot break ties
        order = np.lexsort((np.arange(len(counts)), -remainder))  # largest remainder first
        quota[order[:leftover]] += 1
    quota = np.maximum(quota, np.minimum(min_per_class, counts))
    return np.minimum(quota, counts)


def _class_counts(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    classes, counts = np.unique(labels, return_counts=True)
    return classes, counts


def stratified_val_split(
    labels: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices of ``labels`` ``(N,)`` into ``(train_idx, val_idx)``, stratified by class.

    Every class keeps at least one training clip; a class with two or more clips
    puts at least one in validation when ``val_fraction > 0``. Both index arrays
    are sorted. ``val_fraction == 0`` gives an empty validation split.
    """
    labels = np.asarray(labels)
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if val_fraction == 0.0:
        return np.arange(len(labels)), np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    classes, counts = _class_counts(labels)
    n_val = allocate_per_class(counts, val_fraction, min_per_class=1)
    n_val = np.minimum(n_val, counts - 1)          # keep one training clip per class
    val_parts = []
    for cls, k in zip(classes, n_val):
        members = np.flatnonzero(labels == cls)
        val_parts.append(rng.choice(members, size=int(k), replace=False))
    val_idx = np.sort(np.concatenate(val_parts)).astype(np.int64)
    train_idx = np.setdiff1d(np.arange(len(labels)), val_idx)
    return train_idx, val_idx


def label_fraction_subset(
    labels: np.ndarray, fraction: float, seed: int, pool: np.ndarray | None = None
) -> np.ndarray:
    """Indices of a labelled subset holding ``fraction`` of each class, seeded.

    The per-class quota is computed on *all* of ``labels`` (so "1 % labels" means 1 %
    of the benchmark's training split, as in the reference) and drawn from ``pool``
    (e.g. the training indices left after carving out the validation split), with at
    least one clip per class. ``fraction == 1`` returns the whole pool.

    Args:
        labels: ``(N,)`` class of every training clip.
        fraction: labelled fraction in ``(0, 1]``.
        seed: draws are reproducible per seed and differ between seeds.
        pool: indices allowed in the subset; default all.

    Returns:
        Sorted int64 indices into ``labels``.
    """
    labels = np.asarray(labels)
    pool = np.arange(len(labels)) if pool is None else np.asarray(pool, dtype=np.int64)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    if fraction == 1.0:
        return np.sort(pool)
    rng = np.random.default_rng(seed)
    classes, counts = _class_counts(labels)
    quota = allocate_per_class(counts, fraction, min_per_class=1)
    pool_labels = labels[pool]
    chosen = []
    for cls, k in zip(classes, quota):
        members = pool[pool_labels == cls]
        if len(members) == 0:
            raise ValueError(
                f"class {int(cls)} has no clip left in the pool after the validation split; "
                "lower val_fraction or use more data"
            )
        chosen.append(rng.choice(members, size=min(int(k), len(members)), replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64)
