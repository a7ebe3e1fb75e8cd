"""Pure loss functions of the pretraining methods (no state, no logging).

=================  ==============================================================
module             concept
=================  ==============================================================
``infonce``        MoCo's InfoNCE (one positive, the queue as negatives) and its
                   multi-positive form
``cmd``            CMD's cross-modal mutual distillation (neighbour KL)
``posmining``      CrosSCLR-style cross-modal positive mining
=================  ==============================================================

DNA's cluster-level contrast lives in :mod:`i2md_lib.dna` and IMD in
:mod:`i2md_lib.imd`; :mod:`i2md_lib.methods` composes each method from these.
"""
from .cmd import (TeacherNeighbors, all_teacher_neighbors, cmd_loss, neighbor_distillation,
                  neighbor_distribution_pair, student_log_probs, teacher_neighbors)
from .infonce import contrastive_logits, infonce, multi_positive_infonce
from .posmining import mined_positive_mask, positive_mining_infonce

__all__ = ["TeacherNeighbors", "all_teacher_neighbors", "cmd_loss", "contrastive_logits", "infonce",
           "mined_positive_mask", "multi_positive_infonce", "neighbor_distillation", "neighbor_distribution_pair",
           "positive_mining_infonce", "student_log_probs", "teacher_neighbors"]
