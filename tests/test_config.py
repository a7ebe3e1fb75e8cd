from __future__ import annotations

import pytest

from i2md_lib.config import PROFILES, ExperimentConfig, active_profile


def test_default_config_is_the_paper():
    cfg = ExperimentConfig()
    assert cfg.encoder.hidden_size == 1024 and cfg.encoder.num_layers == 3
    assert cfg.encoder.feature_dim == 2048
    assert cfg.pretrain.queue_size == 16384 and cfg.pretrain.cmd_topk == 8192
    assert cfg.pretrain.epochs == 451 and cfg.pretrain.lr_milestones == (351,)
    assert (cfg.pretrain.cmd_tau_teacher, cfg.pretrain.cmd_tau_student) == (0.05, 0.1)
    assert cfg.data.window == 64 and cfg.pretrain.batch_size == 64
    assert ExperimentConfig.for_profile("full") == ExperimentConfig(profile="full")


def test_profiles_scale_down_and_are_distinct():
    smoke, book, full = (ExperimentConfig.for_profile(p) for p in PROFILES)
    assert smoke.encoder.hidden_size < book.encoder.hidden_size < full.encoder.hidden_size
    assert smoke.pretrain.queue_size < book.pretrain.queue_size < full.pretrain.queue_size
    for cfg in (smoke, book, full):
        assert cfg.pretrain.cmd_topk <= cfg.pretrain.queue_size
        assert max(cfg.pretrain.lr_milestones) < cfg.pretrain.epochs + 1


def test_profile_from_environment(monkeypatch):
    monkeypatch.setenv("I2MD_PROFILE", "full")
    assert active_profile() == "full"
    assert active_profile("smoke") == "smoke"  # an explicit argument wins
    monkeypatch.setenv("I2MD_PROFILE", "huge")
    with pytest.raises(ValueError, match="I2MD_PROFILE"):
        active_profile()


def test_dotted_overrides_and_round_trip():
    cfg = ExperimentConfig.for_profile("smoke", {"pretrain.epochs": 7, "data.synthetic.seed": 3,
                                                  "pretrain.lr_milestones": [4, 6]})
    assert cfg.pretrain.epochs == 7 and cfg.data.synthetic.seed == 3
    assert cfg.pretrain.lr_milestones == (4, 6)
    again = ExperimentConfig.from_dict(cfg.to_dict())
    assert again == cfg and again.digest() == cfg.digest()
    assert cfg.replace({"pretrain.epochs": 8}).digest() != cfg.digest()
    with pytest.raises(ValueError, match="pretrain.nope"):
        cfg.replace({"pretrain.nope": 1})
    with pytest.raises(ValueError, match="not a section"):
        cfg.replace({"profile.x": 1})
