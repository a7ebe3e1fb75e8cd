"""The MoCo mechanism: streams, queues, momentum update, embeddings (no losses here)."""
from __future__ import annotations

import copy

import pytest
import torch

from i2md_lib.config import METHODS, MODALITIES, ExperimentConfig
from i2md_lib.data.modalities import to_bone, to_motion
from i2md_lib.models.moco import MoCo, build_model, encoders_for_eval


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
        assert make_model(method).branches == ("instance",)
    assert make_model("i2md").branches == ("instance", "cluster")
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


def test_forward_returns_queries_with_gradient_and_keys_after_the_momentum_update():
    model = make_model("cmd", **{"pretrain.momentum": 0.5})
    with torch.no_grad():
        for p in model.encoder_q.parameters():
            p.add_(0.1)                          # query and key encoders now differ
    view_q, view_k = views()
    before = [p.clone() for p in model.key_parameters()]
    emb = model(view_q, view_k)
    assert set(emb.queries) == set(emb.keys) == {"instance"}
    for m in model.modalities:
        q, k = emb.queries["instance"][m], emb.keys["instance"][m]
        assert q.shape == k.shape == (8, 16) and q.requires_grad and not k.requires_grad
        torch.testing.assert_close(q.norm(dim=1), torch.ones(8))
    assert any(not torch.equal(a, b) for a, b in zip(before, model.key_parameters()))   # updated
    assert int(model.queue_ptr) == 0                              # the queues are not touched
    with torch.no_grad():            # the keys come from the *updated* key encoder (batch statistics)
        again = model.encode(view_k, "key")["instance"]
    for m in model.modalities:
        torch.testing.assert_close(again[m], emb.keys["instance"][m])


def test_embed_changes_nothing_and_restores_the_mode():
    model = make_model("i2md")
    view_q, view_k = views()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert model.training
    out = {(side, b): model.embed(view_q, "bone", side=side, branch=b)
           for side in ("query", "key") for b in ("instance", "cluster")}
    assert model.training and all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert all(v.shape == (8, 16) and not v.requires_grad for v in out.values())
    model.eval()
    features = model.encoders("query")["bone"](to_bone(view_q))
    expected = torch.nn.functional.normalize(model.heads("query", "cluster")["bone"](features), dim=1)
    torch.testing.assert_close(out["query", "cluster"], expected)
    with pytest.raises(ValueError, match="no 'cluster' branch"):
        make_model("cmd").embed(view_q, "joint", branch="cluster")


def test_enqueue_keys_writes_every_branch_at_the_same_slots():
    model = make_model("i2md")
    view_q, view_k = views()
    emb = model(view_q, view_k)
    model.enqueue_keys(emb.keys, index=torch.arange(100, 108))
    for b in model.branches:
        for m, queue in model.queues(b).items():
            torch.testing.assert_close(queue[:8], emb.keys[b][m])
    assert model.queue_clips()[:8].tolist() == list(range(100, 108))
    assert int(model.queue_ptr) == 8
    snapshot = model.queue_snapshot()
    snapshot["cluster"]["joint"].zero_()                   # a copy: the buffers keep their values
    assert model.queues("cluster")["joint"].abs().sum() > 0


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


def test_encoders_for_eval_are_the_query_encoders():
    model = make_model("cmd")
    encoders = encoders_for_eval(model)
    assert set(encoders) == set(MODALITIES)
    assert encoders["bone"] is model.encoder_q["bone"]
    x, _ = views()
    assert encoders["joint"](x).shape == (8, 32)    # smoke: 2 x hidden 16


def test_i2md_has_a_cluster_branch_whose_momentum_copies_mirror_the_query_side():
    model = make_model("i2md")
    assert model.has_cluster_branch
    assert set(model.queues("cluster")) == set(MODALITIES)
    query_params = [p for mod in model.query_modules() for p in mod.parameters()]
    assert len(query_params) == len(list(model.key_parameters()))
    assert "cluster_queue_joint" in model.queue_names()


@pytest.mark.parametrize("method", METHODS)
def test_state_dict_keys_are_those_of_earlier_checkpoints(method):
    """Checkpoints written before the model was split into mechanism/methods/diagnostics still
    load: the parameter and buffer names (recorded from that version) are unchanged."""
    import json
    from pathlib import Path

    recorded = json.loads((Path(__file__).parent / "data" / "moco_state_keys.json").read_text())
    assert list(make_model(method).state_dict()) == recorded[method]


@pytest.mark.parametrize("recurrence", ["grouped", "fused", "fused_c"])
@pytest.mark.parametrize("method", ["moco3", "cmd", "i2md"])
def test_grouped_and_fused_recurrences_train_the_same_function_as_the_loop(method, recurrence):
    """20 SGD steps from the same weights on the same batches: the streams' encoders stepped as
    one grouped time loop, or each layer as one fused operation, give the losses of the
    per-encoder loop path (rounding only)."""
    from i2md_lib.train import train_step

    base = make_model(method, **{"pretrain.dna_warmup_epochs": 0})
    losses = {}
    for path in ("loop", recurrence):
        model = copy.deepcopy(base).train()
        for side in ("query", "key"):
            for encoder in model.encoders(side).values():
                encoder.recurrence = path
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
        losses[path] = []
        for step in range(20):
            view_q, view_k = views(16, 12, seed=step)
            terms, _ = train_step(model, model, view_q, view_k, epoch=1, index=torch.arange(16) + 16 * step)
            optimizer.zero_grad(set_to_none=True)
            terms["total"].backward()
            optimizer.step()
            losses[path].append(float(terms["total"].detach()))
    rel = [abs(a - b) / abs(b) for a, b in zip(losses[recurrence], losses["loop"])]
    assert max(rel) <= 1e-5, rel
