"""Multi-stream (joint + motion + bone) ensembles.

How the CMD paper produced its "3s-CMD" numbers is not in the reference code.
We use the common rule for classifiers and an equivalent one for retrieval:

* classification: average the softmax probabilities of the per-stream linear
  classifiers (each trained on its own frozen encoder) at every evaluation,
  giving an ensemble curve to which the same selection rule is applied;
* retrieval: cosine k-NN on the concatenation of the L2-normalised per-stream
  features, which ranks exactly as the average of per-stream cosine similarities
  (see :mod:`.knn`).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from .knn import concat_normalised, knn_accuracy
from .results import (ClassifierResult, EvalPoint, KnnResult, summarise_curve,
                      topk_accuracy)


def ensemble_classifiers(
    results: Sequence[ClassifierResult], select_on: str | None = None, name: str = "ensemble"
) -> ClassifierResult:
    """Average the per-evaluation probabilities of ``results`` (one per stream).

    Every result needs ``test_probs`` (run with ``keep_probs=True``), the same
    evaluation epochs and the same test (and validation) labels.

    Returns:
        A :class:`ClassifierResult` named ``name`` whose curve is the ensemble's.
    """
    if not results:
        raise ValueError("need at least one stream to ensemble")
    first = results[0]
    epochs = [p.epoch for p in first.curve]
    for r in results:
        if r.test_probs is None:
            raise ValueError(f"stream {r.modality!r} has no stored probabilities; run it with keep_probs=True")
        if [p.epoch for p in r.curve] != epochs:
            raise ValueError(f"stream {r.modality!r} was evaluated at other epochs than {first.modality!r}")
        if not np.array_equal(r.test_labels, first.test_labels):
            raise ValueError(f"stream {r.modality!r} has other test labels than {first.modality!r}")
        if (r.val_probs is None) != (first.val_probs is None) or (
                r.val_probs is not None and not np.array_equal(r.val_labels, first.val_labels)):
            raise ValueError(f"stream {r.modality!r} has another validation split than {first.modality!r}")
    test_probs = np.mean([r.test_probs for r in results], axis=0)            # (E, N_test, K)
    val_probs = (np.mean([r.val_probs for r in results], axis=0)
                 if first.val_probs is not None else None)                   # (E, N_val, K)
    many_classes = test_probs.shape[-1] > 5
    curve = [
        EvalPoint(
            epoch=epoch,
            train_loss=float(np.mean([r.curve[i].train_loss for r in results])),
            val_top1=None if val_probs is None else topk_accuracy(val_probs[i], first.val_labels, 1),
            test_top1=topk_accuracy(test_probs[i], first.test_labels, 1),
            test_top5=topk_accuracy(test_probs[i], first.test_labels, 5) if many_classes else None,
        )
        for i, epoch in enumerate(epochs)
    ]
    return summarise_curve(
        first.protocol, name, curve, select_on or first.select_on,
        num_train=first.num_train, num_val=first.num_val, num_test=first.num_test,
        seconds=float(sum(r.seconds for r in results)),
        val_labels=first.val_labels, test_labels=first.test_labels,
        val_probs=val_probs, test_probs=test_probs,
        extra={"streams": "+".join(r.modality for r in results)},
    )


def knn_ensemble(
    gallery: Mapping[str, np.ndarray],
    gallery_labels: np.ndarray,
    queries: Mapping[str, np.ndarray],
    query_labels: np.ndarray,
    ks: Sequence[int] = (1,),
    name: str = "ensemble",
) -> KnnResult:
    """k-NN on concatenated L2-normalised features of the streams in ``gallery``.

    Args:
        gallery: ``{stream: (N_g, D_s)}`` gallery features, one entry per stream.
        queries: ``{stream: (N_q, D_s)}`` query features, the same streams.
    """
    if set(gallery) != set(queries):
        raise ValueError(f"gallery streams {sorted(gallery)} differ from query streams {sorted(queries)}")
    streams = list(gallery)
    top1 = knn_accuracy(concat_normalised([gallery[s] for s in streams]), gallery_labels,
                        concat_normalised([queries[s] for s in streams]), query_labels, ks)
    return KnnResult(name, top1, len(gallery_labels), len(query_labels))
