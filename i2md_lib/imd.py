"""Intra-modal Mutual Distillation (IMD): I²MD's exchange between a modality's two branches.

What the I²MD paper says (abstract): within each modality, the instance-level and the
cluster-level branches distil their neighbourhood knowledge into each other. The
equations are not available to us, so this is **our design** (Chapter 5 of the book):
each direction is CMD's neighbour distillation (:func:`i2md_lib.losses.neighbor_distillation`)
applied inside one modality,

    IMD = KL(P_inst(key) || P_clu(query)) + KL(P_clu(key) || P_inst(query)),

where the teacher (a key of one branch) keeps its ``topk`` nearest entries of its own
queue and the student (a query of the other branch) scores the same queue slots
against its own queue. Slot ``i`` holds the same clip in both branches' queues.
"""
from __future__ import annotations

from torch import Tensor

from .losses.cmd import TeacherNeighbors, neighbor_distillation


def imd_loss(instance_query: Tensor, instance_key: Tensor, instance_queue: Tensor,
             cluster_query: Tensor, cluster_key: Tensor, cluster_queue: Tensor,
             topk: int, tau_teacher: float, tau_student: float,
             instance_teacher: TeacherNeighbors | None = None) -> Tensor:
    """Both directions of intra-modal mutual distillation for one modality.

    Args:
        instance_query, instance_key: ``(N, D)`` the instance branch's queries and keys.
        instance_queue: ``(K, D)`` its queue.
        cluster_query, cluster_key, cluster_queue: the same for the cluster branch.
        topk: neighbours each teacher keeps (at most ``K``).
        tau_teacher, tau_student: temperatures, as in CMD.
        instance_teacher: the instance key's :func:`~i2md_lib.losses.cmd.teacher_neighbors`
            (``topk``, ``tau_teacher``) if the caller has them already (CMD's teacher of this
            modality, when CMD keeps as many neighbours): the same values, computed once.

    Returns:
        Scalar: instance -> cluster plus cluster -> instance; gradients reach only the queries.
    """
    instance_to_cluster = neighbor_distillation(instance_key, instance_queue, cluster_query,
                                                cluster_queue, topk, tau_teacher, tau_student,
                                                teacher=instance_teacher)
    cluster_to_instance = neighbor_distillation(cluster_key, cluster_queue, instance_query,
                                                instance_queue, topk, tau_teacher, tau_student)
    return instance_to_cluster + cluster_to_instance
