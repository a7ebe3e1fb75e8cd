"""Data-parallel pretraining on the CPU (gloo): 2 processes == 1 process of the same global batch."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from i2md_lib import distributed, launch
from i2md_lib.checkpoint import ConfigMismatchError, load_checkpoint
from i2md_lib.config import ExperimentConfig
from i2md_lib.data.store import SkeletonArrays
from i2md_lib.distributed import (DistContext, GlobalBatchNorm, convert_to_global_batchnorm,
                                  loader_workers, shard_batch)
from i2md_lib.exchange import BatchExchange
from i2md_lib.data.datasets import PretrainDataset
from i2md_lib.models.moco import build_model
from i2md_lib.train import epoch_batches, epoch_loader, pretrain, read_log


pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed")


def tiny_arrays(n: int = 40, t: int = 48) -> SkeletonArrays:
    rng = np.random.default_rng(1)
    data = (rng.normal(size=(n, 3, t, 25, 2)) * 0.3 + 1.5).astype(np.float32)   # BN has real work to do
    return SkeletonArrays(data, rng.integers(20, t + 1, size=n), rng.integers(0, 4, size=n),
                          [f"clip{i}" for i in range(n)])


def smoke(method: str = "cmd", **overrides) -> ExperimentConfig:
    base = {"pretrain.method": method, "pretrain.epochs": 3, "pretrain.queue_size": 40,
            "pretrain.cmd_topk": 20, "pretrain.imd_topk": 20, "pretrain.lr_milestones": (2,),
            "pretrain.dna_warmup_epochs": 1, "pretrain.device": "cpu"}
    return ExperimentConfig.for_profile("smoke", {**base, **overrides})


# -- pieces that need no second process ------------------------------------------------
def test_shards_put_the_global_batch_back_together():
    batches = epoch_batches(40, 16, seed=3, epoch=2)
    for batch in batches:
        shards = [shard_batch(batch, r, 4) for r in range(4)]
        assert [len(s) for s in shards] == [4, 4, 4, 4] and sum(shards, []) == batch
    with pytest.raises(ValueError, match="multiple of the number of processes"):
        shard_batch(list(range(10)), 0, 4)
    with pytest.raises(ValueError, match="rank 2 is not one of 2"):
        shard_batch(list(range(10)), 2, 2)


def test_rank_loader_reads_only_its_shard():
    cfg, data = smoke(), tiny_arrays()
    dataset = PretrainDataset.from_config(data, cfg)
    whole = list(epoch_loader(dataset, cfg, epoch=1))
    for rank in range(2):
        ctx = DistContext(rank=rank, world_size=2, local_rank=rank, local_world_size=2)
        part = list(epoch_loader(dataset, cfg, epoch=1, skip_batches=1, ctx=ctx))
        assert len(part) == len(whole) - 1
        for (q, k, index), (q_all, k_all, index_all) in zip(part, whole[1:]):
            rows = slice(8 * rank, 8 * (rank + 1))
            assert torch.equal(index, index_all[rows])
            assert torch.equal(q, q_all[rows]) and torch.equal(k, k_all[rows])   # views seeded per clip


def test_workers_are_sized_to_the_machine():
    cpus = len(os.sched_getaffinity(0))
    assert loader_workers(3) == 3 and loader_workers(0) == 0
    assert loader_workers(-1) == max(1, min(cpus, 8))
    two_ranks = DistContext(rank=1, world_size=4, local_rank=1, local_world_size=2)
    assert loader_workers(-1, two_ranks) == max(1, min(cpus // 2, 8))
    with pytest.raises(ValueError, match="num_workers"):
        loader_workers(-3)


def test_global_batchnorm_is_batchnorm_in_one_process():
    torch.manual_seed(0)
    plain = nn.BatchNorm1d(6)
    with torch.no_grad():
        plain.weight.uniform_(0.5, 2)
        plain.bias.uniform_(-1, 1)
    x = torch.randn(5, 6, 7) * 3 + 2
    expected, before = plain(x), {k: v.clone() for k, v in plain.state_dict().items()}
    plain.load_state_dict(before)   # undo the statistics update of that call
    wrapper = nn.Sequential(plain)
    convert_to_global_batchnorm(wrapper)
    assert isinstance(wrapper[0], GlobalBatchNorm) and wrapper[0].weight is plain.weight
    state = wrapper.state_dict()
    assert list(state) == [f"0.{k}" for k in before]
    assert torch.allclose(wrapper(x), expected, atol=1e-6)


def test_conversion_keeps_the_model_state_dict():
    model = build_model(smoke())
    before = model.state_dict()
    convert_to_global_batchnorm(model)
    after = model.state_dict()
    assert list(after) == list(before) and all(torch.equal(after[k], before[k]) for k in before)
    assert sum(isinstance(m, GlobalBatchNorm) for m in model.modules()) == 6   # 3 query + 3 key encoders
    assert type(model.exchange) is BatchExchange   # one process: nothing is exchanged


def test_bad_launch_settings_are_clear_errors(monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    with pytest.raises(RuntimeError, match="MASTER_ADDR and MASTER_PORT not set.*torchrun"):
        pretrain(smoke(), tmp_path, arrays=tiny_arrays(), progress=False)
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE='two'"):
        pretrain(smoke(), tmp_path, arrays=tiny_arrays(), progress=False)


# -- two processes (gloo on the CPU) ----------------------------------------------------
def _rank_main(rank: int, out: str, arrays: SkeletonArrays) -> None:
    """One rank: a GlobalBatchNorm check, then pretraining runs; every rank saves its model."""
    out_dir = Path(out)
    models: list[nn.Module] = []
    real_wrap = distributed.wrap_ddp
    distributed.wrap_ddp = lambda model, ctx: (models.append(model), real_wrap(model, ctx))[1]

    with distributed.process_group("cpu") as ctx:      # GlobalBatchNorm against the whole batch
        x = torch.load(out_dir / "bn_input.pt")
        weights = torch.load(out_dir / "bn_weights.pt")
        rows = slice(3 * rank, 3 * (rank + 1))
        bn = GlobalBatchNorm(6)
        bn.load_state_dict(torch.load(out_dir / "bn_state.pt"))
        mine = x[rows].clone().requires_grad_(True)
        y = bn(mine)
        (y * weights[rows]).sum().backward()
        torch.save({"y": y.detach(), "grad": mine.grad, "state": bn.state_dict(),
                    "weight_grad": bn.weight.grad}, out_dir / f"bn_rank{rank}.pt")

    runs = {"global": dict(), "partial": dict(max_steps=3), "shuffle": dict(), "i2md": dict()}
    for name, kwargs in runs.items():
        cfg = {"i2md": smoke("i2md"), "shuffle": smoke(**{"pretrain.dist_bn": "shuffle"})}.get(name, smoke())
        pretrain(cfg, out_dir / name, arrays=arrays, progress=False, **kwargs)
        torch.save(models[-1].state_dict(), out_dir / name / f"model_rank{rank}.pt")
    try:   # a run folder only rank 0 sees (machines without a shared filesystem)
        pretrain(smoke(), out_dir / ("partial" if rank == 0 else "unshared"), arrays=arrays, progress=False)
    except RuntimeError as e:
        (out_dir / f"unshared_error{rank}.txt").write_text(str(e))


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory):
    """Runs of 2 gloo processes (spawned once for all the tests below)."""
    out = tmp_path_factory.mktemp("ddp")
    torch.manual_seed(5)
    torch.save(torch.randn(6, 6, 5) * 2 + 1, out / "bn_input.pt")
    torch.save(torch.randn(6, 6, 5), out / "bn_weights.pt")
    bn = nn.BatchNorm1d(6)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2)
        bn.bias.uniform_(-1, 1)
    torch.save(bn.state_dict(), out / "bn_state.pt")
    launch.run_local_processes(_rank_main, 2, (str(out), tiny_arrays()))
    return out


def _assert_states_close(a: dict, b: dict, atol: float) -> None:
    assert list(a) == list(b)
    for key in a:
        if a[key].is_floating_point():
            assert torch.allclose(a[key], b[key], atol=atol, rtol=1e-4), (key, (a[key] - b[key]).abs().max())
        else:
            assert torch.equal(a[key], b[key]), key


def test_global_batchnorm_over_two_processes(two_process_runs):
    out = two_process_runs
    x, weights = torch.load(out / "bn_input.pt"), torch.load(out / "bn_weights.pt")
    bn = nn.BatchNorm1d(6)
    bn.load_state_dict(torch.load(out / "bn_state.pt"))
    whole = x.clone().requires_grad_(True)
    y = bn(whole)
    (y * weights).sum().backward()
    ranks = [torch.load(out / f"bn_rank{r}.pt") for r in range(2)]
    assert torch.allclose(torch.cat([r["y"] for r in ranks]), y, atol=1e-5)
    assert torch.allclose(torch.cat([r["grad"] for r in ranks]), whole.grad, atol=1e-5)   # through the stats
    assert torch.allclose(ranks[0]["weight_grad"] + ranks[1]["weight_grad"], bn.weight.grad, atol=1e-5)
    for r in ranks:
        _assert_states_close(r["state"], bn.state_dict(), atol=1e-6)   # running stats of the global batch


@pytest.mark.parametrize("method", ["cmd", "i2md"])
def test_two_processes_match_one_process(two_process_runs, tmp_path, method):
    name = "global" if method == "cmd" else "i2md"
    single = pretrain(smoke(method), tmp_path, arrays=tiny_arrays(), progress=False)
    double = read_log(two_process_runs / name / "log.csv")
    assert len(double) == len(single) == 6
    for a, b in zip(double, single):                        # losses averaged over the ranks
        assert a.keys() == b.keys()
        for key in a:
            if not key.startswith(("dna_purity", "dna_count_cv")):   # ratios: their rank mean is not the global one
                assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5, nan_ok=True), (a["step"], key)
    one = load_checkpoint(tmp_path / "checkpoint.pt")["model"]
    for rank in range(2):   # every rank: the weights, BN statistics and queues of the single process
        _assert_states_close(torch.load(two_process_runs / name / f"model_rank{rank}.pt"), one, atol=1e-5)
    _assert_states_close(load_checkpoint(two_process_runs / name / "checkpoint.pt")["model"], one, atol=1e-5)
    assert int(one["queue_ptr"]) == (6 * 16) % 40


def test_two_process_run_resumes_in_one_process(two_process_runs, tmp_path):
    straight = pretrain(smoke(), tmp_path / "one", arrays=tiny_arrays(), progress=False)
    partial = two_process_runs / "partial"
    state = load_checkpoint(partial / "checkpoint.pt")
    assert (state["step"], state["distributed"]) == (3, {"world_size": 2, "dist_bn": "global"})
    resumed = pretrain(smoke(), partial, arrays=tiny_arrays(), progress=False)   # now one process
    assert [r["step"] for r in resumed] == list(range(1, 7))
    assert [r["total"] for r in resumed] == pytest.approx([r["total"] for r in straight], rel=1e-4)
    _assert_states_close(load_checkpoint(partial / "checkpoint.pt")["model"],
                         load_checkpoint(tmp_path / "one" / "checkpoint.pt")["model"], atol=1e-5)


def test_shuffle_bn_keeps_equal_queues_and_refuses_another_launch(two_process_runs):
    run = two_process_runs / "shuffle"
    ranks = [torch.load(run / f"model_rank{r}.pt") for r in range(2)]
    for key in ranks[0]:
        if "queue" in key:
            assert torch.equal(ranks[0][key], ranks[1][key]), key    # the gathered keys, in order
    # per-rank BN statistics: the query encoders' running means differ between ranks
    key = "encoder_q.joint.input_norm.running_mean"
    assert not torch.allclose(ranks[0][key], ranks[1][key])
    assert all(np.isfinite(r["total"]) for r in read_log(run / "log.csv"))
    with pytest.raises(ConfigMismatchError, match="shuffle BN depends on the number of processes"):
        pretrain(smoke(**{"pretrain.epochs": 4, "pretrain.dist_bn": "shuffle"}), run, arrays=tiny_arrays(),
                 progress=False, allow_changes=["pretrain.epochs"])
    with pytest.raises(ConfigMismatchError, match="pretrain.dist_bn: checkpoint 'shuffle', now 'global'"):
        pretrain(smoke(), run, arrays=tiny_arrays(), progress=False)   # the BN mode is part of the config


def test_ranks_that_see_different_checkpoints_stop_with_a_clear_error(two_process_runs):
    for rank in range(2):
        message = (two_process_runs / f"unshared_error{rank}.txt").read_text()
        assert "disagree on the step to resume from" in message and "[3, 0]" in message
        assert "share" in message
    assert not (two_process_runs / "unshared").exists()


def test_cli_refuses_a_distributed_evaluate(monkeypatch, capsys, tmp_path):
    from i2md_lib import cli

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cli.main(["evaluate", "--run-dir", str(tmp_path)]) == 2
    assert "evaluate runs in one process" in capsys.readouterr().err


def test_cli_pretrain_takes_the_batchnorm_mode(monkeypatch, tmp_path):
    from i2md_lib import cli

    seen = {}
    monkeypatch.setattr("i2md_lib.train.pretrain", lambda cfg, run_dir, **kw: seen.update(cfg=cfg) or [])
    assert cli.main(["pretrain", "--profile", "smoke", "--run-dir", str(tmp_path), "--dist-bn", "shuffle"]) == 0
    assert seen["cfg"].pretrain.dist_bn == "shuffle"
    assert cli.main(["pretrain", "--profile", "smoke", "--run-dir", str(tmp_path),
                     "--set", "pretrain.dist_bn=shuffle"]) == 0
    assert seen["cfg"].pretrain.dist_bn == "shuffle"
    with pytest.raises(SystemExit):
        cli.main(["pretrain", "--profile", "smoke", "--run-dir", str(tmp_path), "--dist-bn", "sync"])
