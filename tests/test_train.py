"""The pretraining loop: logging, checkpoints, exact resume and clear errors."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from i2md_lib import checkpoint as ckpt_mod
from i2md_lib.checkpoint import (CheckpointError, ConfigMismatchError, capture_rng_state, load_checkpoint,
                                 restore_rng_state)
from i2md_lib.config import ExperimentConfig
from i2md_lib.data.store import SkeletonArrays
from i2md_lib.models.moco import MoCo
from i2md_lib.models.pretrained import load_pretrained
from i2md_lib.train import amp_dtype, epoch_batches, pretrain, read_config, read_log


def tiny_arrays(n: int = 40, t: int = 48) -> SkeletonArrays:
    """Random clips of varied length: enough for 2 batches of 16 per epoch."""
    rng = np.random.default_rng(0)
    data = rng.normal(size=(n, 3, t, 25, 2)).astype(np.float32)
    return SkeletonArrays(data, rng.integers(20, t + 1, size=n), np.zeros(n, dtype=np.int64),
                          [f"clip{i}" for i in range(n)])


def smoke(**overrides) -> ExperimentConfig:
    # queue 40 is not a multiple of the batch (16): exercises the wrap-around too
    base = {"pretrain.method": "cmd", "pretrain.epochs": 3, "pretrain.queue_size": 40,
            "pretrain.cmd_topk": 20, "pretrain.lr_milestones": (2,)}
    if overrides.get("pretrain.epochs", 3) < 2:
        base["pretrain.lr_milestones"] = ()    # milestones lie within the epochs (2 was never reached)
    return ExperimentConfig.for_profile("smoke", {**base, **overrides})


def test_resume_is_exact(tmp_path):
    cfg, data = smoke(), tiny_arrays()       # 3 epochs x 2 batches = 6 steps
    straight = pretrain(cfg, tmp_path / "a", arrays=data, progress=False)
    first = pretrain(cfg, tmp_path / "b", arrays=data, progress=False, max_steps=3)   # stops mid-epoch 1
    assert len(first) == 3 and load_checkpoint(tmp_path / "b" / "checkpoint.pt")["batch_in_epoch"] == 1
    resumed = pretrain(cfg, tmp_path / "b", arrays=data, progress=False)
    assert len(straight) == 6 and resumed == straight                  # logged losses, identical
    assert read_log(tmp_path / "b" / "log.csv") == straight
    a = load_checkpoint(tmp_path / "a" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:                                             # parameters, queues, pointer
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert int(b["model"]["queue_ptr"]) == (6 * 16) % 40
    assert (a["epoch"], a["step"], b["epoch"], b["step"]) == (3, 6, 3, 6)


def test_log_and_config_files(tmp_path):
    cfg = smoke(**{"pretrain.epochs": 2})
    history = pretrain(cfg, tmp_path, arrays=tiny_arrays(), progress=False)
    assert [r["step"] for r in history] == [1, 2, 3, 4] and [r["epoch"] for r in history] == [0, 0, 1, 1]
    assert [r["lr"] for r in history] == pytest.approx([0.05] * 4)                  # milestone 2 not reached
    row = history[0]
    assert {"total", "nce_joint", "nce_motion", "nce_bone", "cmd", "cmd_joint_motion", "acc_bone"} <= set(row)
    assert row["total"] == pytest.approx(row["nce_joint"] + row["nce_motion"] + row["nce_bone"] + row["cmd"])
    assert read_config(tmp_path / "config.yaml") == cfg
    assert read_log(tmp_path / "log.csv") == history


def test_lr_follows_the_milestones(tmp_path):
    history = pretrain(smoke(**{"pretrain.lr_milestones": (1, 2)}), tmp_path, arrays=tiny_arrays(), progress=False)
    assert [r["lr"] for r in history] == pytest.approx([0.05, 0.05, 0.005, 0.005, 0.0005, 0.0005])


def test_checkpoint_schedule(tmp_path, monkeypatch):
    saved = []
    real_save = ckpt_mod.save_checkpoint
    monkeypatch.setattr("i2md_lib.train.save_checkpoint",
                        lambda path, state: (saved.append((state["epoch"], state["step"])), real_save(path, state)))
    pretrain(smoke(**{"pretrain.checkpoint_every": 2}), tmp_path, arrays=tiny_arrays(), progress=False)
    assert saved == [(2, 4), (3, 6)]                         # every 2 epochs, and at the end


def test_resume_with_a_different_config_names_the_keys(tmp_path):
    data = tiny_arrays()
    pretrain(smoke(**{"pretrain.epochs": 1}), tmp_path, arrays=data, progress=False)
    changed = smoke(**{"pretrain.epochs": 2, "pretrain.lr": 0.1, "pretrain.lr_milestones": ()})
    with pytest.raises(ConfigMismatchError) as err:
        pretrain(changed, tmp_path, arrays=data, progress=False)
    assert "pretrain.epochs" in str(err.value) and "pretrain.lr" in str(err.value)
    assert "checkpoint.pt" in str(err.value)
    # an explicit override continues the run for one more epoch
    history = pretrain(smoke(**{"pretrain.epochs": 2, "pretrain.lr_milestones": ()}), tmp_path, arrays=data,
                       progress=False, allow_changes=["pretrain.epochs"])
    assert [r["epoch"] for r in history] == [0, 0, 1, 1]
    assert read_config(tmp_path / "config.yaml").pretrain.epochs == 2


def test_a_finished_run_is_reused_when_only_the_evaluation_settings_change(tmp_path):
    # pretraining never reads the eval section: more label draws must not force a retrain
    data = tiny_arrays()
    first = pretrain(smoke(**{"pretrain.epochs": 1}), tmp_path, arrays=data, progress=False)
    more_draws = smoke(**{"pretrain.epochs": 1, "eval.semi_seeds": (0, 1, 2, 3), "eval.epochs": 3})
    assert pretrain(more_draws, tmp_path, arrays=data, progress=False) == first
    with pytest.raises(ConfigMismatchError, match="pretrain.lr"):   # a pretraining key still counts
        pretrain(smoke(**{"pretrain.epochs": 1, "pretrain.lr": 0.2}), tmp_path, arrays=data, progress=False)


def test_no_resume_starts_over(tmp_path):
    data = tiny_arrays()
    first = pretrain(smoke(**{"pretrain.epochs": 1}), tmp_path, arrays=data, progress=False)
    again = pretrain(smoke(**{"pretrain.epochs": 1}), tmp_path, arrays=data, progress=False, resume=False)
    assert again == first and len(read_log(tmp_path / "log.csv")) == 2


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    data = tiny_arrays()
    pretrain(smoke(), tmp_path, arrays=data, progress=False, max_steps=1)
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(CheckpointError, match="checkpoint.pt"):
        pretrain(smoke(), tmp_path, arrays=data, progress=False)
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="checkpoint.pt"):
        load_pretrained(tmp_path)


def test_failed_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    data = tiny_arrays()
    pretrain(smoke(), tmp_path, arrays=data, progress=False, max_steps=2)
    good = (tmp_path / "checkpoint.pt").read_bytes()

    def crash_mid_write(obj, f):
        with open(f, "wb") as fh:
            fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_mid_write)
    with pytest.raises(OSError, match="disk full"):
        pretrain(smoke(), tmp_path, arrays=data, progress=False, max_steps=3)
    assert (tmp_path / "checkpoint.pt").read_bytes() == good
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 2


def test_resume_drops_log_rows_after_the_checkpoint(tmp_path):
    data = tiny_arrays()
    straight = pretrain(smoke(), tmp_path / "a", arrays=data, progress=False)
    pretrain(smoke(), tmp_path / "b", arrays=data, progress=False, max_steps=3)
    log = tmp_path / "b" / "log.csv"
    lines = log.read_text().splitlines()
    assert lines[-1].startswith("3,")
    after = "4," + lines[-1][2:]                      # a step trained after the checkpoint ...
    log.write_text("\n".join(lines + [after, after[:7]]) + "\n")   # ... and a row cut by a crash
    assert pretrain(smoke(), tmp_path / "b", arrays=data, progress=False) == straight


def test_load_pretrained(tmp_path):
    cfg = smoke(**{"pretrain.epochs": 1})
    pretrain(cfg, tmp_path, arrays=tiny_arrays(), progress=False)
    loaded_cfg, model = load_pretrained(tmp_path)
    assert loaded_cfg == cfg and isinstance(model, MoCo) and not model.training
    state = load_checkpoint(tmp_path / "checkpoint.pt")["model"]
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key])
    _, same = load_pretrained(tmp_path / "checkpoint.pt")
    assert torch.equal(same.queue_joint, model.queue_joint)


def test_rng_state_round_trip():
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    state = capture_rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(2), np.random.seed(2), torch.manual_seed(2)
    restore_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_epoch_batches_are_seeded_full_batches():
    batches = epoch_batches(37, 8, seed=42, epoch=3)
    assert len(batches) == 4 and all(len(b) == 8 for b in batches)
    flat = [i for b in batches for i in b]
    assert len(set(flat)) == 32 and all(0 <= i < 37 for i in flat)
    assert epoch_batches(37, 8, seed=42, epoch=3) == batches
    assert epoch_batches(37, 8, seed=42, epoch=4) != batches


def test_amp_choices():
    assert amp_dtype("none", torch.device("cpu")) is None
    assert amp_dtype("bf16", torch.device("cpu")) is torch.bfloat16
    with pytest.raises(ValueError, match="CUDA"):
        amp_dtype("fp16", torch.device("cpu"))
    with pytest.raises(ValueError, match="amp"):
        amp_dtype("fp8", torch.device("cpu"))


def test_bf16_autocast_trains_on_cpu(tmp_path):
    history = pretrain(smoke(**{"pretrain.amp": "bf16"}), tmp_path, arrays=tiny_arrays(), progress=False,
                       max_steps=2)
    assert len(history) == 2 and all(np.isfinite(r["total"]) for r in history)
    with pytest.raises(ValueError, match="CUDA"):
        pretrain(smoke(**{"pretrain.amp": "fp16"}), tmp_path / "fp16", arrays=tiny_arrays(), progress=False)


def test_too_few_clips_for_a_batch(tmp_path):
    with pytest.raises(ValueError, match="fewer than one batch"):
        pretrain(smoke(), tmp_path, arrays=tiny_arrays(n=10), progress=False)
