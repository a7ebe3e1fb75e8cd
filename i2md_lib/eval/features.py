"""Clips in, features out: the loaders and the frozen-encoder feature extractor.

Every protocol feeds the encoder *joint* clips cropped by
:class:`~i2md_lib.data.datasets.EvalDataset` (centre crop 0.95 for testing, random
crop ratio U(0.5, 1) for training, both resized to ``window`` frames) and derives
the modality from the cropped clip on the device, as the CMD reference does.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ..config import DataConfig, EvalConfig
from ..data.datasets import EvalDataset, make_loader, set_epoch
from ..data.modalities import MODALITIES, to_modality
from ..data.store import SkeletonArrays
from ..progress import progress_bar
from .setup import EvalSetup, as_device


def check_modality(modality: str) -> str:
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}; choose one of {', '.join(MODALITIES)}")
    return modality


def clip_loader(
    arrays: SkeletonArrays,
    data_cfg: DataConfig,
    cfg: EvalConfig,
    *,
    train: bool,
    seed: int = 0,
    shuffle: bool | None = None,
    batch_size: int | None = None,
) -> DataLoader:
    """Batches ``(clips (B, C, window, V, M) float32, labels (B,) int64)`` of ``arrays``.

    ``train=True``: random crop with ratio ``~ U(cfg.train_crop_range)`` and a shuffled
    order (the reference's training loader); ``train=False``: centre crop
    ``cfg.test_crop_ratio`` in array order. Crops and order depend only on
    ``(seed, epoch)``: call :func:`~i2md_lib.data.datasets.set_epoch` before each epoch.
    ``window``, ``max_frames`` and ``num_workers`` come from ``data_cfg``.
    """
    dataset = EvalDataset(
        arrays, data_cfg.window, mode="train" if train else "test",
        crop_ratio=cfg.test_crop_ratio, crop_range=tuple(cfg.train_crop_range),
        seed=seed, max_frames=data_cfg.max_frames,
    )
    return make_loader(dataset, batch_size or cfg.batch_size, shuffle=train if shuffle is None else shuffle,
                       seed=seed, num_workers=data_cfg.num_workers)


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[nn.Module]:
    """Put ``module`` in eval mode with ``requires_grad=False``; restore both on exit."""
    was_training = module.training
    flags = [p.requires_grad for p in module.parameters()]
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)
        module.train(was_training)


@torch.no_grad()
def encode_loader(
    encoder: nn.Module,
    loader: DataLoader,
    modality: str,
    device: torch.device,
    progress: bool = False,
    desc: str = "features",
) -> tuple[np.ndarray, np.ndarray]:
    """Run ``encoder`` (in whatever mode it is) over ``loader``.

    Returns:
        ``features (N, D)`` float32 and ``labels (N,)`` int64, in loader order.
    """
    feats, labels = [], []
    for clips, y in progress_bar(loader, desc=desc, leave=False, disable=not progress):
        x = to_modality(clips.to(device, non_blocking=True).float(), modality)  # (B, C, T, V, M)
        feats.append(encoder(x).float().cpu())                                   # (B, D)
        labels.append(torch.as_tensor(y))
    if not feats:
        raise ValueError("cannot extract features from an empty split")
    return torch.cat(feats).numpy(), torch.cat(labels).long().numpy()


def extract_features(
    encoder: nn.Module,
    arrays: SkeletonArrays,
    modality: str,
    cfg: EvalConfig,
    device: torch.device | str | None = None,
    *,
    data: DataConfig,
    train_crop: bool = False,
    seed: int = 0,
    epoch: int = 0,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Features of every clip of ``arrays`` from the frozen ``encoder``.

    The encoder is moved to ``device`` and runs in eval mode (BatchNorm uses its
    running statistics) without gradients; its mode and ``requires_grad`` flags are
    restored afterwards.

    Args:
        encoder: ``forward(x (N, C, window, V, M)) -> (N, D)``.
        arrays: the split; ``arrays.data`` is ``(N, 3, T, 25, 2)`` joints.
        modality: ``joint`` | ``motion`` | ``bone``, derived from the *cropped* clip.
        cfg: crop settings and batch size.
        device: where to run (default :func:`~i2md_lib.utils.get_device`).
        data: ``window`` (frames after crop-resize), ``max_frames`` and ``num_workers``.
        train_crop: the random training crop of ``(seed, epoch)`` instead of the centre crop.
        progress: show a tqdm bar.

    Returns:
        ``features (N, D)`` float32 and ``labels (N,)`` int64, in the order of ``arrays``.
    """
    check_modality(modality)
    device = as_device(device)
    encoder.to(device)
    loader = clip_loader(arrays, data, cfg, train=train_crop, seed=seed, shuffle=False)
    set_epoch(loader, epoch)
    with frozen(encoder):
        return encode_loader(encoder, loader, modality, device, progress, desc=f"{modality} features")


@dataclass
class SplitFeatures:
    """Centre-crop features of the whole training and test splits of one stream.

    ``train``/``test`` are ``(features (N, D) float32, labels (N,))`` in array order;
    pass them to :func:`linear_eval` to reuse the features the k-NN protocol computed.
    """

    train: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]


def split_features(encoder: nn.Module, modality: str, setup: EvalSetup) -> SplitFeatures:
    """Centre-crop features of the training and test splits (k-NN and the fast linear probe share them)."""
    kw = dict(data=setup.data, progress=setup.progress)
    return SplitFeatures(extract_features(encoder, setup.train, modality, setup.eval, setup.device, **kw),
                         extract_features(encoder, setup.test, modality, setup.eval, setup.device, **kw))
