"""The supervised schedule shared by the linear probe and fine-tuning.

Both protocols train ``encoder -> Linear(feature_dim, classes)`` with SGD
(momentum 0.9), a step schedule (x0.1 at ``cfg.lr_milestones``) and cross-entropy,
and evaluate the validation and test splits every ``cfg.eval_every`` epochs (and
after the last epoch). They differ only in what is trainable:

* linear probe: the head; the encoder stays in eval mode (BatchNorm frozen);
* fine-tuning: everything, with the model in train mode.
"""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import EvalConfig
from ..data.modalities import to_modality
from ..progress import progress_bar
from .results import EvalPoint, topk_accuracy

#: ``() -> (val probabilities (N_val, K) or None, test probabilities (N_test, K))``
Evaluator = Callable[[], tuple[np.ndarray | None, np.ndarray]]


def new_linear_head(feature_dim: int, num_classes: int) -> nn.Linear:
    """``Linear(feature_dim, num_classes)`` with weights ``N(0, 0.01)`` and zero bias (the reference)."""
    head = nn.Linear(feature_dim, num_classes)
    with torch.no_grad():
        head.weight.normal_(mean=0.0, std=0.01)
        head.bias.zero_()
    return head


class StreamClassifier(nn.Module):
    """Joint clip ``(N, C, T, V, M)`` -> modality -> encoder ``(N, D)`` -> head ``(N, classes)``.

    With ``freeze_encoder`` the encoder runs without gradients and stays in eval
    mode even when the classifier is switched to train mode.
    """

    def __init__(self, encoder: nn.Module, modality: str, head: nn.Module, freeze_encoder: bool):
        super().__init__()
        self.encoder, self.modality, self.head = encoder, modality, head
        self.freeze_encoder = freeze_encoder

    def train(self, mode: bool = True) -> "StreamClassifier":
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``x (N, C, T, V, M)`` joints -> ``(N, D)``."""
        x = to_modality(x, self.modality)
        if self.freeze_encoder:
            with torch.no_grad():
                return self.encoder(x)
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@torch.no_grad()
def predict_probs(model: nn.Module, batches: Iterable, device: torch.device) -> np.ndarray:
    """Softmax outputs ``(N, K)`` of ``model`` (put in eval mode by the caller) over ``batches``."""
    out = [F.softmax(model(x.to(device).float()), dim=1).float().cpu() for x, _ in batches]
    return torch.cat(out).numpy()


def train_and_track(
    model: nn.Module,
    params: Iterable[nn.Parameter],
    train_batches: Callable[[int], Iterable],
    evaluate: Evaluator,
    val_labels: np.ndarray | None,
    test_labels: np.ndarray,
    lr: float,
    cfg: EvalConfig,
    device: torch.device,
    *,
    progress: bool = False,
    desc: str = "train",
) -> tuple[list[EvalPoint], list[np.ndarray | None], list[np.ndarray]]:
    """Run the schedule and evaluate every ``cfg.eval_every`` epochs (and at the end).

    Args:
        model: maps a batch ``x`` to logits ``(B, K)``; trained in train mode.
        params: what the optimiser updates.
        train_batches: ``epoch -> iterable of (x, labels)``, called once per epoch (1-based).
        evaluate: probabilities on the validation and test splits; it may switch
            ``model`` to eval mode, the loop switches it back.

    Returns:
        The curve and, per evaluation, the validation and test probabilities.
    """
    if cfg.epochs < 1 or cfg.eval_every < 1:
        raise ValueError(f"need epochs >= 1 and eval_every >= 1, got {cfg.epochs}, {cfg.eval_every}")
    optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(cfg.lr_milestones), gamma=0.1)
    curve: list[EvalPoint] = []
    val_history: list[np.ndarray | None] = []
    test_history: list[np.ndarray] = []
    for epoch in progress_bar(range(1, cfg.epochs + 1), desc=desc, disable=not progress):
        model.train()
        total, count = 0.0, 0
        for x, y in train_batches(epoch):
            x, y = x.to(device, non_blocking=True).float(), torch.as_tensor(y).to(device).long()
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, count = total + loss.item() * len(y), count + len(y)
        scheduler.step()
        if epoch % cfg.eval_every and epoch != cfg.epochs:
            continue
        val_probs, test_probs = evaluate()
        model.train()
        many_classes = test_probs.shape[1] > 5          # top-5 only means something above 5 classes
        curve.append(EvalPoint(
            epoch=epoch, train_loss=total / max(count, 1),
            val_top1=None if val_probs is None else topk_accuracy(val_probs, val_labels, 1),
            test_top1=topk_accuracy(test_probs, test_labels, 1),
            test_top5=topk_accuracy(test_probs, test_labels, 5) if many_classes else None,
        ))
        val_history.append(val_probs)
        test_history.append(test_probs)
    return curve, val_history, test_history


def stack_history(history: list[np.ndarray | None]) -> np.ndarray | None:
    """``evaluations x (N, K)`` -> ``(evaluations, N, K)``; None when there is no split."""
    if not history or history[0] is None:
        return None
    return np.stack(history)
