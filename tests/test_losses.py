"""Loss functions against hand-computed values and independent NumPy versions."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from i2md_lib import losses


def unit(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


def np_log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


# -- InfoNCE ------------------------------------------------------------------------
def test_infonce_hand_computed():
    q = torch.tensor([[1.0, 0.0]])
    k = torch.tensor([[1.0, 0.0]])
    queue = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])
    # logits at T = 0.5: [1, 0, -1] / 0.5 = [2, 0, -2]
    expected = -math.log(math.exp(2) / (math.exp(2) + 1 + math.exp(-2)))
    assert losses.infonce(q, k, queue, 0.5).item() == pytest.approx(expected, rel=1e-6)


def test_infonce_matches_numpy_cross_entropy():
    q, k, queue = unit(5, 8, seed=1), unit(5, 8, seed=2), unit(11, 8, seed=3)
    logits = np.concatenate([(q * k).sum(1, keepdims=True).numpy(), (q @ queue.T).numpy()], 1) / 0.07
    expected = -np_log_softmax(logits)[:, 0].mean()
    assert losses.infonce(q, k, queue, 0.07).item() == pytest.approx(expected, rel=1e-9)


def test_infonce_gradient_reaches_only_the_query():
    q, k, queue = (unit(4, 6, seed=s).requires_grad_() for s in (1, 2, 3))
    losses.infonce(q, k, queue, 0.1).backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    assert k.grad is None and queue.grad is None


def test_infonce_decreases_when_optimising_the_query():
    q_raw = torch.randn(8, 16, generator=torch.Generator().manual_seed(0), requires_grad=True)
    k, queue = unit(8, 16, seed=4).float(), unit(64, 16, seed=5).float()
    opt = torch.optim.SGD([q_raw], lr=0.5)
    first = None
    for _ in range(20):
        loss = losses.infonce(F.normalize(q_raw, dim=1), k, queue, 0.2)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first - 1.0   # 4.37 -> 2.81 with these seeds


# -- CMD neighbour distillation --------------------------------------------------------
def np_neighbor_kl(tk, tq, sq, squeue, topk, tau_t, tau_s) -> float:
    """Independent NumPy version of CMD's KL(P_T || P_S), batch mean."""
    t_sim, s_sim = tk @ tq.T, sq @ squeue.T
    idx = np.argsort(-t_sim, axis=1)[:, :topk]
    log_pt = np_log_softmax(np.take_along_axis(t_sim, idx, 1) / tau_t)
    log_ps = np_log_softmax(np.take_along_axis(s_sim, idx, 1) / tau_s)
    return float((np.exp(log_pt) * (log_pt - log_ps)).sum(1).mean())


def test_neighbor_distillation_hand_computed():
    # teacher similarities to the 3 queue slots: [0.9, 0.1, 0.5] -> top-2 = slots 0 and 2
    teacher_key = torch.tensor([[1.0, 0.0]])
    teacher_queue = torch.tensor([[0.9, 0.0], [0.1, 0.0], [0.5, 0.0]])
    # student similarities: [0.2, 0.7, 0.4] -> gathered at slots 0, 2: [0.2, 0.4]
    student_query = torch.tensor([[0.0, 1.0]])
    student_queue = torch.tensor([[0.0, 0.2], [0.0, 0.7], [0.0, 0.4]])
    pt = torch.softmax(torch.tensor([0.9, 0.5]) / 0.05, 0)
    ps = torch.softmax(torch.tensor([0.2, 0.4]) / 0.1, 0)
    expected = (pt * (pt / ps).log()).sum().item()
    got = losses.neighbor_distillation(teacher_key, teacher_queue, student_query, student_queue, 2, 0.05, 0.1)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_neighbor_distillation_matches_numpy():
    tk, tq, sq, sqq = unit(6, 8, seed=1), unit(20, 8, seed=2), unit(6, 8, seed=3), unit(20, 8, seed=4)
    got = losses.neighbor_distillation(tk, tq, sq, sqq, 7, 0.05, 0.1).item()
    expected = np_neighbor_kl(tk.numpy(), tq.numpy(), sq.numpy(), sqq.numpy(), 7, 0.05, 0.1)
    assert got == pytest.approx(expected, rel=1e-9)


def test_neighbor_distillation_is_zero_for_identical_views_and_temperatures():
    key, queue = unit(4, 8, seed=1), unit(16, 8, seed=2)
    assert losses.neighbor_distillation(key, queue, key, queue, 5, 0.1, 0.1).item() == pytest.approx(0, abs=1e-12)
    assert losses.neighbor_distillation(key, queue, key, queue, 5, 0.05, 0.1).item() > 1e-3


def test_neighbor_distillation_gradient_reaches_only_the_student_query():
    tk, tq, sq, sqq = (unit(4, 8, seed=s).requires_grad_() for s in (1, 2, 3, 4))
    losses.neighbor_distillation(tk, tq, sq, sqq, 3, 0.05, 0.1).backward()
    assert sq.grad is not None and sq.grad.abs().sum() > 0
    assert tk.grad is None and tq.grad is None and sqq.grad is None


def test_neighbor_distillation_rejects_bad_topk():
    key, queue = unit(2, 4), unit(5, 4)
    with pytest.raises(ValueError, match="topk"):
        losses.neighbor_distillation(key, queue, key, queue, 6, 0.05, 0.1)


def test_sharp_teacher_reduces_to_cross_entropy_on_the_nearest_neighbour():
    """The documented degeneration: tau_T -> 0 makes CMD a hard (top-1) positive."""
    tk, tq, sq, sqq = unit(5, 8, seed=1), unit(12, 8, seed=2), unit(5, 8, seed=3), unit(12, 8, seed=4)
    kl = losses.neighbor_distillation(tk, tq, sq, sqq, 12, 1e-6, 0.1).item()
    nearest = (tk @ tq.T).argmax(1)
    ce = -F.log_softmax((sq @ sqq.T) / 0.1, dim=1).gather(1, nearest[:, None]).mean().item()
    assert kl == pytest.approx(ce, rel=1e-6)


def test_cmd_loss_sums_the_six_ordered_pairs():
    mods = ("joint", "motion", "bone")
    keys = {m: unit(4, 8, seed=i) for i, m in enumerate(mods)}
    queries = {m: unit(4, 8, seed=10 + i) for i, m in enumerate(mods)}
    queues = {m: unit(16, 8, seed=20 + i) for i, m in enumerate(mods)}
    total, pairs = losses.cmd_loss(keys, queries, queues, 6, 0.05, 0.1)
    assert sorted(pairs) == sorted(f"{a}->{b}" for a in mods for b in mods if a != b)
    expected = {
        f"{a}->{b}": np_neighbor_kl(keys[a].numpy(), queues[a].numpy(), queries[b].numpy(),
                                    queues[b].numpy(), 6, 0.05, 0.1)
        for a in mods for b in mods if a != b
    }
    for pair, value in pairs.items():
        assert value.item() == pytest.approx(expected[pair], rel=1e-9)
    assert total.item() == pytest.approx(sum(expected.values()), rel=1e-9)
    with pytest.raises(ValueError, match="two modalities"):
        losses.cmd_loss({"joint": keys["joint"]}, queries, queues, 6, 0.05, 0.1)


# -- positive mining --------------------------------------------------------------------
def test_mined_positive_mask_is_the_union_of_each_miners_topk():
    queue_a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])
    queue_b = torch.tensor([[0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]])
    key = torch.tensor([[1.0, 0.0]])
    mask = losses.mined_positive_mask([key, key], [queue_a, queue_b], topk=1)
    assert mask.tolist() == [[True, True, False]]      # slot 0 from a, slot 1 from b
    mask2 = losses.mined_positive_mask([key], [queue_a], topk=2)
    assert mask2.tolist() == [[True, False, True]]


def test_positive_mining_hand_computed():
    q = torch.tensor([[1.0, 0.0]])
    k = torch.tensor([[1.0, 0.0]])
    queue = torch.tensor([[0.0, 1.0], [-1.0, 0.0], [0.6, 0.8]])
    # the other modality's key is nearest to slot 1 of its queue
    other_key = torch.tensor([[0.0, 1.0]])
    other_queue = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, -0.8]])
    t = 0.5
    logits = np.array([1.0, 0.0, -1.0, 0.6]) / t
    log_p = logits - np.log(np.exp(logits).sum())
    expected = -(log_p[0] + log_p[2]) / 2          # positives: the key and queue slot 1
    got = losses.positive_mining_infonce(q, k, queue, [other_key], [other_queue], 1, t)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_multi_positive_infonce_without_positives_is_infonce():
    q, k, queue = unit(5, 8, seed=1), unit(5, 8, seed=2), unit(10, 8, seed=3)
    none = torch.zeros(5, 10, dtype=torch.bool)
    assert losses.multi_positive_infonce(q, k, queue, none, 0.07).item() == pytest.approx(
        losses.infonce(q, k, queue, 0.07).item(), rel=1e-12)


def test_shared_teachers_give_the_per_pair_losses_exactly():
    """CMD's and IMD's teachers computed once and shared: the same values and gradients, bit for bit."""
    from i2md_lib import imd
    from i2md_lib.losses import all_teacher_neighbors, cmd_loss, neighbor_distillation

    gen = torch.Generator().manual_seed(0)
    unit = lambda *s: torch.nn.functional.normalize(torch.randn(*s, generator=gen), dim=-1)  # noqa: E731
    mods = ("joint", "motion", "bone")
    keys, queues = {m: unit(8, 16) for m in mods}, {m: unit(40, 16) for m in mods}
    queries = {m: unit(8, 16).requires_grad_() for m in mods}
    total, pairs = cmd_loss(keys, queries, queues, 12, 0.05, 0.1)
    for pair, value in pairs.items():
        teacher, student = pair.split("->")
        alone = neighbor_distillation(keys[teacher], queues[teacher], queries[student], queues[student], 12, 0.05, 0.1)
        assert torch.equal(value, alone), pair
    grads = torch.autograd.grad(total, list(queries.values()))
    separate = torch.stack([neighbor_distillation(keys[t], queues[t], queries[s], queues[s], 12, 0.05, 0.1)
                            for t in mods for s in mods if t != s]).sum()      # the pairs in cmd_loss's order
    assert torch.equal(total, separate)
    assert all(torch.equal(a, b) for a, b in zip(grads, torch.autograd.grad(separate, list(queries.values()))))
    teachers = all_teacher_neighbors(keys, queues, 12, 0.05)
    c_q, c_k, c_queue = unit(8, 16).requires_grad_(), unit(8, 16), unit(40, 16)
    shared = imd.imd_loss(queries["joint"], keys["joint"], queues["joint"], c_q, c_k, c_queue, 12, 0.05, 0.1,
                          instance_teacher=teachers["joint"])
    assert torch.equal(shared, imd.imd_loss(queries["joint"], keys["joint"], queues["joint"], c_q, c_k, c_queue,
                                            12, 0.05, 0.1))
