"""Downstream evaluation of pretrained skeleton encoders (CMD / I²MD protocols).

The protocols, as the CMD reference code runs them (https://github.com/maoyunyao/CMD:
``action_retrieval_cmd.py``, ``action_classification_cmd.py``, ``action_classification_cmd_semi.py``
and their scripts), and where ours differ:

* **k-NN retrieval** (:func:`knn_eval`): frozen encoder, centre-crop features, cosine
  1-NN with the training split as gallery and the test split as queries; we add
  other ``k`` (``EvalConfig.knn_k``).
* **Linear evaluation** (:func:`linear_eval`): frozen encoder in eval mode plus a new
  ``Linear`` head, SGD lr 0.1, 80 epochs, random training crop. A fast path trains
  the head on precomputed centre-crop features (``augment=False``).
* **Semi-supervised** (:func:`semi_supervised_eval`): fine-tune everything on 1 % /
  10 % of the labels; our subsets are seeded and stratified (the reference's are
  unseeded and uniform) and we report mean and std over ``EvalConfig.semi_seeds``.
  Full fine-tuning is ``finetune_eval(..., fraction=1.0)``.
* **Model selection**: the reference reports the best test accuracy over
  evaluations every 5 epochs. We hold out a validation split of the training data
  and report the test accuracy at the best validation epoch
  (``EvalConfig.select_on="val"``); every result also carries the reference's number.
* **Ensembles** (:func:`ensemble_classifiers`, :func:`knn_ensemble`): average of the
  streams' softmax probabilities; concatenated normalised features for k-NN.
* **Transfer** (:func:`transfer_eval`): the same protocols on another dataset's arrays.

:func:`evaluate_encoders` runs them all for ``{modality: encoder}``.
"""
from __future__ import annotations

from .eval.classifier import StreamClassifier, new_linear_head, train_and_track
from .eval.ensemble import ensemble_classifiers, knn_ensemble
from .eval.features import SplitFeatures, clip_loader, encode_loader, extract_features, frozen, split_features
from .eval.finetune import finetune_eval, semi_supervised_eval
from .eval.knn import concat_normalised, knn_accuracy, knn_eval, l2_normalise
from .eval.linear import feature_batches, linear_eval
from .eval.results import (SELECT_RULES, ClassifierResult, EvalPoint, KnnResult, SemiResult,
                           select_index, summarise_curve, topk_accuracy)
from .eval.setup import EvalSetup
from .eval.splits import allocate_per_class, label_fraction_subset, stratified_val_split
from .eval.suite import PROTOCOLS, evaluate_encoders, results_table, transfer_eval

__all__ = [
    "PROTOCOLS", "SELECT_RULES", "ClassifierResult", "EvalPoint", "EvalSetup", "KnnResult", "SemiResult",
    "SplitFeatures", "StreamClassifier", "allocate_per_class", "clip_loader", "concat_normalised",
    "encode_loader", "ensemble_classifiers", "evaluate_encoders", "extract_features",
    "feature_batches", "finetune_eval", "frozen", "knn_accuracy", "knn_ensemble", "knn_eval",
    "l2_normalise", "label_fraction_subset", "linear_eval", "new_linear_head", "results_table",
    "select_index", "semi_supervised_eval", "split_features", "stratified_val_split",
    "summarise_curve", "topk_accuracy", "train_and_track", "transfer_eval",
]
