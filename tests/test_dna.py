"""DNA (our design of I²MD's Dynamic Neighbours Aggregation) on hand-computable cases."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from i2md_lib import dna


def unit(*rows: list[float]) -> torch.Tensor:
    return F.normalize(torch.tensor(rows, dtype=torch.float64), dim=1)


def test_selection_applies_threshold_margin_and_count():
    key = unit([1, 0])
    queue = unit([1, 0.1], [1, 1], [0, 1], [1, 0.05], [-1, 0])   # cos: .995 .707 0 .9988 -1
    index, sim, sel = dna.select_neighbors(key, queue, max_neighbors=3, threshold=0.5, margin=2.0)
    assert index.tolist() == [[3, 0, 1]]                    # most similar first, 3 candidates
    assert sel.tolist() == [[True, True, True]]
    _, _, sel = dna.select_neighbors(key, queue, 3, threshold=0.8, margin=2.0)
    assert sel.tolist() == [[True, True, False]]           # 0.707 is below the threshold
    _, _, sel = dna.select_neighbors(key, queue, 3, threshold=0.0, margin=0.004)
    assert sel.tolist() == [[True, True, False]]           # 0.995 is within .004 of .9988; .707 is not
    index, _, sel = dna.select_neighbors(key, queue, 0, 0.5, 2.0)
    assert index.shape == (1, 0) and sel.shape == (1, 0)


def test_selection_count_is_dynamic_per_anchor():
    keys = unit([1, 0], [0, 1])
    queue = unit([1, 0.01], [1, -0.01], [1, 0.02], [-0.3, 1])
    _, _, sel = dna.select_neighbors(keys, queue, 3, threshold=0.9, margin=2.0)
    assert sel.sum(1).tolist() == [3, 1]


def test_aggregation_weights_are_a_softmax_over_self_and_kept_neighbours():
    key = unit([1, 0])
    queue = unit([0, 1], [1, 1])
    index = torch.tensor([[1, 0]])
    sim = (key @ queue.T).gather(1, index)                   # [.707, 0]
    selected = torch.tensor([[True, False]])
    tau = 0.5
    out = dna.aggregate_neighbors(key, queue, index, sim, selected, tau)
    w_self, w_n = torch.softmax(torch.tensor([1.0, sim[0, 0].item()], dtype=torch.float64) / tau, 0)
    expected = F.normalize(w_self * key[0] + w_n * queue[1], dim=0)
    torch.testing.assert_close(out[0], expected)
    # nothing selected -> the positive is the key itself
    none = dna.aggregate_neighbors(key, queue, index, sim, torch.zeros_like(selected), tau)
    torch.testing.assert_close(none, key)


def test_cluster_infonce_matches_hand_computation_and_drops_neighbours_from_negatives():
    q = unit([1, 0])
    positive = unit([1, 1])
    queue = unit([0, 1], [1, 0.2], [-1, 0])
    index, selected = torch.tensor([[1]]), torch.tensor([[True]])
    t = 0.2
    loss = dna.cluster_infonce(q, positive, queue, index, selected, t)
    pos = (q @ positive.T).item()
    negs = [(q @ queue[j]).item() for j in (0, 2)]            # slot 1 is a neighbour: not a negative
    expected = -pos / t + math.log(sum(math.exp(s / t) for s in [pos, *negs]))
    assert loss.item() == pytest.approx(expected, rel=1e-9)
    # without selection, slot 1 is a negative again and the loss grows
    bigger = dna.cluster_infonce(q, positive, queue, index, torch.tensor([[False]]), t)
    assert bigger.item() > loss.item()


def test_dna_loss_without_neighbours_is_plain_infonce():
    from i2md_lib.losses import infonce

    g = torch.Generator().manual_seed(0)
    q, k = F.normalize(torch.randn(6, 8, generator=g), dim=1), F.normalize(torch.randn(6, 8, generator=g), dim=1)
    queue = F.normalize(torch.randn(20, 8, generator=g), dim=1)
    loss, info = dna.dna_loss(q, k, queue, max_neighbors=0, threshold=0.5, margin=2.0, tau=0.1, temperature=0.07)
    torch.testing.assert_close(loss, infonce(q, k, queue, 0.07))
    assert info.selected.numel() == 0


def test_ranking_in_another_space_keeps_the_cluster_similarities():
    g = torch.Generator().manual_seed(2)
    unit = lambda *shape: F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)
    q, k, queue = unit(5, 8), unit(5, 8), unit(30, 8)
    rank_k, rank_queue = unit(5, 6), unit(30, 6)
    _, sel = dna.dna_loss(q, k, queue, 4, -1.0, 2.0, 0.1, 0.1, rank_key=rank_k, rank_queue=rank_queue)
    assert torch.equal(sel.index, (rank_k @ rank_queue.T).topk(4, dim=1).indices)
    torch.testing.assert_close(sel.similarity, (k @ queue.T).gather(1, sel.index))
    with pytest.raises(ValueError, match="both rank_key and rank_queue"):
        dna.dna_loss(q, k, queue, 4, -1.0, 2.0, 0.1, 0.1, rank_key=rank_k)


def test_gradient_reaches_only_the_query():
    g = torch.Generator().manual_seed(1)
    q = F.normalize(torch.randn(4, 8, generator=g), dim=1).requires_grad_()
    k = F.normalize(torch.randn(4, 8, generator=g), dim=1).requires_grad_()
    queue = F.normalize(torch.randn(16, 8, generator=g), dim=1).requires_grad_()
    loss, _ = dna.dna_loss(q, k, queue, 4, threshold=-1.0, margin=2.0, tau=0.1, temperature=0.1)
    loss.backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    assert k.grad is None and queue.grad is None


def test_zscore_gate_keeps_what_stands_out_of_each_anchors_own_distribution():
    g = torch.Generator().manual_seed(3)
    queue = F.normalize(torch.randn(200, 16, generator=g, dtype=torch.float64), dim=1)
    crowded = F.normalize(torch.randn(1, 16, generator=g, dtype=torch.float64), dim=1)
    queue[:12] = F.normalize(crowded + 0.05 * torch.randn(12, 16, generator=g, dtype=torch.float64), dim=1)
    lonely = F.normalize(torch.randn(1, 16, generator=g, dtype=torch.float64), dim=1)
    keys = torch.cat([crowded, lonely])
    index, sim, sel = dna.select_neighbors(keys, queue, 32, gate="zscore", zscore=2.0)
    every = keys @ queue.T
    z = (sim - every.mean(1, keepdim=True)) / every.std(1, keepdim=True)
    assert torch.equal(sel, z >= 2.0 - 1e-12) and sel[0].sum() == 12      # the rule, by hand
    assert sel[0].sum() > sel[1].sum()          # the count follows the anchor, not a fixed k
    assert set(index[0][sel[0]].tolist()) <= set(range(12))
    with pytest.raises(ValueError, match="unknown DNA gate"):
        dna.select_neighbors(keys, queue, 4, gate="mutual")
