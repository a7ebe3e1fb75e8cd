"""Accuracy metrics, result records and the model-selection rule.

The CMD reference evaluates the *test* set every 5 epochs and reports the best
value it saw ("Final best accuracy"), which selects the model on the test set.
We also carve a validation split out of the training data and report the test
accuracy at the epoch with the best validation accuracy. Every
:class:`ClassifierResult` carries both numbers, so a chapter can show the gap:

* ``select_on="val"``  -- test top-1 at the best-validation evaluation (ours);
* ``select_on="test"`` -- best test top-1 over all evaluations (the reference);
* ``select_on="last"`` -- test top-1 at the final evaluation.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

SELECT_RULES: tuple[str, ...] = ("val", "test", "last")


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Percentage of rows of ``scores`` ``(N, K)`` whose label is among the ``k`` highest.

    Ties are broken by the lower class index (``argsort`` is stable).
    """
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    if scores.ndim != 2 or len(scores) != len(labels):
        raise ValueError(f"scores must be (N, K) for N={len(labels)} labels, got {scores.shape}")
    if len(labels) == 0:
        return float("nan")
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]       # (N, k)
    return float(100.0 * (top == labels[:, None]).any(axis=1).mean())


@dataclass
class EvalPoint:
    """One evaluation during training (accuracies in %)."""

    epoch: int
    train_loss: float
    val_top1: float | None
    test_top1: float
    test_top5: float | None = None


def check_select_rule(select_on: str, num_val: int) -> None:
    """Fail before training when ``select_on`` cannot be applied (unknown, or "val" without val clips)."""
    if select_on not in SELECT_RULES:
        raise ValueError(f"eval.select_on must be one of {SELECT_RULES}, got {select_on!r}")
    if select_on == "val" and num_val == 0:
        raise ValueError(
            "eval.select_on='val' needs a validation split, but it is empty; set eval.val_fraction > 0 "
            "or use select_on='test' (the reference) or 'last'"
        )


def select_index(curve: Sequence[EvalPoint], select_on: str) -> int:
    """Index of the evaluation chosen by ``select_on`` (ties: the earliest one).

    Raises:
        ValueError: unknown rule, empty curve, or ``"val"`` without validation accuracies.
    """
    if select_on not in SELECT_RULES:
        raise ValueError(f"select_on must be one of {SELECT_RULES}, got {select_on!r}")
    if not curve:
        raise ValueError("cannot select from an empty evaluation curve")
    if select_on == "last":
        return len(curve) - 1
    if select_on == "val":
        if any(p.val_top1 is None for p in curve):
            raise ValueError(
                "select_on='val' needs a validation split; set eval.val_fraction > 0 "
                "or use select_on='test' (the reference) or 'last'"
            )
        values = [p.val_top1 for p in curve]
    else:
        values = [p.test_top1 for p in curve]
    return int(np.argmax(values))  # argmax returns the first maximum


@dataclass
class ClassifierResult:
    """Outcome of a linear probe or a fine-tuning run on one stream (or an ensemble).

    ``top1``/``top5``/``chosen_epoch`` follow ``select_on``; ``top1_at_best_val``
    and ``top1_best_test`` are both kept so the two selection rules can be compared.
    ``val_probs``/``test_probs`` ``(evaluations, N, classes)`` are kept only when
    asked for (ensembles need them).
    """

    protocol: str
    modality: str
    select_on: str
    chosen_epoch: int
    top1: float
    top5: float | None
    top1_at_best_val: float | None
    top1_best_test: float
    curve: list[EvalPoint]
    num_train: int
    num_val: int
    num_test: int
    seconds: float = 0.0
    val_labels: np.ndarray | None = None
    test_labels: np.ndarray | None = None
    val_probs: np.ndarray | None = None
    test_probs: np.ndarray | None = None
    model: Any = None                       # the trained model, only when asked for
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Plain numbers (no arrays, no model) for tables and JSON."""
        return {
            "protocol": self.protocol, "modality": self.modality, "select_on": self.select_on,
            "top1": self.top1, "top5": self.top5, "chosen_epoch": self.chosen_epoch,
            "top1_at_best_val": self.top1_at_best_val, "top1_best_test": self.top1_best_test,
            "num_train": self.num_train, "num_val": self.num_val, "num_test": self.num_test,
            "seconds": round(self.seconds, 3),
            **{k: v for k, v in self.extra.items() if isinstance(v, (bool, int, float, str))},
        }


def summarise_curve(
    protocol: str, modality: str, curve: list[EvalPoint], select_on: str, **fields: Any
) -> ClassifierResult:
    """Build a :class:`ClassifierResult` from ``curve`` with the selection rule applied."""
    chosen = curve[select_index(curve, select_on)]
    has_val = all(p.val_top1 is not None for p in curve)
    at_best_val = curve[select_index(curve, "val")].test_top1 if has_val else None
    return ClassifierResult(
        protocol=protocol, modality=modality, select_on=select_on,
        chosen_epoch=chosen.epoch, top1=chosen.test_top1, top5=chosen.test_top5,
        top1_at_best_val=at_best_val,
        top1_best_test=max(p.test_top1 for p in curve), curve=curve, **fields,
    )


@dataclass
class KnnResult:
    """k-NN retrieval accuracy (%) for each ``k``; ``top1[1]`` is the reference protocol."""

    modality: str
    top1: dict[int, float]
    num_gallery: int
    num_query: int
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {"protocol": "knn", "modality": self.modality,
                **{f"top1@k={k}": v for k, v in self.top1.items()},
                "num_gallery": self.num_gallery, "num_query": self.num_query,
                "seconds": round(self.seconds, 3)}


@dataclass
class SemiResult:
    """Fine-tuning on a label fraction, repeated over seeds; mean and sample std (ddof=1)."""

    modality: str
    fraction: float
    seeds: list[int]
    runs: list[ClassifierResult]

    @property
    def top1s(self) -> np.ndarray:
        return np.array([r.top1 for r in self.runs])

    @property
    def mean(self) -> float:
        return float(self.top1s.mean())

    @property
    def std(self) -> float:
        return float(self.top1s.std(ddof=1)) if len(self.runs) > 1 else 0.0

    def summary(self) -> dict[str, Any]:
        best_test = np.array([r.top1_best_test for r in self.runs])
        return {
            "protocol": "semi" if self.fraction < 1.0 else "finetune",
            "modality": self.modality, "fraction": self.fraction, "seeds": list(self.seeds),
            "select_on": self.runs[0].select_on if self.runs else None,
            "top1_mean": self.mean, "top1_std": self.std,
            "top1_best_test_mean": float(best_test.mean()),
            "top1_best_test_std": float(best_test.std(ddof=1)) if len(best_test) > 1 else 0.0,
            "num_labelled": self.runs[0].num_train if self.runs else 0,
        }
