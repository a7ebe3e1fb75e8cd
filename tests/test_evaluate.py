"""Tests of the evaluation protocols (i2md_lib.evaluate / i2md_lib.eval) at tiny sizes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from i2md_lib.config import DataConfig, EncoderConfig, EvalConfig, ExperimentConfig
from i2md_lib.data.augment import center_crop_resize
from i2md_lib.data.modalities import to_modality
from i2md_lib.data.store import SkeletonArrays
from i2md_lib.evaluate import (ClassifierResult, EvalPoint, allocate_per_class, concat_normalised,
                               ensemble_classifiers, evaluate_encoders, extract_features,
                               finetune_eval, knn_accuracy, knn_ensemble, label_fraction_subset,
                               linear_eval, results_table, select_index, semi_supervised_eval,
                               stratified_val_split, summarise_curve, topk_accuracy, transfer_eval)
from i2md_lib.eval.setup import EvalSetup
from i2md_lib.models.encoders import build_encoder

DATA = DataConfig(window=8, max_frames=16, num_workers=0)
T_STORED = 16


class TinyEncoder(nn.Module):
    """BatchNorm over frame features, mean over time, linear map: (N, C, T, V, M) -> (N, D)."""

    def __init__(self, feature_dim: int = 16, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.feature_dim = feature_dim
        self.norm = nn.BatchNorm1d(150)
        self.proj = nn.Linear(150, feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, t, v, m = x.shape
        frames = x.permute(0, 2, 3, 1, 4).reshape(n, t, v * c * m)       # (N, T, 150)
        pooled = self.norm(frames.transpose(1, 2)).mean(dim=2)             # (N, 150)
        return self.proj(pooled)                                            # (N, D)


def make_arrays(per_class: int, num_classes: int = 4, seed: int = 0, noise: float = 0.1) -> SkeletonArrays:
    """Clips whose joints are a class-specific pose plus noise (linearly separable after pooling)."""
    rng = np.random.default_rng(seed)
    patterns = np.random.default_rng(123).normal(0.0, 1.0, (num_classes, 3, 1, 25, 2))
    labels = np.repeat(np.arange(num_classes), per_class)
    n = len(labels)
    data = patterns[labels] + rng.normal(0.0, noise, (n, 3, T_STORED, 25, 2))
    num_frame = rng.integers(T_STORED // 2, T_STORED + 1, n)
    return SkeletonArrays(data.astype(np.float32), num_frame.astype(np.int64), labels.astype(np.int64),
                          [f"clip{i:03d}" for i in range(n)])


def setup(train: SkeletonArrays, test: SkeletonArrays, cfg: EvalConfig) -> EvalSetup:
    """The protocols' options object for the tiny data, on the CPU."""
    return EvalSetup(train, test, cfg, DATA, torch.device("cpu"))


def tiny_eval_cfg(**overrides) -> EvalConfig:
    base = dict(epochs=12, lr_milestones=(9,), eval_every=3, batch_size=8, val_fraction=0.25,
                knn_k=(1, 3), label_fractions=(0.25,), semi_seeds=(0, 1), seed=0)
    base.update(overrides)
    if base["epochs"] < 9 and "lr_milestones" not in overrides:
        base["lr_milestones"] = ()    # milestones lie within the epochs (9 was never reached)
    return EvalConfig(**base)


def state_copy(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------- metrics


def test_topk_accuracy_hand_made():
    scores = np.array([[0.1, 0.5, 0.2, 0.15, 0.05, 0.0],
                       [0.3, 0.1, 0.2, 0.25, 0.1, 0.05],
                       [0.0, 0.0, 0.0, 0.1, 0.2, 0.7]])
    labels = np.array([1, 2, 0])
    assert topk_accuracy(scores, labels, 1) == pytest.approx(100 / 3)
    # row 1: label 2 ranks third; row 2: label 0 ties with 1 and 2 at the bottom
    assert topk_accuracy(scores, labels, 3) == pytest.approx(200 / 3)
    assert topk_accuracy(scores, labels, 6) == pytest.approx(100.0)


# --------------------------------------------------------------------------- kNN


def test_knn_uses_cosine_not_euclidean():
    gallery = np.array([[10.0, 0.0], [0.0, 1.0]])
    labels = np.array([0, 1])
    query = np.array([[0.5, 0.4]])           # closer to [0, 1] in L2, but at a smaller angle to [10, 0]
    assert knn_accuracy(gallery, labels, query, np.array([0]), ks=(1,)) == {1: 100.0}


def test_knn_majority_vote_known_answers():
    angles = np.deg2rad([0, 10, 20, 90, 100])
    gallery = np.stack([np.cos(angles), np.sin(angles)], axis=1) * np.array([[1], [3], [0.5], [2], [7]])
    labels = np.array([0, 1, 1, 2, 2])
    queries = np.stack([np.cos(np.deg2rad([1, 95, 14])), np.sin(np.deg2rad([1, 95, 14]))], axis=1)
    truth = np.array([0, 2, 1])
    # k=1: nearest angles 0, 90/100, 10 -> labels 0, 2, 1 (all right)
    # k=3: q0 (1 deg) -> 0, 10, 20 deg -> {0, 1, 1} -> 1 (wrong); q1 -> 90, 100, 20 -> 2;
    #      q2 (14 deg) -> 10, 20, 0 -> {1, 1, 0} -> 1
    acc = knn_accuracy(gallery, labels, queries, truth, ks=(1, 3))
    assert acc[1] == pytest.approx(100.0)
    assert acc[3] == pytest.approx(200 / 3)
    with pytest.raises(ValueError, match="gallery size"):
        knn_accuracy(gallery, labels, queries, truth, ks=(6,))


def test_concatenated_normalised_features_rank_by_average_cosine():
    rng = np.random.default_rng(0)
    streams = [rng.normal(size=(30, d)) * rng.uniform(0.1, 5, size=(30, 1)) for d in (4, 6, 5)]
    queries = [rng.normal(size=(12, d)) for d in (4, 6, 5)]
    g_labels, q_labels = rng.integers(0, 5, 30), rng.integers(0, 5, 12)

    def cos(a, b):
        a = a / np.linalg.norm(a, axis=1, keepdims=True)
        b = b / np.linalg.norm(b, axis=1, keepdims=True)
        return a @ b.T

    mean_sim = np.mean([cos(q, g) for q, g in zip(queries, streams)], axis=0)   # (12, 30)
    expected = 100.0 * np.mean(g_labels[mean_sim.argmax(axis=1)] == q_labels)
    joined = concat_normalised(streams)
    assert np.allclose(np.linalg.norm(joined, axis=1), np.sqrt(3))
    result = knn_ensemble({"joint": streams[0], "motion": streams[1], "bone": streams[2]}, g_labels,
                          {"joint": queries[0], "motion": queries[1], "bone": queries[2]}, q_labels, ks=(1,))
    assert result.top1[1] == pytest.approx(expected)


# --------------------------------------------------------------------------- splits


def test_allocate_per_class_hits_the_target():
    counts = np.array([7, 13, 1, 29])
    quota = allocate_per_class(counts, 0.1)
    # exact 0.7, 1.3, 0.1, 2.9 -> floors 0, 1, 0, 2 (sum 3); target round(5.0) = 5 -> +1 to the
    # largest remainders 2.9 and 0.7 -> 1, 1, 0, 3; then the one-per-class floor -> 1, 1, 1, 3
    assert quota.tolist() == [1, 1, 1, 3]
    assert allocate_per_class(counts, 0.5, min_per_class=0).sum() == 25
    assert (allocate_per_class(counts, 1.0) == counts).all()


def test_stratified_val_split_is_seeded_stratified_and_disjoint():
    labels = np.repeat(np.arange(5), [10, 20, 2, 1, 7])
    train, val = stratified_val_split(labels, 0.2, seed=3)
    assert len(np.intersect1d(train, val)) == 0
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(len(labels)))
    assert np.bincount(labels[val], minlength=5).tolist() == [2, 4, 1, 0, 1]
    assert set(labels[train]) == set(range(5))        # every class keeps a training clip
    again_train, again_val = stratified_val_split(labels, 0.2, seed=3)
    assert np.array_equal(val, again_val)
    assert not np.array_equal(val, stratified_val_split(labels, 0.2, seed=4)[1])
    assert len(stratified_val_split(labels, 0.0, seed=0)[1]) == 0


def test_label_fraction_subset_seeded_per_class_and_disjoint_from_val():
    labels = np.repeat(np.arange(6), [40, 25, 12, 9, 60, 14])
    train, val = stratified_val_split(labels, 0.1, seed=0)
    picked = label_fraction_subset(labels, 0.1, seed=7, pool=train)
    assert len(np.intersect1d(picked, val)) == 0
    assert np.all(np.isin(picked, train))
    assert np.bincount(labels[picked], minlength=6).tolist() == allocate_per_class(
        np.bincount(labels), 0.1).tolist()
    tiny = label_fraction_subset(labels, 0.01, seed=7, pool=train)
    assert np.bincount(labels[tiny], minlength=6).min() >= 1          # no class left out
    assert np.array_equal(picked, label_fraction_subset(labels, 0.1, seed=7, pool=train))
    assert not np.array_equal(picked, label_fraction_subset(labels, 0.1, seed=8, pool=train))
    assert np.array_equal(label_fraction_subset(labels, 1.0, seed=7, pool=train), np.sort(train))


# --------------------------------------------------------------------------- selection


def hand_curve() -> list[EvalPoint]:
    return [EvalPoint(5, 1.0, 40.0, 50.0), EvalPoint(10, 0.8, 70.0, 55.0),
            EvalPoint(15, 0.6, 70.0, 65.0), EvalPoint(20, 0.5, 60.0, 62.0)]


def test_select_on_val_test_and_last():
    curve = hand_curve()
    assert select_index(curve, "val") == 1          # the first of the two best-val evaluations
    assert select_index(curve, "test") == 2
    assert select_index(curve, "last") == 3
    result = summarise_curve("linear", "joint", curve, "val", num_train=1, num_val=1, num_test=1)
    assert (result.top1, result.chosen_epoch) == (55.0, 10)
    assert (result.top1_at_best_val, result.top1_best_test) == (55.0, 65.0)
    reference = summarise_curve("linear", "joint", curve, "test", num_train=1, num_val=1, num_test=1)
    assert (reference.top1, reference.chosen_epoch) == (65.0, 15)
    no_val = [EvalPoint(p.epoch, p.train_loss, None, p.test_top1) for p in curve]
    with pytest.raises(ValueError, match="validation split"):
        select_index(no_val, "val")
    with pytest.raises(ValueError, match="select_on"):
        select_index(curve, "best")


# --------------------------------------------------------------------------- ensemble


def fake_result(modality: str, test_probs: np.ndarray, test_labels: np.ndarray) -> ClassifierResult:
    curve = [EvalPoint(5 * (i + 1), 0.0, None, topk_accuracy(p, test_labels)) for i, p in enumerate(test_probs)]
    return summarise_curve("linear", modality, curve, "test", num_train=0, num_val=0,
                           num_test=len(test_labels), test_labels=test_labels, test_probs=test_probs)


def test_ensemble_averages_probabilities():
    labels = np.array([0, 1, 2])
    joint = np.array([[[0.5, 0.4, 0.1], [0.1, 0.6, 0.3], [0.5, 0.1, 0.4]]])     # wrong on clip 2
    motion = np.array([[[0.25, 0.65, 0.1], [0.1, 0.8, 0.1], [0.1, 0.2, 0.7]]])  # wrong on clip 0
    bone = np.array([[[0.6, 0.2, 0.2], [0.5, 0.3, 0.2], [0.3, 0.3, 0.4]]])      # wrong on clip 1
    results = [fake_result(m, p, labels) for m, p in (("joint", joint), ("motion", motion), ("bone", bone))]
    assert all(r.top1 == pytest.approx(200 / 3) for r in results)
    ens = ensemble_classifiers(results)
    # mean probs: clip 0 -> [.45, .417, .133], clip 1 -> [.233, .567, .2], clip 2 -> [.3, .2, .5]:
    # all right
    assert np.allclose(ens.test_probs, (joint + motion + bone) / 3)
    assert ens.top1 == pytest.approx(100.0)
    assert ens.modality == "ensemble" and ens.extra["streams"] == "joint+motion+bone"
    with pytest.raises(ValueError, match="keep_probs"):
        ensemble_classifiers([results[0], summarise_curve("linear", "bone", results[2].curve, "test",
                                                          num_train=0, num_val=0, num_test=3)])


# --------------------------------------------------------------------------- features


def test_extract_features_matches_manual_centre_crop_and_leaves_encoder_as_is():
    arrays = make_arrays(per_class=3)
    encoder = TinyEncoder()
    encoder.train()
    before = state_copy(encoder)
    cfg = tiny_eval_cfg()
    feats, labels = extract_features(encoder, arrays, "motion", cfg, "cpu", data=DATA)
    assert feats.shape == (len(arrays), 16) and feats.dtype == np.float32
    assert np.array_equal(labels, arrays.labels)
    clips = np.stack([center_crop_resize(arrays.data[i], arrays.num_frame[i], cfg.test_crop_ratio, DATA.window)
                      for i in range(len(arrays))])
    encoder.eval()
    with torch.no_grad():
        expected = encoder(to_modality(torch.from_numpy(clips), "motion")).numpy()
    assert np.allclose(feats, expected, atol=1e-5)
    assert same_state(before, state_copy(encoder))      # BN running statistics untouched


# --------------------------------------------------------------------------- linear probe


@pytest.mark.parametrize("augment", [False, True])
def test_linear_probe_separates_and_keeps_encoder_frozen(augment):
    train, test = make_arrays(per_class=8, seed=1), make_arrays(per_class=4, seed=2)
    encoder = TinyEncoder()
    encoder.train()
    before = state_copy(encoder)
    result = linear_eval(encoder, "joint", setup(train, test, tiny_eval_cfg()), augment=augment)
    assert result.top1 >= 90.0 and result.top1_best_test >= result.top1
    assert [p.epoch for p in result.curve] == [3, 6, 9, 12]
    assert result.curve[-1].train_loss < result.curve[0].train_loss
    assert (result.num_train, result.num_val, result.num_test) == (24, 8, 16)
    assert same_state(before, state_copy(encoder))
    assert encoder.training and all(p.requires_grad for p in encoder.parameters())
    again = linear_eval(encoder, "joint", setup(train, test, tiny_eval_cfg()), augment=augment)
    assert [p.train_loss for p in again.curve] == [p.train_loss for p in result.curve]   # seeded


def test_linear_head_initialisation():
    from i2md_lib.evaluate import new_linear_head

    torch.manual_seed(0)
    head = new_linear_head(2000, 60)
    assert torch.count_nonzero(head.bias) == 0
    assert head.weight.std().item() == pytest.approx(0.01, rel=0.02)


# --------------------------------------------------------------------------- fine-tuning


def test_finetune_changes_a_copy_and_labels_stay_out_of_val():
    train, test = make_arrays(per_class=8, seed=1), make_arrays(per_class=2, seed=2)
    encoder = TinyEncoder()
    before = state_copy(encoder)
    cfg = tiny_eval_cfg(epochs=3, eval_every=3)
    result = finetune_eval(encoder, "bone", setup(train, test, cfg), fraction=0.25, seed=1,
                           keep_model=True)
    assert same_state(before, state_copy(encoder))                  # the caller's encoder is untouched
    tuned = result.model.encoder.state_dict()
    assert not torch.allclose(tuned["proj.weight"], before["proj.weight"])
    assert not torch.equal(tuned["norm.running_mean"], before["norm.running_mean"])  # train-mode BN
    _, val = stratified_val_split(train.labels, cfg.val_fraction, cfg.seed)
    labelled = result.extra["labelled_index"]
    assert len(np.intersect1d(labelled, val)) == 0
    assert np.bincount(train.labels[labelled]).tolist() == [2, 2, 2, 2]
    assert result.protocol == "semi" and result.num_train == 8


def test_semi_supervised_mean_and_std_over_seeds():
    train, test = make_arrays(per_class=6, seed=1), make_arrays(per_class=2, seed=2)
    cfg = tiny_eval_cfg(epochs=2, eval_every=2, semi_seeds=(0, 1, 2))
    out = semi_supervised_eval(TinyEncoder(), "joint", setup(train, test, cfg))
    semi = out[0.25]
    top1 = np.array([r.top1 for r in semi.runs])
    assert semi.seeds == [0, 1, 2]
    assert semi.mean == pytest.approx(top1.mean()) and semi.std == pytest.approx(top1.std(ddof=1))
    subsets = [tuple(r.extra["labelled_index"]) for r in semi.runs]
    assert len(set(subsets)) == 3                                  # a different subset per seed


# --------------------------------------------------------------------------- suite


def test_evaluate_encoders_runs_every_protocol_with_ensembles():
    train, test = make_arrays(per_class=6, seed=1), make_arrays(per_class=2, seed=2)
    cfg = ExperimentConfig().replace({
        "data.window": DATA.window, "data.max_frames": DATA.max_frames,
        "eval": dict(epochs=2, lr_milestones=[1], eval_every=1, batch_size=8, val_fraction=0.25,
                     knn_k=[1], label_fractions=[0.5], semi_seeds=[0]),
    })
    encoders = {"joint": TinyEncoder(seed=0), "motion": TinyEncoder(seed=1)}
    results = evaluate_encoders(encoders, cfg, ("knn", "linear", "semi", "finetune"), train, test,
                                device="cpu", augment=False, progress=False)
    assert set(results["knn"]) == {"joint", "motion", "ensemble"}
    assert set(results["linear"]) == {"joint", "motion", "ensemble"}
    assert set(results["semi"]) == {"joint"} and set(results["finetune"]) == {"joint"}
    # the linear ensemble equals the mean of the two streams' probabilities
    lin = results["linear"]
    assert np.allclose(lin["ensemble"].test_probs, (lin["joint"].test_probs + lin["motion"].test_probs) / 2)
    # the suite's k-NN equals k-NN on independently extracted features
    feats = {m: (extract_features(e, train, m, cfg.eval, "cpu", data=cfg.data),
                 extract_features(e, test, m, cfg.eval, "cpu", data=cfg.data)) for m, e in encoders.items()}
    (g, gl), (q, ql) = feats["motion"]
    assert results["knn"]["motion"].top1 == knn_accuracy(g, gl, q, ql, (1,))
    rows = results_table(results)
    assert len(rows) == 3 + 3 + 1 + 1
    assert {r["protocol"] for r in rows} == {"knn", "linear_fast", "semi", "finetune"}


def test_transfer_eval_on_another_label_space():
    source_encoder = TinyEncoder()
    target_train, target_test = make_arrays(per_class=6, num_classes=6, seed=5), make_arrays(
        per_class=2, num_classes=6, seed=6)
    cfg = tiny_eval_cfg(epochs=2, eval_every=1)
    tuned = transfer_eval(source_encoder, "joint", setup(target_train, target_test, cfg))
    assert tuned.protocol == "finetune" and tuned.test_probs is None
    assert tuned.curve[-1].test_top5 is not None                 # 6 classes -> top-5 is reported
    knn = transfer_eval(source_encoder, "joint", setup(target_train, target_test, cfg),
                        protocol="knn")
    assert set(knn.top1) == {1, 3}
    with pytest.raises(ValueError, match="transfer protocol"):
        transfer_eval(source_encoder, "joint", setup(target_train, target_test, cfg), protocol="svm")


def test_real_encoder_linear_probe_end_to_end():
    encoder = build_encoder(EncoderConfig(hidden_size=8, num_layers=1))
    train, test = make_arrays(per_class=6, seed=1), make_arrays(per_class=2, seed=2)
    before = state_copy(encoder)
    result = linear_eval(encoder, "joint", setup(train, test, tiny_eval_cfg(epochs=2, eval_every=1)),
                         augment=True)
    assert len(result.curve) == 2 and 0.0 <= result.top1 <= 100.0
    assert same_state(before, state_copy(encoder))


def test_without_validation_split_select_on_test_works_and_val_fails_early():
    train, test = make_arrays(per_class=4, seed=1), make_arrays(per_class=2, seed=2)
    cfg = tiny_eval_cfg(epochs=2, eval_every=1, val_fraction=0.0, select_on="test")
    result = linear_eval(TinyEncoder(), "joint", setup(train, test, cfg), augment=False)
    assert result.num_val == 0 and result.top1_at_best_val is None
    assert result.top1 == max(p.test_top1 for p in result.curve)
    with pytest.raises(ValueError, match="val_fraction"):
        finetune_eval(TinyEncoder(), "joint", setup(train, test, tiny_eval_cfg(val_fraction=0.0)))
