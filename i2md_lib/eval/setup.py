"""What every evaluation protocol takes besides the encoder: one options object.

>>> setup = EvalSetup.from_config(cfg)            # doctest: +SKIP
>>> knn_eval(encoder, "joint", setup)             # doctest: +SKIP
>>> linear_eval(encoder, "joint", setup, augment=False)   # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..config import DataConfig, EvalConfig, ExperimentConfig
from ..data.datasets import load_arrays
from ..data.store import SkeletonArrays
from ..utils import get_device


@dataclass(frozen=True)
class EvalSetup:
    """The splits, the settings and the device of an evaluation.

    Attributes:
        train, test: the benchmark's training and test splits (``(N, 3, T, 25, 2)`` joints).
        eval: protocol settings (learning rates, epochs, crops, ``val_fraction``,
            ``select_on``, ``seed``, ...).
        data: ``window`` (frames after crop-resize), ``max_frames``, ``num_workers``.
        device: where encoders and heads run.
        progress: show tqdm bars.
        num_classes: size of the label space (default ``1 + max label`` of both splits).
    """

    train: SkeletonArrays
    test: SkeletonArrays
    eval: EvalConfig
    data: DataConfig
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))
    progress: bool = False
    num_classes: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "device", as_device(self.device))

    @classmethod
    def from_config(cls, cfg: ExperimentConfig, train: SkeletonArrays | None = None,
                    test: SkeletonArrays | None = None, device: torch.device | str | None = None,
                    progress: bool = False) -> "EvalSetup":
        """The setup of ``cfg``: its dataset's splits (unless given), ``cfg.eval``, ``cfg.data``,
        and the device (default ``cfg.pretrain.device``, else CUDA when available)."""
        train = load_arrays(cfg.data, "train") if train is None else train
        test = load_arrays(cfg.data, "val") if test is None else test
        setting = "device" if device else "pretrain.device"
        return cls(train, test, cfg.eval, cfg.data, as_device(device or cfg.pretrain.device, setting), progress)

    @property
    def classes(self) -> int:
        """``num_classes``, or ``1 + the largest label`` of the two splits."""
        return self.num_classes or infer_num_classes(self.train.labels, self.test.labels)

    def replace(self, **changes: Any) -> "EvalSetup":
        """A copy with some fields changed (e.g. ``eval=...`` or another ``device``)."""
        return dataclasses.replace(self, **changes)


def infer_num_classes(*label_arrays: np.ndarray) -> int:
    """``1 + the largest label`` over all arrays."""
    return int(max(int(np.max(labels)) for labels in label_arrays if len(labels))) + 1


def as_device(device: torch.device | str | None, setting: str = "device") -> torch.device:
    """``device`` as a :class:`torch.device` (None: :func:`~i2md_lib.utils.get_device`; a device
    the machine lacks raises a ``ValueError`` naming ``setting``)."""
    return device if isinstance(device, torch.device) else get_device(device, setting)
