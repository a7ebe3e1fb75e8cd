"""The MoCo module: queues, momentum update, method wiring and diagnostics."""
from __future__ import annotations

import pytest
import torch

from i2md_lib import losses
from i2md_lib.config import ExperimentConfig
from i2md_lib.data.modalities import MODALITIES, to_bone, to_motion
from i2md_lib.models.moco import (METHODS, MoCo, build_model, encoders_for_eval,
                                  neighbor_distributions)


def make_model(method: str = "cmd", **overrides) -> MoCo:
    torch.manual_seed(0)
    cfg = ExperimentConfig.for_profile("smoke", {"pretrain.method": method, **overrides})
    return build_model(cfg)


def views(n: int = 8, t: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, t, 25, 2, generator=g), torch.randn(n, 3, t, 25, 2, generator=g)


def test_streams_per_method():
    assert make_model("moco").modalities == ("joint",)
    assert make_model("moco", **{"pretrain.modality": "bone"}).modalities == ("bone",)
    for method in ("moco3", "posmining", "cmd"):
        assert make_model(method).modalities == MODALITIES
    with pytest.raises(ValueError, match="pretrain.method must be one of .*'simclr'"):
        make_model("simclr")
    assert set(METHODS) == {"moco", "moco3", "posmining", "cmd", "i2md"}


def test_initial_state():
    model = make_model("cmd")
    for m, queue in model.queues().items():
        assert queue.shape == (64, 16)                    # smoke: K=64, D=16
        torch.testing.assert_close(queue.norm(dim=1), torch.ones(64))
    assert int(model.queue_ptr) == 0
    for pk, pq in zip(model.key_parameters(), [*model.encoder_q.parameters(), *model.head_q.parameters()]):
        assert torch.equal(pk, pq) and not pk.requires_grad and pq.requires_grad


def test_momentum_update_is_an_ema_of_parameters_only():
    model = make_model("moco", **{"pretrain.momentum": 0.9})
    with torch.no_grad():
        for p in model.encoder_q.parameters():
            p.add_(1.0)
        bn_q = model.encoder_q["joint"].input_norm
        bn_q.running_mean.fill_(5.0)
    before = [p.clone() for p in model.key_parameters()]
    query = [p.clone() for p in [*model.encoder_q.parameters(), *model.head_q.parameters()]]
    model.momentum_update()
    for old, q, new in zip(before, query, model.key_parameters()):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * q)
    assert torch.all(model.encoder_k["joint"].input_norm.running_mean == 0)   # BN buffers not copied


def test_enqueue_wraps_around_when_the_queue_size_is_not_a_multiple_of_the_batch():
    model = make_model("moco3", **{"pretrain.queue_size": 10})   # cmd's top-k would not fit 10 slots
    written = []
    for step in range(4):   # 4 batches of 4 keys: pointer 0 -> 4 -> 8 -> 2 -> 6
        keys = {m: torch.full((4, 16), float(10 * step + i)) for i, m in enumerate(model.modalities)}
        model.enqueue(keys)
        written.append(keys)
    assert int(model.queue_ptr) == 6
    queue_j = model.queues()["joint"][:, 0].tolist()
    # slots 0,1 <- batch 2 (wrapped), 2..5 <- batch 3, 6,7 <- batch 1, 8,9 <- batch 2
    assert queue_j == [20, 20, 30, 30, 30, 30, 10, 10, 20, 20]
    # slot i holds the same batch in every modality (offset by the modality index here)
    assert model.queues()["bone"][:, 0].tolist() == [v + 2 for v in queue_j]
    with pytest.raises(ValueError, match="does not fit"):
        model.enqueue({m: torch.zeros(11, 16) for m in model.modalities})


@pytest.mark.parametrize("method", ["moco", "moco3", "posmining", "cmd"])
def test_forward_terms_and_gradients(method):
    model = make_model(method)
    view_q, view_k = views()
    terms = model(view_q, view_k)
    nce = [f"nce_{m}" for m in model.modalities]
    expected_keys = set(nce) | {"total"}
    if method == "cmd":
        expected_keys |= {"cmd"} | {f"cmd_{a}_{b}" for a in MODALITIES for b in MODALITIES if a != b}
    assert set(terms) == expected_keys
    total = sum(terms[k] for k in nce) + (terms["cmd"] if method == "cmd" else 0)
    torch.testing.assert_close(terms["total"], total)
    if method == "cmd":
        torch.testing.assert_close(terms["cmd"], sum(v for k, v in terms.items() if k.count("_") == 2))
    terms["total"].backward()
    assert all(p.grad is not None for p in model.encoder_q.parameters())
    assert all(p.grad is None for p in model.key_parameters())
    assert int(model.queue_ptr) == 8
    assert set(model.last_stats) == {f"{s}_{m}" for s in ("pos_sim", "neg_sim", "acc") for m in model.modalities}


def test_forward_uses_the_queue_before_the_batch_is_enqueued():
    model = make_model("cmd")   # key encoders start as copies: the momentum update keeps them (up to rounding)
    view_q, view_k = views()
    queues = {m: q.clone() for m, q in model.queues().items()}
    queries = {m: model.embed_query(view_q, m) for m in model.modalities}
    keys = {m: model.embed_key(view_k, m) for m in model.modalities}
    terms = model(view_q, view_k)
    p = model.pcfg
    for m in model.modalities:
        torch.testing.assert_close(terms[f"nce_{m}"], losses.infonce(queries[m], keys[m], queues[m], p.temperature))
    expected_cmd, _ = losses.cmd_loss(keys, queries, queues, p.cmd_topk, p.cmd_tau_teacher, p.cmd_tau_student)
    torch.testing.assert_close(terms["cmd"], expected_cmd)
    for m in model.modalities:   # and afterwards the keys sit in slots 0..N-1
        torch.testing.assert_close(model.queues()[m][:8], keys[m])


def test_motion_and_bone_are_derived_from_each_view_inside():
    model = make_model("moco3")
    seen = {}
    def remember(modality):
        def hook(module, inputs, output):
            seen.setdefault(modality, inputs[0])
        return hook

    for m in model.modalities:
        model.encoder_q[m].register_forward_hook(remember(m))
    view_q, view_k = views()
    model(view_q, view_k)
    torch.testing.assert_close(seen["joint"], view_q)
    torch.testing.assert_close(seen["motion"], to_motion(view_q))
    torch.testing.assert_close(seen["bone"], to_bone(view_q))


def test_posmining_switches_on_at_its_start_epoch():
    view_q, view_k = views()
    plain = make_model("moco3")(view_q, view_k)
    mining = make_model("posmining", **{"pretrain.posmining_start_epoch": 1})
    before = mining(view_q, view_k, epoch=0)
    torch.testing.assert_close(before["total"], plain["total"])
    mining = make_model("posmining", **{"pretrain.posmining_start_epoch": 1, "pretrain.posmining_topk": 3})
    after = mining(view_q, view_k, epoch=1)
    assert after["total"].item() != pytest.approx(plain["total"].item(), rel=1e-4)


def test_cmd_weight_scales_the_distillation():
    view_q, view_k = views()
    base = make_model("cmd")(view_q, view_k)
    heavy = make_model("cmd", **{"pretrain.cmd_weight": 3.0})(view_q, view_k)
    nce = sum(base[f"nce_{m}"] for m in MODALITIES)
    torch.testing.assert_close(heavy["total"], nce + 3.0 * base["cmd"])


def test_encoders_for_eval_are_the_query_encoders():
    model = make_model("cmd")
    encoders = encoders_for_eval(model)
    assert set(encoders) == set(MODALITIES)
    assert encoders["bone"] is model.encoder_q["bone"]
    x, _ = views()
    assert encoders["joint"](x).shape == (8, 32)    # smoke: 2 x hidden 16


def test_neighbor_distributions_change_nothing():
    model = make_model("cmd")
    view_q, view_k = views()
    model(view_q, view_k)                     # fill some queue slots
    state = {k: v.clone() for k, v in model.state_dict().items()}
    out = neighbor_distributions(model, view_q, view_k, "joint", "motion", topk=5)
    assert out["p_teacher"].shape == out["p_student"].shape == out["index"].shape == (8, 5)
    torch.testing.assert_close(out["p_teacher"].sum(1), torch.ones(8))
    torch.testing.assert_close(out["p_student"].sum(1), torch.ones(8))
    assert torch.all(out["kl"] >= -1e-6)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert model.training
    model.eval()
    key = model.embed_key(view_k, "joint")
    expected = (key @ model.queues()["joint"].T).topk(5, dim=1).indices
    assert torch.equal(out["index"], expected)


def test_bf16_autocast_on_cpu_keeps_float32_losses():
    model = make_model("cmd")
    view_q, view_k = views()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = model(view_q, view_k)
    assert terms["total"].dtype == torch.float32 and torch.isfinite(terms["total"])
    assert model.queues()["joint"].dtype == torch.float32
    torch.testing.assert_close(model.queues()["joint"][:8].norm(dim=1), torch.ones(8), atol=1e-5, rtol=0)


# -- I²MD ----------------------------------------------------------------------
def test_i2md_has_a_cluster_branch_with_aligned_queues():
    model = make_model("i2md")
    assert model.has_cluster_branch
    assert set(model.queues("cluster")) == set(MODALITIES)
    # momentum copies mirror the query side, cluster heads included
    query_params = [p for mod in model.query_modules() for p in mod.parameters()]
    assert len(query_params) == len(list(model.key_parameters()))
    vq, vk = views(n=8, t=10)
    model.set_label_lookup(torch.arange(100) % 5)
    terms = model(vq, vk, epoch=5, index=torch.arange(8))
    for m in MODALITIES:
        assert {f"nce_{m}", f"dna_{m}", f"imd_{m}"} <= set(terms)
        assert {f"dna_neighbors_{m}", f"dna_purity_{m}"} <= set(model.last_stats)
    p = model.pcfg
    expected = (sum(terms[f"nce_{m}"] for m in MODALITIES) + p.cmd_weight * terms["cmd"]
                + p.cluster_weight * terms["dna"] + p.imd_weight * terms["imd"])
    torch.testing.assert_close(terms["total"], expected)
    # the same batch went into the same slots of every queue, instance and cluster
    assert model.queue_index[:8].tolist() == list(range(8))
    assert int(model.queue_ptr) == 8


def test_i2md_weights_zero_remove_terms_and_warmup_disables_neighbours():
    model = make_model("i2md", **{"pretrain.imd_weight": 0.0, "pretrain.cmd_weight": 0.0,
                                  "pretrain.dna_threshold": -1.0, "pretrain.dna_margin": 2.0,
                                  "pretrain.dna_warmup_epochs": 3})
    vq, vk = views(n=8, t=10)
    terms = model(vq, vk, epoch=0)
    assert "cmd" not in terms and float(terms["imd"]) == 0.0
    assert float(model.last_stats["dna_neighbors_joint"]) == 0.0        # warm-up: no neighbours
    terms = model(vq, vk, epoch=3)
    assert float(model.last_stats["dna_neighbors_joint"]) == model.pcfg.dna_max_neighbors


def test_i2md_trains_and_its_loss_goes_down():
    torch.manual_seed(0)
    model = make_model("i2md", **{"pretrain.momentum": 0.9})
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
    vq, vk = views(n=16, t=10, seed=3)
    first = None
    for _ in range(25):
        terms = model(vq, vk, epoch=10)
        opt.zero_grad()
        terms["total"].backward()
        opt.step()
        first = first if first is not None else float(terms["total"])
    assert float(terms["total"]) < 0.6 * first
