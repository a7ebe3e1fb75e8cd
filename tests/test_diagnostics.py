"""Diagnostics: neighbour kinds and purity, DNA statistics, CMD distributions (nothing changes the model)."""
from __future__ import annotations

import math

import pytest
import torch

from i2md_lib import diagnostics as diag
from i2md_lib.config import ExperimentConfig
from i2md_lib.dna import Selection
from i2md_lib.models.moco import build_model
from i2md_lib.train import train_step


def test_neighbour_kinds_and_purity_by_hand():
    labels = torch.tensor([0, 0, 1, 1, 2])
    queue_clips = torch.tensor([0, 1, 2, 3, -1, 4])          # slot 4 is empty
    anchors = torch.tensor([0, 2])
    slots = torch.tensor([[0, 1, 2, 4], [3, 0, 2, 5]])
    kinds = diag.neighbour_kinds(anchors, slots, queue_clips, labels)
    S, C, O, E = diag.SELF, diag.SAME_CLASS, diag.OTHER_CLASS, diag.EMPTY
    assert kinds.tolist() == [[S, C, O, E], [C, O, S, O]]
    assert diag.neighbour_purity(kinds).item() == pytest.approx(2 / 5)   # self and empty slots do not count
    selected = torch.tensor([[True, True, False, True], [False, True, True, False]])
    assert diag.neighbour_purity(kinds, selected).item() == pytest.approx(1 / 2)
    assert math.isnan(diag.neighbour_purity(kinds, torch.zeros_like(selected)).item())


def test_same_class_share_is_the_chance_purity():
    assert diag.same_class_share([0, 0, 1, 1]) == 1 / 3        # 2 x (2 x 1) / (4 x 3)


def test_dna_stats_counts_and_purity():
    labels = torch.tensor([0, 0, 1, 1])
    queue_clips = torch.tensor([1, 2, 3, 0])
    sel = Selection(torch.tensor([[0, 1], [2, 3]]), torch.zeros(2, 2), torch.tensor([[True, True], [True, False]]))
    stats = diag.dna_stats({"joint": sel}, torch.tensor([0, 2]), queue_clips, labels)
    assert stats["dna_neighbors_joint"].item() == 1.5
    # anchor 0: clip 1 (same), clip 2 (other); anchor 2: clip 3 (same) -> 2 / 3
    assert abs(stats["dna_purity_joint"].item() - 2 / 3) < 1e-6
    no_labels = diag.dna_stats({"joint": sel}, None, queue_clips, None)
    assert math.isnan(no_labels["dna_purity_joint"].item())
    assert diag.own_key_share(torch.tensor([0, 5]), queue_clips).item() == 0.5


def test_neighbor_distributions_change_nothing():
    torch.manual_seed(0)
    model = build_model(ExperimentConfig.for_profile("smoke", {"pretrain.method": "i2md"}))
    g = torch.Generator().manual_seed(0)
    view_q, view_k = torch.randn(2, 8, 3, 10, 25, 2, generator=g)
    train_step(model, model, view_q, view_k, epoch=0)          # fill some queue slots
    state = {k: v.clone() for k, v in model.state_dict().items()}
    out = diag.neighbor_distributions(model, view_q, view_k, "joint", "motion", topk=5)
    assert out["p_teacher"].shape == out["p_student"].shape == out["index"].shape == (8, 5)
    torch.testing.assert_close(out["p_teacher"].sum(1), torch.ones(8))
    torch.testing.assert_close(out["p_student"].sum(1), torch.ones(8))
    assert torch.all(out["kl"] >= -1e-6)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert model.training
    key = model.embed(view_k, "joint", side="key")
    expected = (key @ model.queues()["joint"].T).topk(5, dim=1).indices
    assert torch.equal(out["index"], expected)
    imd = diag.neighbor_distributions(model, view_q, view_k, "bone", "bone", topk=5,
                                      teacher_branch="cluster", student_branch="instance")
    key = model.embed(view_k, "bone", side="key", branch="cluster")
    assert torch.equal(imd["index"], (key @ model.queues("cluster")["bone"].T).topk(5, dim=1).indices)


def test_neighbourhood_quality_leaves_out_the_anchor_itself():
    torch.manual_seed(0)
    model = build_model(ExperimentConfig.for_profile("smoke", {"pretrain.method": "moco"}))
    g = torch.Generator().manual_seed(1)
    view_q, view_k = torch.randn(2, 8, 3, 10, 25, 2, generator=g)
    labels = torch.arange(16) % 2
    for start in (0, 8):
        train_step(model, model, view_q, view_k, epoch=0, index=torch.arange(start, start + 8), labels=labels)
    rows = diag.neighbourhood_quality(model, view_k, torch.arange(8), labels, topk=10)
    assert [r["modality"] for r in rows] == ["joint"]
    assert 0.0 <= rows[0]["nearest neighbour"] <= 1.0 and 0 < rows[0]["teacher flatness"] <= 1.0


def test_dna_stats_count_variation_and_fixed_topk_purity_of_the_same_size():
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    queue_clips = torch.tensor([1, 2, 3, 4, 5, 0])
    index = torch.tensor([[0, 1, 2, 3], [3, 4, 0, 1]])               # slots, most similar first
    # anchor 0 (class 0) keeps 3 neighbours: clips 1, 2 (same) and 3 (other); anchor 3 (class 1) keeps 1: clip 4
    selected = torch.tensor([[True, True, True, False], [True, False, False, False]])
    stats = diag.dna_stats({"bone": Selection(index, torch.zeros(2, 4), selected)},
                           torch.tensor([0, 3]), queue_clips, labels)
    assert stats["dna_neighbors_bone"].item() == 2.0
    assert stats["dna_count_cv_bone"].item() == pytest.approx(1.0 / 2.0)     # std 1 (population), mean 2
    assert stats["dna_purity_bone"].item() == pytest.approx(3 / 4)
    # a fixed top-2 for every anchor: clips 1, 2 | 4, 5 -> all same class
    assert stats["dna_purity_topk_bone"].item() == pytest.approx(1.0)
    none = diag.dna_stats({"bone": Selection(index, torch.zeros(2, 4), torch.zeros_like(selected))},
                          torch.tensor([0, 3]), queue_clips, labels)
    assert math.isnan(none["dna_count_cv_bone"].item()) and none["dna_neighbors_bone"].item() == 0


def test_failed_stream_detector():
    """A stream whose InfoNCE gain (ln(K+1) minus its loss) is under 0.75 of the median gain of the
    same stream over a method's runs failed; other streams are not compared with it; with fewer
    than three runs nothing is called failed."""
    import math

    from i2md_lib.diagnostics import failed_streams, infonce_gains

    chance = math.log(513)
    gains = infonce_gains({"joint": chance - 0.5, "motion": chance - 2.5, "bone": float("nan")}, 512)
    assert gains == pytest.approx({"joint": 0.5, "motion": 2.5})
    runs = {(0, "motion"): 1.2, (1, "motion"): 1.3, (2, "motion"): 0.8, (3, "motion"): 1.25,
            (0, "joint"): 0.4, (1, "joint"): 0.5, (2, "joint"): 0.45, (3, "joint"): 0.5}
    assert failed_streams(runs) == {(2, "motion"): pytest.approx(0.8 / 1.225)}
    assert failed_streams({k: v for k, v in runs.items() if k[0] < 2}) == {}


def test_failure_counts_per_variant():
    import math

    from i2md_lib import report

    def record(variant, seed, motion):
        log = {"nce_joint": math.log(65) - 2.0, "nce_motion": math.log(65) - motion, "nce_bone": math.log(65) - 0.5}
        return {"variant": variant, "seed": seed, "last_epoch_log": log, "config": {"pretrain": {"queue_size": 64}}}

    records = [record("a", 0, 0.5), record("a", 1, 1.9), record("a", 2, 2.0), record("b", 0, 1.8),
               record("b", 1, 1.7), record("b", 2, 1.9),
               {"variant": "r", "seed": 0, "last_epoch_log": {}, "config": {"pretrain": {"queue_size": 64}}}]
    counts = report.failure_counts(records)
    assert counts.loc["a"].tolist() == [3, 1] and counts.loc["b"].tolist() == [3, 0] and "r" not in counts.index
    checks = report.stream_checks(records)
    assert checks.loc[("a", 0), "failed"] == "motion" and checks.loc[("a", 1), "failed"] == ""
    assert checks.loc[("a", 0), "share bone"] == pytest.approx(1.0)
