"""Each method's loss, composed from the pure losses, inside one training step."""
from __future__ import annotations

import pytest
import torch

from i2md_lib import dna, imd, losses, methods
from i2md_lib.config import METHODS, MODALITIES, ExperimentConfig
from i2md_lib.models.moco import MoCo, build_model
from i2md_lib.train import train_step


def make_model(method: str = "cmd", **overrides) -> MoCo:
    torch.manual_seed(0)
    return build_model(ExperimentConfig.for_profile("smoke", {"pretrain.method": method, **overrides}))


def views(n: int = 8, t: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, t, 25, 2, generator=g), torch.randn(n, 3, t, 25, 2, generator=g)


def step(model: MoCo, view_q, view_k, epoch: int = 0, index=None, labels=None):
    return train_step(model, model, view_q, view_k, epoch, index, labels)


def test_every_method_has_a_loss():
    assert tuple(methods.METHOD_LOSSES) == METHODS
    with pytest.raises(ValueError, match="pretrain.method must be one of"):
        methods.method_loss(ExperimentConfig().pretrain.__class__(method="simclr"), None, {}, 0)


@pytest.mark.parametrize("method", ["moco", "moco3", "posmining", "cmd"])
def test_terms_total_and_gradients(method):
    model = make_model(method)
    view_q, view_k = views()
    terms, stats = step(model, view_q, view_k)
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
    assert set(stats) == {f"{s}_{m}" for s in ("pos_sim", "neg_sim", "acc") for m in model.modalities}


def test_the_losses_see_the_queue_before_the_batch_is_enqueued():
    model = make_model("cmd")   # key encoders start as copies: the momentum update keeps them (up to rounding)
    view_q, view_k = views()
    queues = {m: q.clone() for m, q in model.queues().items()}
    model.train()
    queries = model.encode(view_q, "query")["instance"]
    with torch.no_grad():
        keys = model.encode(view_k, "key")["instance"]
    model = make_model("cmd")
    terms, _ = step(model, view_q, view_k)
    p = model.pcfg
    for m in model.modalities:
        torch.testing.assert_close(terms[f"nce_{m}"], losses.infonce(queries[m], keys[m], queues[m], p.temperature))
    expected_cmd, _ = losses.cmd_loss(keys, queries, queues, p.cmd_topk, p.cmd_tau_teacher, p.cmd_tau_student)
    torch.testing.assert_close(terms["cmd"], expected_cmd)
    for m in model.modalities:   # and afterwards the keys sit in slots 0..N-1
        torch.testing.assert_close(model.queues()[m][:8], keys[m])


def test_posmining_switches_on_at_its_start_epoch():
    view_q, view_k = views()
    plain, _ = step(make_model("moco3"), view_q, view_k)
    mining = make_model("posmining", **{"pretrain.posmining_start_epoch": 1})
    before, _ = step(mining, view_q, view_k, epoch=0)
    torch.testing.assert_close(before["total"], plain["total"])
    mining = make_model("posmining", **{"pretrain.posmining_start_epoch": 1, "pretrain.posmining_topk": 3})
    after, _ = step(mining, view_q, view_k, epoch=1)
    assert after["total"].item() != pytest.approx(plain["total"].item(), rel=1e-4)


def test_cmd_weight_scales_the_distillation():
    view_q, view_k = views()
    base, _ = step(make_model("cmd"), view_q, view_k)
    heavy, _ = step(make_model("cmd", **{"pretrain.cmd_weight": 3.0}), view_q, view_k)
    nce = sum(base[f"nce_{m}"] for m in MODALITIES)
    torch.testing.assert_close(heavy["total"], nce + 3.0 * base["cmd"])


def test_bf16_autocast_on_cpu_keeps_float32_losses():
    model = make_model("cmd")
    view_q, view_k = views()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms, _ = step(model, view_q, view_k)
    assert terms["total"].dtype == torch.float32 and torch.isfinite(terms["total"])
    assert model.queues()["joint"].dtype == torch.float32
    torch.testing.assert_close(model.queues()["joint"][:8].norm(dim=1), torch.ones(8), atol=1e-5, rtol=0)


# -- I²MD ----------------------------------------------------------------------------------
def test_i2md_is_cmd_plus_dna_plus_imd_through_their_own_functions():
    model = make_model("i2md", **{"pretrain.dna_warmup_epochs": 0})
    vq, vk = views()
    emb = model(vq, vk)
    queues = model.queue_snapshot()
    p = model.pcfg
    out = methods.method_loss(p, emb, queues, epoch=5)
    (q, c_q), (k, c_k) = emb.queries.values(), emb.keys.values()
    for m in MODALITIES:
        loss, selection = dna.dna_loss(c_q[m], c_k[m], queues["cluster"][m], p.dna_max_neighbors,
                                       p.dna_threshold, p.dna_margin, p.dna_tau, p.temperature,
                                       gate=p.dna_gate, zscore=p.dna_zscore)
        torch.testing.assert_close(out.terms[f"dna_{m}"], loss)
        assert torch.equal(out.dna_selections[m].selected, selection.selected)
        expected_imd = imd.imd_loss(q[m], k[m], queues["instance"][m], c_q[m], c_k[m], queues["cluster"][m],
                                    p.imd_topk, p.cmd_tau_teacher, p.cmd_tau_student)
        torch.testing.assert_close(out.terms[f"imd_{m}"], expected_imd)
    cmd_only = methods.cmd(p, emb, queues, epoch=5).terms
    expected = cmd_only["total"] + p.cluster_weight * out.terms["dna"] + p.imd_weight * out.terms["imd"]
    torch.testing.assert_close(out.total, expected)


def test_i2md_step_logs_dna_diagnostics_and_fills_both_branches():
    model = make_model("i2md")
    vq, vk = views(n=8, t=10)
    terms, stats = step(model, vq, vk, epoch=5, index=torch.arange(8), labels=torch.arange(100) % 5)
    for m in MODALITIES:
        assert {f"nce_{m}", f"dna_{m}", f"imd_{m}"} <= set(terms)
        assert {f"dna_neighbors_{m}", f"dna_purity_{m}"} <= set(stats)
    assert "own_key_share" in stats
    assert model.queue_clips()[:8].tolist() == list(range(8))
    assert int(model.queue_ptr) == 8


def test_i2md_weights_zero_remove_terms_and_warmup_disables_neighbours():
    model = make_model("i2md", **{"pretrain.imd_weight": 0.0, "pretrain.cmd_weight": 0.0,
                                  "pretrain.dna_gate": "fixed",
                                  "pretrain.dna_threshold": -1.0, "pretrain.dna_margin": 2.0,
                                  "pretrain.dna_warmup_epochs": 3})
    vq, vk = views(n=8, t=10)
    terms, stats = step(model, vq, vk, epoch=0)
    assert "cmd" not in terms and float(terms["imd"]) == 0.0
    assert float(stats["dna_neighbors_joint"]) == 0.0        # warm-up: no neighbours
    terms, stats = step(model, vq, vk, epoch=3)
    assert float(stats["dna_neighbors_joint"]) == model.pcfg.dna_max_neighbors


def test_i2md_can_rank_dna_neighbours_in_the_instance_space():
    model = make_model("i2md", **{"pretrain.dna_space": "instance", "pretrain.dna_warmup_epochs": 0})
    emb = model(*views())
    queues = model.queue_snapshot()
    out = methods.method_loss(model.pcfg, emb, queues, epoch=0)
    p = model.pcfg
    ranked = dna.select_neighbors(emb.keys["instance"]["joint"], queues["instance"]["joint"],
                                  p.dna_max_neighbors, p.dna_threshold, p.dna_margin, p.dna_gate, p.dna_zscore)
    assert torch.equal(out.dna_selections["joint"].index, ranked.index)


def test_i2md_trains_and_its_loss_goes_down():
    torch.manual_seed(0)
    model = make_model("i2md", **{"pretrain.momentum": 0.9})
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
    vq, vk = views(n=16, t=10, seed=3)
    first = None
    for _ in range(25):
        terms, _ = step(model, vq, vk, epoch=10)
        opt.zero_grad()
        terms["total"].backward()
        opt.step()
        first = first if first is not None else float(terms["total"].detach())
    assert float(terms["total"]) < 0.6 * first


#: A valid other value for every key of config.METHOD_KEYS.
OTHER_VALUES = {
    "modality": "motion", "posmining_topk": 2, "posmining_start_epoch": 1, "cmd_topk": 12,
    "cmd_tau_teacher": 0.2, "cmd_tau_student": 0.3, "cmd_weight": 0.5, "cluster_weight": 0.5,
    "imd_weight": 0.5, "imd_topk": 12, "dna_max_neighbors": 4, "dna_gate": "fixed", "dna_zscore": 1.0,
    "dna_threshold": 0.3, "dna_margin": 0.2, "dna_tau": 0.3, "dna_space": "instance", "dna_warmup_epochs": 0,
}


def _trained(tmp_path, name: str, method: str, changes: dict) -> tuple[dict, list]:
    from tests.test_train import tiny_arrays
    from i2md_lib.models.pretrained import load_pretrained
    from i2md_lib.train import pretrain

    cfg = ExperimentConfig.for_profile("smoke", {"pretrain.method": method, "pretrain.epochs": 2,
                                                 "pretrain.queue_size": 40, "pretrain.cmd_topk": 20,
                                                 "pretrain.imd_topk": 20, "pretrain.lr_milestones": (1,),
                                                 **{f"pretrain.{k}": v for k, v in changes.items()}})
    log = pretrain(cfg, tmp_path / name, arrays=tiny_arrays(), progress=False)
    return load_pretrained(tmp_path / name)[1].state_dict(), repr(log)    # repr: NaN entries compare equal


@pytest.mark.parametrize("method", METHODS)
def test_a_method_ignores_the_keys_it_does_not_read(tmp_path, method):
    """config.METHOD_KEYS is what lets a result stay current when another method's keys change:
    changing every key the method does not read leaves weights, queues and log bit for bit equal,
    and changing the keys it reads does not."""
    from i2md_lib.config import METHOD_KEYS, unread_keys

    unread = {k.split(".", 1)[1] for k in unread_keys(method)}
    assert unread | METHOD_KEYS[method] == set(OTHER_VALUES)
    base_state, base_log = _trained(tmp_path, "base", method, {})
    state, log = _trained(tmp_path, "unread", method, {k: OTHER_VALUES[k] for k in unread})
    assert log == base_log
    assert state.keys() == base_state.keys() and all(torch.equal(state[k], base_state[k]) for k in state)
    if METHOD_KEYS[method]:
        state, log = _trained(tmp_path, "read", method, {k: OTHER_VALUES[k] for k in METHOD_KEYS[method]})
        assert log != base_log
