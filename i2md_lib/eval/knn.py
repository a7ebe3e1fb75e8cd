"""k-nearest-neighbour action retrieval with cosine similarity.

The reference protocol (``action_retrieval_cmd.py``): features of the frozen
encoder for the centre-cropped training split (the *gallery*) and test split
(the *queries*), ``KNeighborsClassifier(n_neighbors=1, metric="cosine")``; the
reported number is the top-1 accuracy of the predicted label. We also report
other ``k`` (majority vote of the ``k`` nearest; ties go to the lower label).

Multi-stream retrieval concatenates the L2-normalised features of the streams
(:func:`concat_normalised`). With ``S`` streams the concatenation has norm
``sqrt(S)``, so its cosine similarity is exactly the *average* of the per-stream
cosine similarities: the two ensemble choices are the same ranking.
"""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import torch
from sklearn.neighbors import KNeighborsClassifier
from torch import nn

from .features import split_features
from .results import KnnResult
from .setup import EvalSetup


def l2_normalise(features: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows of ``features`` ``(N, D)`` scaled to unit length (zero rows stay zero)."""
    features = np.asarray(features, dtype=np.float32)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, eps)


def concat_normalised(features: Sequence[np.ndarray]) -> np.ndarray:
    """``[f_1/|f_1|, ..., f_S/|f_S|]``: ``S`` arrays ``(N, D_s)`` -> ``(N, sum D_s)``."""
    if not features:
        raise ValueError("need at least one feature array")
    n = {len(f) for f in features}
    if len(n) != 1:
        raise ValueError(f"streams have different numbers of clips: {sorted(n)}")
    return np.concatenate([l2_normalise(f) for f in features], axis=1)


def knn_accuracy(
    gallery: np.ndarray,
    gallery_labels: np.ndarray,
    queries: np.ndarray,
    query_labels: np.ndarray,
    ks: Sequence[int] = (1,),
) -> dict[int, float]:
    """Top-1 accuracy (%) of cosine k-NN classification for each ``k`` in ``ks``.

    Args:
        gallery: ``(N_g, D)`` features with labels ``(N_g,)``.
        queries: ``(N_q, D)`` features with labels ``(N_q,)``.

    Raises:
        ValueError: a ``k`` larger than the gallery, or mismatched shapes.
    """
    gallery, queries = np.asarray(gallery), np.asarray(queries)
    if gallery.ndim != 2 or queries.ndim != 2 or gallery.shape[1] != queries.shape[1]:
        raise ValueError(f"gallery {gallery.shape} and queries {queries.shape} must be (N, D) with one D")
    if len(gallery) != len(gallery_labels) or len(queries) != len(query_labels):
        raise ValueError("features and labels differ in length")
    return {int(k): float(100.0 * np.mean(knn_predict(gallery, gallery_labels, queries, k)
                                          == np.asarray(query_labels)))
            for k in ks}


def knn_predict(gallery: np.ndarray, gallery_labels: np.ndarray, queries: np.ndarray,
                k: int = 1) -> np.ndarray:
    """Cosine ``k``-NN label of every query: ``(N_g, D)``, ``(N_g,)``, ``(N_q, D)`` -> ``(N_q,)``."""
    if not 1 <= k <= len(gallery):
        raise ValueError(f"k={k} needs 1 <= k <= gallery size ({len(gallery)} clips)")
    knn = KNeighborsClassifier(n_neighbors=k, metric="cosine")
    knn.fit(gallery, np.asarray(gallery_labels))
    return knn.predict(queries)


def knn_eval(encoder: nn.Module, modality: str, setup: EvalSetup) -> KnnResult:
    """The retrieval protocol for one stream: training split = gallery, test split = queries."""
    start = time.perf_counter()
    features = split_features(encoder, modality, setup)
    (gallery, gallery_labels), (queries, query_labels) = features.train, features.test
    top1 = knn_accuracy(gallery, gallery_labels, queries, query_labels, setup.eval.knn_k)
    return KnnResult(modality, top1, len(gallery), len(queries), time.perf_counter() - start)
