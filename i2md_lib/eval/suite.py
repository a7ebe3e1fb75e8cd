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
from ..progress import progress_bar

from ..config import ExperimentConfig
from ..data.store import SkeletonArrays
from .ensemble import ensemble_classifiers, knn_ensemble
from .features import check_modality, split_features
from .finetune import finetune_eval, semi_supervised_eval
from .knn import knn_accuracy, knn_eval
from .linear import linear_eval
from .results import ClassifierResult, KnnResult
from .setup import EvalSetup

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
    setup = EvalSetup.from_config(cfg, train_arrays, test_arrays, device, progress)
    setup = setup.replace(num_classes=setup.classes)
    streams = list(encoders)
    results: dict[str, dict[str, Any]] = {}

    features = {}
    if "knn" in protocols or ("linear" in protocols and not augment):
        features = {m: split_features(encoders[m], m, setup) for m in streams}
    if "knn" in protocols:
        knn: dict[str, KnnResult] = {}
        for modality in streams:
            start = time.perf_counter()
            (gallery, g_labels), (queries, q_labels) = features[modality].train, features[modality].test
            top1 = knn_accuracy(gallery, g_labels, queries, q_labels, cfg.eval.knn_k)
            knn[modality] = KnnResult(modality, top1, len(gallery), len(queries),
                                      time.perf_counter() - start)
        if len(streams) > 1:
            first = features[streams[0]]
            knn["ensemble"] = knn_ensemble(
                {m: features[m].train[0] for m in streams}, first.train[1],
                {m: features[m].test[0] for m in streams}, first.test[1], cfg.eval.knn_k)
        results["knn"] = knn
    if "linear" in protocols:
        linear: dict[str, ClassifierResult] = {
            m: linear_eval(encoders[m], m, setup, augment=augment, features=features.get(m),
                           keep_probs=len(streams) > 1) for m in streams}
        if len(streams) > 1:
            linear["ensemble"] = ensemble_classifiers([linear[m] for m in streams])
        results["linear"] = linear
    tuned = [m for m in streams if m in semi_modalities]
    if "semi" in protocols:
        results["semi"] = {m: semi_supervised_eval(encoders[m], m, setup)
                           for m in progress_bar(tuned, desc="semi-supervised", disable=not progress or len(tuned) < 2)}
    if "finetune" in protocols:
        results["finetune"] = {m: finetune_eval(encoders[m], m, setup, fraction=1.0, seed=cfg.eval.seed)
                               for m in tuned}
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


def transfer_eval(encoder: nn.Module, modality: str, target: EvalSetup,
                  protocol: str = "finetune") -> ClassifierResult | KnnResult:
    """Transfer learning: evaluate an encoder pretrained on one dataset on another one.

    The protocols themselves take any splits, so transfer is just a matter of an
    :class:`EvalSetup` of the *target* dataset (e.g. ``EvalSetup.from_config(target_cfg)``;
    its ``data.window`` must be the pretraining one). The CMD reference pretrains on
    NTU-60 or NTU-120 (xsub) and fully fine-tunes on PKU-MMD II xsub with lr 0.01 (its
    semi script with ``--data-ratio 1.0``): that is ``protocol="finetune"``, the
    default. ``"linear"`` and ``"knn"`` give frozen-feature transfer numbers. The number
    of classes comes from the target's labels (e.g. 51 for PKU-MMD II).
    """
    if protocol == "finetune":
        return finetune_eval(encoder, modality, target, fraction=1.0, seed=target.eval.seed)
    if protocol == "linear":
        return linear_eval(encoder, modality, target)
    if protocol == "knn":
        return knn_eval(encoder, modality, target)
    raise ValueError(f"unknown transfer protocol {protocol!r}; choose one of {', '.join(TRANSFER_PROTOCOLS)}")
