from __future__ import annotations

import pytest

from i2md_lib import config
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


def test_every_profile_and_suite_variant_builds():
    from i2md_lib import experiments

    for profile in PROFILES:
        for variants in experiments.SUITES.values():
            for variant in variants:
                cfg = experiments.variant_config(variant, profile, seed=2)
                assert cfg.pretrain.seed == 2 and cfg.profile == profile


def test_choice_lists_match_the_modules_that_use_them():
    from i2md_lib.data.modalities import MODALITIES as modality_names
    from i2md_lib.eval.results import SELECT_RULES
    from i2md_lib import methods
    from i2md_lib.models import encoders

    assert config.METHODS == tuple(methods.METHOD_LOSSES) and config.MODALITIES == modality_names
    assert config.ENCODER_KINDS == tuple(encoders.ENCODER_KINDS) and config.RECURRENCES == encoders.RECURRENCES
    assert config.SELECT_ON == SELECT_RULES


def test_one_replace_applies_all_its_keys_before_checking():
    book = ExperimentConfig.for_profile("book")          # epochs 200, milestone 160
    assert book.pretrain.lr_milestones == (160,)
    short = book.replace({"pretrain.lr_milestones": [8], "pretrain.epochs": 10})   # order does not matter
    assert (short.pretrain.epochs, short.pretrain.lr_milestones) == (10, (8,))
    with pytest.raises(ValueError, match=r"pretrain.lr_milestones \[160\] must lie within pretrain.epochs \(10\)"):
        book.replace({"pretrain.epochs": 10})
    nested = book.replace({"pretrain": {"queue_size": 16, "cmd_topk": 8, "imd_topk": 8}})
    assert nested.pretrain.queue_size == 16


def test_values_are_fitted_to_their_fields():
    cfg = ExperimentConfig.for_profile("smoke", {"pretrain.lr": "1e-3", "pretrain.epochs": 4.0,
                                                  "eval.knn_k": 5, "data.root": 2024, "pretrain.momentum": 0})
    assert cfg.pretrain.lr == 0.001 and cfg.pretrain.epochs == 4 and isinstance(cfg.pretrain.epochs, int)
    assert cfg.eval.knn_k == (5,) and cfg.data.root == "2024" and isinstance(cfg.pretrain.momentum, float)
    assert ExperimentConfig.from_dict(cfg.to_dict()) == cfg


def test_demo_sized_models_build_but_do_not_train():
    """Chapter 2 shows the queue with 6 slots; training needs the batch to fit the queue."""
    demo = ExperimentConfig.for_profile("smoke", {"pretrain.method": "moco", "pretrain.queue_size": 6})
    with pytest.raises(ValueError, match=r"pretrain.queue_size \(6\) must be >= pretrain.batch_size \(16\)"):
        config.check_trainable(demo)
    config.check_trainable(ExperimentConfig.for_profile("smoke"))
