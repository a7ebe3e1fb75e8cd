"""Downstream evaluation protocols; :mod:`i2md_lib.evaluate` re-exports the public API.

=================  ==========================================================
module             job
=================  ==========================================================
``setup``          :class:`EvalSetup`, the splits + settings + device every protocol takes
``splits``         seeded stratified validation split and label-fraction subsets
``results``        accuracy metrics, result records, the ``select_on`` rule
``features``       crop loaders and the frozen-encoder feature extractor
``knn``            cosine k-NN retrieval
``classifier``     the SGD schedule shared by linear probe and fine-tuning
``linear``         linear evaluation (reference augmenting path and fast path)
``finetune``       semi-supervised and full fine-tuning
``ensemble``       joint + motion + bone ensembles
``suite``          ``evaluate_encoders``, ``results_table``, ``transfer_eval``
=================  ==========================================================
"""
