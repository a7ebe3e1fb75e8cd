"""All protocols for a set of pretrained stream encoders, and transfer learning.

:func:`evaluate_encoders` is what the CLI (``python -m i2md_lib evaluate``) and the
book call: it loads the benchmark's training and test splits, runs k-NN retrieval,
the linear probe and semi-supervised fine-tuning for each stream, adds the
multi-stream ensembles, and returns the results; :func:`results_table` flattens
them into rows for a table.
"""
from __future__ import annotations

import time
from typing import Any, Mapping, Sequence

import torch
from torch import nn
from tqdm import tqdm

from ..config import DataConfig, EvalConfig, ExperimentConfig
from ..data.datasets import load_arrays
from ..data.store import SkeletonArrays
from .ensemble import ensemble_classifiers, knn_ensemble
from .features import as_device, check_modality
from .finetune import finetune_eval, semi_supervised_eval
from .knn import knn_accuracy, knn_eval
from .linear import infer_num_classes, linear_eval, split_features
from .results import ClassifierResult, KnnResult, SemiResult

PROTOCOLS: tuple[str, ...] = ("knn", "linear", "semi", "finetune")
TRANSFER_PROTOCOLS: tuple[str, ...] = ("finetune", "linear", "knn")


def evaluate_encoders(
    encoders: Mapping[str, nn.Module],
    cfg: ExperimentConfig,
    protocols: Sequence[str] = ("knn", "linear", "semi"),
    train_arrays: SkeletonArrays | None = None,
    test_arrays: SkeletonArrays | None = None,
    *,
    device: torch.device | str | None = None,
    augment: bool = True,
    semi_modalities: Sequence[str] = ("joint",),
    progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Run ``protocols`` on every stream encoder and on their ensemble.

    Args:
        encoders: ``{modality: encoder}``, e.g. ``encoders_for_eval(model)``; each
            encoder maps ``(N, C, window, V, M)`` clips of its modality to ``(N, D)``.
        cfg: ``cfg.eval`` (protocol settings) and ``cfg.data`` (dataset, window).
        protocols: any of ``knn``, ``linear``, ``semi`` (``cfg.eval.label_fractions``
            x ``cfg.eval.semi_seeds``) and ``finetune`` (all labels, seed ``cfg.eval.seed``).
        train_arrays, test_arrays: default ``load_arrays(cfg.data, "train" / "val")``.
        device: default ``cfg.pretrain.device``, else CUDA when available.
        augment: linear probe with random training crops (reference) or the fast path.
        semi_modalities: streams that are fine-tuned (the reference fine-tunes joint only).
        progress: tqdm bars.

    Returns:
        ``{"knn": {stream: KnnResult}, "linear": {stream: ClassifierResult},
        "semi": {stream: {fraction: SemiResult}}, "finetune": {stream: ClassifierResult}}``
        for the protocols run; with two or more streams, ``knn`` and ``linear`` also
        hold an ``"ensemble"`` entry.
    """
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown:
        raise ValueError(f"unknown protocols {unknown}; choose from {', '.join(PROTOCOLS)}")
    if not encoders:
        raise ValueError("no encoders to evaluate")
    for modality in encoders:
        check_modality(modality)
    ecfg, data = cfg.eval, cfg.data
    device = as_device(device or cfg.pretrain.device)
    train_arrays = load_arrays(data, "train") if train_arrays is None else train_arrays
    test_arrays = load_arrays(data, "val") if test_arrays is None else test_arrays
    num_classes = infer_num_classes(train_arrays.labels, test_arrays.labels)
    streams = list(encoders)
    results: dict[str, dict[str, Any]] = {}

    features = {}
    if "knn" in protocols or ("linear" in protocols and not augment):
        for modality in streams:
            features[modality] = split_features(encoders[modality], train_arrays, test_arrays,
                                                modality, ecfg, device, data=data, progress=progress)
    if "knn" in protocols:
        knn: dict[str, KnnResult] = {}
        for modality in streams:
            start = time.perf_counter()
            (gallery, g_labels), (queries, q_labels) = features[modality].train, features[modality].test
            top1 = knn_accuracy(gallery, g_labels, queries, q_labels, ecfg.knn_k)
            knn[modality] = KnnResult(modality, top1, len(gallery), len(queries),
                                      time.perf_counter() - start)
        if len(streams) > 1:
            first = features[streams[0]]
            knn["ensemble"] = knn_ensemble(
                {m: features[m].train[0] for m in streams}, first.train[1],
                {m: features[m].test[0] for m in streams}, first.test[1], ecfg.knn_k)
        results["knn"] = knn
    if "linear" in protocols:
        linear: dict[str, ClassifierResult] = {}
        for modality in streams:
            linear[modality] = linear_eval(
                encoders[modality], train_arrays, test_arrays, modality, ecfg, device, data=data,
                augment=augment, features=features.get(modality), num_classes=num_classes,
                keep_probs=len(streams) > 1, progress=progress)
        if len(streams) > 1:
            linear["ensemble"] = ensemble_classifiers([linear[m] for m in streams])
        results["linear"] = linear
    tuned = [m for m in streams if m in semi_modalities]
    if "semi" in protocols:
        semi: dict[str, dict[float, SemiResult]] = {}
        for modality in tqdm(tuned, desc="semi-supervised", disable=not progress or len(tuned) < 2):
            semi[modality] = semi_supervised_eval(
                encoders[modality], train_arrays, test_arrays, modality, ecfg, device, data=data,
                progress=progress)
        results["semi"] = semi
    if "finetune" in protocols:
        results["finetune"] = {
            modality: finetune_eval(encoders[modality], train_arrays, test_arrays, modality, ecfg,
                                    device, data=data, fraction=1.0, seed=ecfg.seed,
                                    num_classes=num_classes, progress=progress)
            for modality in tuned
        }
    return results


def results_table(results: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row (a plain dict of numbers) per protocol, stream and label fraction."""
    rows = []
    for protocol, per_stream in results.items():
        for stream, result in per_stream.items():
            if isinstance(result, Mapping):          # semi: {fraction: SemiResult}
                rows.extend(r.summary() for r in result.values())
            else:
                rows.append({**result.summary(), "modality": stream})
    return rows


def transfer_eval(
    encoder: nn.Module,
    target_train: SkeletonArrays,
    target_test: SkeletonArrays,
    modality: str,
    cfg: EvalConfig,
    device: torch.device | str | None = None,
    *,
    data: DataConfig,
    protocol: str = "finetune",
    progress: bool = False,
) -> ClassifierResult | KnnResult:
    """Transfer learning: evaluate an encoder pretrained on one dataset on another one.

    The protocols themselves take any arrays, so transfer is just a matter of
    passing the *target* dataset's splits (``load_arrays(target_data_cfg, part)``).
    The CMD reference pretrains on NTU-60 or NTU-120 (xsub) and fully fine-tunes
    on PKU-MMD II xsub with lr 0.01 (its semi script with ``--data-ratio 1.0``):
    that is ``protocol="finetune"``, the default. ``"linear"`` and ``"knn"`` give
    frozen-feature transfer numbers.

    Args:
        encoder: pretrained on the source dataset; not modified.
        target_train, target_test: the target dataset's splits; the number of classes
            comes from their labels (e.g. 51 for PKU-MMD II).
        data: the *target* ``DataConfig``; its ``window`` must be the pretraining one.
        protocol: ``finetune`` | ``linear`` | ``knn``.
    """
    if protocol == "finetune":
        return finetune_eval(encoder, target_train, target_test, modality, cfg, device, data=data,
                             fraction=1.0, seed=cfg.seed, progress=progress)
    if protocol == "linear":
        return linear_eval(encoder, target_train, target_test, modality, cfg, device, data=data,
                           progress=progress)
    if protocol == "knn":
        return knn_eval(encoder, target_train, target_test, modality, cfg, device, data=data,
                        progress=progress)
    raise ValueError(f"unknown transfer protocol {protocol!r}; choose one of {', '.join(TRANSFER_PROTOCOLS)}")
