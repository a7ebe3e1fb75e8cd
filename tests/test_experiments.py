"""The pipeline behind the book's tables, at smoke scale: pretrain, evaluate, record, summarise."""
from __future__ import annotations

import json

import pytest

from i2md_lib import experiments, report, stats
from i2md_lib.cli import main


def test_suite_writes_records_and_skips_finished_runs(tmp_path):
    kwargs = dict(out_root=tmp_path / "results", runs_root=tmp_path / "runs")
    records = experiments.run_suite("main", "smoke", seeds=[0], variants=["random_init", "cmd"], **kwargs)
    assert [r["variant"] for r in records] == ["random_init", "cmd"]
    path = experiments.result_path("smoke", "main", "cmd", 0, tmp_path / "results")
    record = json.loads(path.read_text())
    for key in ("command", "commit", "hardware", "config", "config_digest", "metrics", "pretrain_seconds"):
        assert key in record
    assert record["config"]["pretrain"]["method"] == "cmd" and record["config"]["pretrain"]["seed"] == 0
    protocols = {m["protocol"] for m in record["metrics"]}
    assert {"knn", "linear_fast", "semi"} <= protocols
    knn = {m["modality"]: m["top1@k=1"] for m in record["metrics"] if m["protocol"] == "knn"}
    assert set(knn) == {"joint", "motion", "bone", "ensemble"}
    assert all(0.0 <= v <= 100.0 for v in knn.values())
    # the random-init baseline trained nothing
    assert (tmp_path / "runs" / "smoke" / "main" / "random_init").exists() is False
    # a finished run is not repeated: its file stays byte-identical
    before = path.read_bytes()
    experiments.run_suite("main", "smoke", seeds=[0], variants=["cmd"], **kwargs)
    assert path.read_bytes() == before
    table = report.summary_table(records)
    assert list(table.index) == ["random encoder (no pretraining)", "CMD"]
    assert "knn joint" in table.columns and "linear ensemble" in table.columns
    assert any(c.startswith("semi") for c in table.columns)
    values = report.headline_values(records)
    assert set(report.HEADLINE_METRICS) <= set(values.columns)
    assert values.loc[("cmd", 0), "knn joint"] == knn["joint"]


def test_damaged_result_file_is_named(tmp_path):
    path = tmp_path / "seed0.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="seed0.json"):
        experiments.load_record(path)


def test_unknown_suite_and_variant():
    with pytest.raises(ValueError, match="unknown suite"):
        experiments.run_suite("nope", "smoke", seeds=[0])
    with pytest.raises(ValueError, match="no variants"):
        experiments.run_suite("main", "smoke", seeds=[0], variants=["simclr"])


def test_every_variant_resolves_to_a_valid_config():
    for suite, variants in experiments.SUITES.items():
        names = [v.name for v in variants]
        assert len(names) == len(set(names)), suite
        for variant in variants:
            for profile in ("smoke", "book", "full"):
                cfg = experiments.variant_config(variant, profile, seed=1)
                draws = len(experiments.ExperimentConfig.for_profile(profile).eval.semi_seeds)
                # the seed's own label draws, as many as the profile has: 1, 1001, 2001, ...
                assert cfg.pretrain.seed == 1 and cfg.eval.semi_seeds == tuple(1 + 1000 * i for i in range(draws))


def test_cli_runs_a_suite(tmp_path, capsys):
    code = main(["experiments", "--suite", "main", "--profile", "smoke", "--seeds", "0",
                 "--variants", "random_init", "--out", str(tmp_path / "r"), "--runs", str(tmp_path / "x")])
    assert code == 0
    assert "random encoder" in capsys.readouterr().out
    assert experiments.result_path("smoke", "main", "random_init", 0, tmp_path / "r").exists()


def test_cli_set_overrides_every_run(tmp_path, capsys):
    code = main(["experiments", "--suite", "main", "--profile", "smoke", "--seeds", "1",
                 "--variants", "random_init", "--set", "data.benchmark=xview", "--set", "eval.knn_k=[1]",
                 "--out", str(tmp_path / "r"), "--runs", str(tmp_path / "x")])
    assert code == 0
    record = experiments.load_record(experiments.result_path("smoke", "main", "random_init", 1, tmp_path / "r"))
    assert record["config"]["data"]["benchmark"] == "xview" and record["config"]["eval"]["knn_k"] == [1]


def test_seed_zero_stores_a_tsne_picture(tmp_path):
    experiments.run_suite("main", "smoke", seeds=[0], variants=["moco_joint"],
                          out_root=tmp_path / "r", runs_root=tmp_path / "x")
    emb = experiments.load_embedding("smoke", "main", "moco_joint", root=tmp_path / "r")
    assert emb["modality"] == "joint"
    assert len(emb["xy"]) == len(emb["labels"]) > 10 and len(emb["xy"][0]) == 2


def test_a_run_evaluated_again_keeps_where_its_pretraining_came_from(tmp_path):
    from i2md_lib.train import pretrain

    kwargs = dict(out_root=tmp_path / "r", runs_root=tmp_path / "x", protocols=("knn",))
    (first,) = experiments.run_suite("main", "smoke", seeds=[0], variants=["moco_joint"], **kwargs)
    assert first["pretraining"] == {"seconds": first["pretrain_seconds"], "commit": first["commit"],
                                    "command": first["command"], "created": first["created"], "resumed_at_step": 0}
    # only the evaluation changes: the finished run folder is reused, and its record says so
    (again,) = experiments.run_suite("main", "smoke", seeds=[0], variants=["moco_joint"],
                                     overrides={"eval.knn_k": [1, 3]}, command="again", **kwargs)
    assert again["command"] == "again" and again["config"]["eval"]["knn_k"] == [1, 3]
    assert again["pretraining"] == {**first["pretraining"], "reused": True}
    assert again["pretrain_seconds"] == first["pretrain_seconds"]
    # a run resumed from an unfinished checkpoint records the step it started from
    variant = experiments._variants("main", ["moco3"])[0]
    cfg = experiments.variant_config(variant, "smoke", 0)
    pretrain(cfg, experiments.run_dir("main", "moco3", 0, "smoke", tmp_path / "x"), progress=False, max_steps=3)
    (resumed,) = experiments.run_suite("main", "smoke", seeds=[0], variants=["moco3"], **kwargs)
    assert resumed["pretraining"]["resumed_at_step"] == 3 and "reused" not in resumed["pretraining"]
    assert experiments.earlier_pretraining(tmp_path / "nowhere.json", cfg,
                                           tmp_path / "x" / "smoke" / "main" / "moco3" / "seed0")[0]["seconds"] is None


def test_trained_model_reuses_the_suite_run(tmp_path):
    runs = tmp_path / "runs"
    experiments.run_suite("main", "smoke", seeds=[0], variants=["moco3"], out_root=tmp_path / "r", runs_root=runs)
    ckpt = runs / "smoke" / "main" / "moco3" / "seed0" / "checkpoint.pt"
    before = ckpt.stat().st_mtime_ns
    cfg, model = experiments.trained_model("main", "moco3", profile="smoke", runs_root=runs, progress=False)
    assert ckpt.stat().st_mtime_ns == before          # finished run: nothing retrained
    assert cfg.pretrain.method == "moco3" and set(model.modalities) == {"joint", "motion", "bone"}
    cfg, model = experiments.trained_model("main", "random_init", profile="smoke", runs_root=runs)
    assert not (runs / "smoke" / "main" / "random_init").exists()


def test_results_stay_current_when_the_library_gains_a_config_field(tmp_path, monkeypatch):
    from i2md_lib.config import ExperimentConfig

    kwargs = dict(out_root=tmp_path / "r", runs_root=tmp_path / "x")
    experiments.run_suite("main", "smoke", seeds=[0], variants=["random_init"], **kwargs)
    path = experiments.result_path("smoke", "main", "random_init", 0, tmp_path / "r")
    record = json.loads(path.read_text())
    del record["config"]["pretrain"]["dna_tau"]          # as if written before dna_tau existed
    path.write_text(json.dumps(record))
    cfg = experiments.variant_config(experiments.SUITES["main"][0], "smoke", 0)
    assert experiments._is_current(path, cfg)
    assert not experiments._is_current(path, cfg.replace({"pretrain.lr": 0.5}))
    assert isinstance(cfg, ExperimentConfig)


def test_headline_rule_by_hand():
    assert report.headline_value({"protocol": "knn", "modality": "bone", "top1@k=1": 50.0, "top1@k=20": 9.0}) \
        == ("knn bone", 50.0)
    assert report.headline_value({"protocol": "linear_fast", "modality": "joint", "top1": 61.0}) \
        == ("linear joint", 61.0)
    assert report.headline_value({"protocol": "semi", "modality": "joint", "fraction": 0.01,
                                  "top1_mean": 30.0}) == ("semi 1%", 30.0)
    assert report.headline_value({"protocol": "other"}) is None


def test_chapter_runs_commit_a_model_file_and_log_that_load_without_training(tmp_path, monkeypatch):
    """The runs chapters inspect leave ``seed0_model.pt`` (weights + queues, no optimiser) and
    ``seed0_log.csv.gz`` next to their result file; ``trained_model``/``run_log`` then load them."""
    monkeypatch.setenv("I2MD_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("I2MD_RUNS_DIR", str(tmp_path / "runs"))
    experiments.run_suite("main", "smoke", seeds=[0], variants=["moco_joint"], protocols=("knn",))
    result = experiments.result_path("smoke", "main", "moco_joint", 0)
    model_file, log_file = experiments.model_file_path(result), experiments.log_file_path(result)
    assert model_file.is_file() and log_file.is_file()
    import shutil

    import torch

    from i2md_lib.train import read_log

    trained_log = read_log(experiments.run_dir("main", "moco_joint", 0, "smoke") / "log.csv")
    shutil.rmtree(tmp_path / "runs")                                # a clean clone has no runs/
    cfg, model = experiments.trained_model("main", "moco_joint", profile="smoke", progress=False)
    assert not (tmp_path / "runs").exists()                         # loaded, not trained again
    state = torch.load(model_file, weights_only=True)
    assert "optimizer" not in state and state["meta"]["config_digest"] == cfg.digest()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state["model"].items())
    assert experiments.run_log("main", "moco_joint", profile="smoke") == trained_log
    assert not (tmp_path / "runs").exists()
    # another config: the committed file does not fit, so the run trains
    monkeypatch.setitem(experiments.CHAPTER_RUNS, "main", ())
    other = experiments.run_suite("main", "smoke", seeds=[0], variants=["moco3"], protocols=("knn",))
    assert not experiments.model_file_path(experiments.result_path("smoke", "main", "moco3", 0)).exists()
    assert other[0]["variant"] == "moco3"


def test_paired_comparisons_with_t_intervals_by_hand():
    records = [{"variant": v, "label": v, "seed": s,
                "metrics": [{"protocol": "knn", "modality": "joint", "top1@k=1": x}]}
               for v, xs in {"a": [60.0, 62.0, 61.0], "b": [58.0, 61.0, 57.0]}.items() for s, x in enumerate(xs)]
    values = report.headline_values(records)
    iv = report.paired(values, "a", "b", "knn joint")
    # differences 2, 1, 4: mean 7/3, sd sqrt(7/3), t_{0.975, 2} = 4.3027
    import math
    half = 4.302652729911275 * math.sqrt(7 / 3) / math.sqrt(3)
    assert iv.mean == pytest.approx(7 / 3) and iv.half_width == pytest.approx(half)
    assert report.verdict(iv, "a", "b") == "undecided"          # 2.33 - 3.79 < 0
    table = report.comparison_table(values, [("a", "b")], ["knn joint", "linear joint"])
    assert table.loc[("a − b", "knn joint"), "seeds"] == 3
    assert table.loc[("a − b", "knn joint"), "sd"] == pytest.approx(math.sqrt(7 / 3))
    assert table.loc[("a − b", "linear joint"), "verdict"] == "–"     # no such metric
    sure = report.headline_values([{**r, "metrics": [{**r["metrics"][0], "top1@k=1": r["metrics"][0]["top1@k=1"]
                                                      + (10 if r["variant"] == "a" else 0)}]} for r in records])
    assert report.verdict(report.paired(sure, "a", "b", "knn joint"), "a", "b") == "a > b"
    assert report.interval_cells(table).loc["a − b", "knn joint"].startswith("+2.3 [")
    both_ways = report.interval_cells(report.comparison_table(values, [("b", "a"), ("a", "b")], ["knn joint"]))
    assert list(both_ways.index) == ["b − a", "a − b"]          # the order asked for, not sorted
    assert both_ways.loc["b − a", "knn joint"].startswith("-2.3 [")
    assert list(report.by_comparison(report.comparison_table(values, [("b", "a"), ("a", "b")])["seeds"]).index) == \
        ["b − a", "a − b"]
    needed = report.seeds_needed_table(table, 2.0)
    # sd sqrt(7/3) = 1.53: n = 4 gives 3.182 * 1.53 / 2 = 2.43 > 2, n = 5 gives 2.776 * 1.53 / sqrt(5) = 1.90
    assert needed.loc["a − b", "knn joint"] == 5 == stats.seeds_needed(math.sqrt(7 / 3), 2.0)
    assert math.isnan(needed.loc["a − b", "linear joint"])      # no SD without the metric


def test_the_search_never_sees_the_test_split():
    for variant in experiments.SUITES["search"]:
        assert experiments.variant_config(variant, "book", 0).data.benchmark == "xsub_val", variant.name


def test_search_choice_by_hand():
    def record(variant, seed, knn, linear, benchmark="xsub_val"):
        return {"variant": variant, "label": variant, "seed": seed, "config": {"data": {"benchmark": benchmark}},
                "metrics": [{"protocol": "knn", "modality": "joint", "top1@k=1": knn},
                            {"protocol": "linear_fast", "modality": "joint", "top1": linear}]}
    records = [record("a", 0, 50, 60), record("a", 1, 52, 58), record("b", 0, 55, 60), record("b", 1, 40, 60)]
    table = report.search_table(records)
    assert list(table.index) == ["a", "b"] and table.loc["a", "score"] == 55.0 and table.loc["b", "seeds"] == 2
    assert report.search_choice(records) == "a"
    with pytest.raises(ValueError, match="validation benchmark only"):
        report.search_choice(records + [record("c", 0, 90, 90, "xsub")])


def test_the_book_profile_uses_the_searched_values():
    """The book's DNA gate, loss weights, temperature and epochs are the search's choice (when the
    search's result files are there: results/book/search)."""
    from i2md_lib.config import REPO_ROOT

    folder = REPO_ROOT / "results" / "book" / "search"          # the committed search
    if not folder.is_dir():
        pytest.skip("no search results at the book profile")
    records = [experiments.load_record(p) for p in sorted(folder.glob("*/seed*.json"))]
    chosen = next(v for v in experiments.SUITES["search"] if v.name == report.search_choice(records))
    book = experiments.ExperimentConfig.for_profile("book")
    for key, value in chosen.overrides.items():
        if key not in ("data.benchmark", "pretrain.method"):
            section, name = key.split(".")
            assert getattr(getattr(book, section), name) == (tuple(value) if isinstance(value, list) else value), key


def test_the_book_loads_every_run_it_shows():
    """Every (suite, variant, seed) the book shows at the book profile has a committed result file
    made with today's config, and every run a chapter inspects has its model file and log: a clean
    clone's ``make book`` loads them and trains nothing."""
    from i2md_lib.config import REPO_ROOT

    root = REPO_ROOT / "results"
    stale = [f"{suite}/{variant.name}/seed{seed}" for suite in experiments.SUITES
             for variant, seed in experiments.stale_runs(suite, "book", experiments.default_seeds(suite, "book"),
                                                         out_root=root)]
    assert not stale, f"missing or stale result files at the book profile: {stale}"
    for suite, names in experiments.CHAPTER_RUNS.items():
        for name in names:
            variant = next(v for v in experiments.SUITES[suite] if v.name == name)
            cfg = experiments.variant_config(variant, "book", experiments.CHAPTER_SEED)
            path = experiments.result_path("book", suite, name, experiments.CHAPTER_SEED, root)
            assert experiments._matches(experiments.model_file_path(path), cfg), f"{path}: no current model file"
            assert experiments.log_file_path(path).is_file(), f"{path}: no training log"
    assert set(experiments.SUITE_SEEDS["main"]) <= set(experiments.TARGET_SEEDS["main"])
    assert len(experiments.SUITE_SEEDS["main"]) >= 5 and len(experiments.SUITE_SEEDS["ablation"]) >= 3


def test_last_epoch_means_skip_nan_and_earlier_epochs():
    import math

    rows = [{"epoch": 0, "step": 1, "x": 9.0}, {"epoch": 1, "step": 2, "x": 1.0}, {"epoch": 1, "step": 3, "x": float("nan")},
            {"epoch": 1, "step": 4, "x": 3.0}]
    means = experiments.last_epoch_means(rows)
    assert means["x"] == 2.0 and means["step"] == 3.0
    assert experiments.last_epoch_means([]) == {}
    assert math.isnan(experiments.last_epoch_means([{"epoch": 0, "x": float("nan")}])["x"])


def test_claim_verdicts_and_dna_end_of_training_by_hand():
    def record(variant, seed, knn, log=None):
        return {"variant": variant, "label": variant, "seed": seed, "last_epoch_log": log or {},
                "metrics": [{"protocol": "knn", "modality": "joint", "top1@k=1": knn}]}
    records = [record("a", s, 60 + s) for s in range(3)] + [record("b", s, 50 + s) for s in range(3)] \
        + [record("c", s, v) for s, v in enumerate([61, 58, 63])]
    values = report.headline_values(records)
    claims = (("a beats b", (("a", "b"),)), ("b beats a", (("b", "a"),)), ("c beats a", (("c", "a"),)))
    verdicts = report.claim_verdicts(values, ["knn joint"], claims)["verdict"].tolist()
    assert verdicts == ["supported on 1 of 1", "contradicted on 1 of 1", "undecided on all 1"]
    log = {"dna_neighbors_joint": 4.0, "dna_neighbors_bone": 6.0, "dna_count_cv_joint": 0.5, "dna_count_cv_bone": 0.3,
           "dna_purity_joint": 0.6, "dna_purity_bone": 0.4, "dna_purity_topk_joint": 0.5, "dna_purity_topk_bone": 0.3}
    table = report.dna_end_of_training([record("d", 0, 1, log), record("a", 0, 1)])
    assert list(table.index) == ["d"]
    assert table.loc["d", "neighbours"] == 5.0 and table.loc["d", "count CV"] == pytest.approx(0.4)
    assert table.loc["d", "purity"] == pytest.approx(0.5)
    assert table.loc["d", "purity, fixed top-k of the same size"] == pytest.approx(0.4)


def test_summary_table_short_row_names_with_a_key_and_unbroken_plus_minus():
    records = [{"variant": v, "label": f"{v}, a long description", "seed": s,
                "metrics": [{"protocol": "knn", "modality": "joint", "top1@k=1": 60.0 + s}]}
               for v in ("a", "b") for s in range(2)] + \
        [{"variant": "c", "label": "c, one seed", "seed": 0, "metrics": [{"protocol": "knn", "modality": "joint",
                                                                         "top1@k=1": 50.0}]}]
    short = report.summary_table(records, index="variant")
    assert list(short.index) == ["a", "b", "c"]
    assert short.loc["a", "knn joint"] == "60.5\u00a0±\u00a00.7" and short.loc["c", "knn joint"] == "50.0"
    assert " " not in short.loc["a", "knn joint"]              # no breakable space inside a cell
    assert list(report.summary_table(records).index) == ["a, a long description", "b, a long description",
                                                         "c, one seed"]
    key = report.variant_key(records)
    assert key.loc["b", "what it is"] == "b, a long description" and list(key.index) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="index must be"):
        report.summary_table(records, index="seed")


def test_claim_verdicts_count_decided_metrics_under_holm():
    """Constructed so that Holm's correction over a claim's four metrics changes one verdict."""
    metrics = ["knn joint", "linear joint", "linear ensemble", "semi 1%"]
    # per-seed differences of "a" over "b" on each metric (three seeds, "b" at 50 everywhere)
    gaps = {"knn joint": [1.0, 1.2, 1.1],            # p about 0.003: decided, with or without Holm
            "linear joint": [0.2, 1.5, 0.8],         # p about 0.10: undecided
            "linear ensemble": [-0.3, 0.4, 0.1],     # undecided
            "semi 1%": [0.9, 1.9, 1.3]}              # p about 0.04: decided alone, not after Holm
    rows = {"knn joint": ("knn", "joint", "top1@k=1"), "linear joint": ("linear", "joint", "top1"),
            "linear ensemble": ("linear", "ensemble", "top1")}

    def record(variant, seed, shift):
        metrics_rows = [{"protocol": p, "modality": m, key: 50.0 + shift(name)} for name, (p, m, key) in rows.items()]
        metrics_rows.append({"protocol": "semi", "fraction": 0.01, "top1_mean": 50.0 + shift("semi 1%")})
        return {"variant": variant, "label": variant, "seed": seed, "metrics": metrics_rows}

    records = [record("b", s, lambda name: 0.0) for s in range(3)] + \
        [record("a", s, lambda name, s=s: gaps[name][s]) for s in range(3)] + \
        [record("c", s, lambda name, s=s: -10.0 - s if name == "knn joint" else gaps[name][s]) for s in range(3)]
    values = report.headline_values(records)
    claims = (("a beats b", (("a", "b"),)), ("c beats b", (("c", "b"),)), ("b beats a", (("b", "a"),)))
    tests = report.claim_tests(values, metrics, claims)
    first = tests.xs("a beats b", level="claim")
    assert first["uncorrected"].tolist() == [True, False, False, True]
    assert first["decided"].tolist() == [True, False, False, False]
    assert first.loc[("a − b", "semi 1%"), "p"] == pytest.approx(0.0424, abs=5e-4)   # t = 4.70 on 2 df
    table = report.claim_verdicts(values, metrics, claims)
    assert table.loc["a beats b", "verdict"] == "supported on 1 of 4: knn joint"
    assert table.loc["a beats b", "uncorrected"] == "supported on 2 of 4: knn joint, semi 1%"
    assert table.loc["c beats b", "verdict"] == "contradicted on 1 of 4: knn joint"
    assert table.loc["b beats a", "verdict"] == "contradicted on 1 of 4: knn joint"
    assert (table.loc["a beats b", "decided above 0"], table.loc["a beats b", "tests"]) == (1, 4)
    several = report.claim_verdicts(values, metrics, (("a and c beat b", (("a", "b"), ("c", "b"))),))
    assert several.iloc[0]["verdict"].startswith("mixed: supported on 1 of 8: a − b, knn joint; contradicted on 1 of 8")


def test_floor_table_by_hand():
    def record(variant, seed, knn, linear):
        return {"variant": variant, "label": variant, "seed": seed, "metrics": [
            {"protocol": "knn", "modality": "joint", "top1@k=1": knn},
            {"protocol": "linear", "modality": "joint", "top1": linear}]}
    records = [record("random_init", s, 50 + s, 60) for s in range(2)] + \
        [record("a", s, 80, 70 + s) for s in range(2)] + [record("b", s, 70, 90) for s in range(2)]
    table = report.floor_table(report.headline_values(records))
    assert table.loc["knn joint", "best is"] == "a" and table.loc["knn joint", "gap"] == pytest.approx(29.5)
    assert table.loc["linear joint", "best is"] == "b" and table.loc["linear joint", "gap"] == pytest.approx(30.0)
    assert table.loc["linear joint", "untrained"] == 60


def test_load_records_reads_a_suite_folder_in_seed_order(tmp_path):
    for variant, seed in [("b", 10), ("b", 2), ("a", 0)]:
        folder = tmp_path / variant
        folder.mkdir(exist_ok=True)
        (folder / f"seed{seed}.json").write_text(json.dumps({"variant": variant, "seed": seed, "metrics": []}))
    (tmp_path / "a" / "seed0_tsne.json").write_text("{}")             # not a result file
    assert [(r["variant"], r["seed"]) for r in experiments.load_records(tmp_path)] == [("a", 0), ("b", 2), ("b", 10)]
    (tmp_path / "a" / "seed1.json").write_text("{")
    with pytest.raises(ValueError, match="seed1.json"):
        experiments.load_records(tmp_path)


def test_noise_table_reads_the_committed_budget():
    from i2md_lib.config import REPO_ROOT

    budget = json.loads((REPO_ROOT / "results" / "book" / "noise" / "noise_budget.json").read_text())
    table = report.noise_table(budget)
    assert table.loc[("random_init", "knn joint"), "(b) evaluation seed"] == 0.0
    assert ("cmd − moco3 (paired)", "knn joint") in table.index


def test_paired_budget_table_sets_committed_budgets_side_by_side():
    from i2md_lib.config import REPO_ROOT

    files = {"v1": REPO_ROOT / "results" / "book" / "testbed_v1" / "noise" / "noise_budget.json",
             "v3": REPO_ROOT / "results" / "book" / "noise" / "noise_budget.json"}
    budgets = {name: json.loads(path.read_text()) for name, path in files.items()}
    table = report.paired_budget_table(budgets)
    assert list(table.index) == ["knn joint", "linear joint", "linear ensemble", "semi 1% joint"]
    for name, budget in budgets.items():
        knn = budget["analysis"]["paired"]["metrics"]["knn_joint"]
        assert table.loc["knn joint", (name, "SD of one cmd − moco3")] == knn["sd_one_difference"]
        assert table.loc["knn joint", (name, "seeds for ±2")] == knn["seeds_needed"]["2.0"]


def test_testbed_table_reads_every_committed_testbed_summary():
    from i2md_lib.config import REPO_ROOT

    files = sorted((REPO_ROOT / "results" / "book").glob("testbed_*/summary.json"))
    assert files
    for path in files:
        summary = json.loads(path.read_text())
        table = report.testbed_table(summary)
        assert len(table) == sum(len(e["seeds"]) for e in summary["summary"].values())
        row = table.iloc[0]
        for name in ("kNN", "linear"):
            best = max(row[f"moco3 {name}"], row[f"cmd {name}"])
            assert row[f"gap {name}"] == pytest.approx(best - row[f"random_init {name}"])


def test_another_methods_keys_do_not_make_a_result_stale():
    from i2md_lib.checkpoint import pretraining_differences, result_differences

    moco3 = experiments.variant_config(experiments._variants("main", ["moco3"])[0], "book", 0)
    i2md = experiments.variant_config(experiments._variants("main", ["i2md"])[0], "book", 0)
    weights = {"pretrain.cluster_weight": 0.75, "pretrain.imd_weight": 0.25}     # the book's are 0.5
    assert experiments._same_config(moco3.to_dict(), moco3.replace(weights))
    assert not experiments._same_config(i2md.to_dict(), i2md.replace(weights))
    assert set(result_differences(i2md.to_dict(), i2md.replace(weights).to_dict())) == set(weights)
    # a change of method is a difference, whatever the other keys
    assert "pretrain.method" in pretraining_differences(moco3.to_dict(), i2md.to_dict())
    # evaluation keys change results, not the pretrained weights
    more = moco3.replace({"eval.semi_seeds": (0, 1, 2, 3)})
    assert result_differences(moco3.to_dict(), more.to_dict()) and not pretraining_differences(
        moco3.to_dict(), more.to_dict())


def test_stream_failures_finds_the_collapsed_motion_stream_and_its_loss():
    def record(variant, seed, motion, loss):
        return {"variant": variant, "seed": seed, "last_epoch_log": {"nce_motion": loss, "nce_joint": 4.0},
                "metrics": [{"protocol": "linear", "modality": "motion", "top1": motion},
                            {"protocol": "knn", "modality": "motion", "top1@k=1": motion - 1.0},
                            {"protocol": "linear", "modality": "joint", "top1": 80.0}]}

    records = [record("a", s, m, l) for s, (m, l) in enumerate([(76.0, 4.8), (40.0, 5.6), (78.0, 5.0), (75.0, 4.9),
                                                                 (50.0, 5.4)])]
    records += [record("b", s, m, 4.8) for s, m in enumerate([70.0, 72.0, 65.0])]   # 5 under its median: fine
    failed = report.stream_failures(records)
    assert list(failed.index) == [("a", 1), ("a", 4)]
    assert failed.loc[("a", 1), "linear motion"] == 40.0 and failed.loc[("a", 1), "median linear motion"] == 75.0
    assert failed.loc[("a", 1), "knn motion"] == 39.0
    assert failed.loc[("a", 4), "InfoNCE motion, last epoch"] == 5.4
    assert (failed["highest of the healthy runs"] == 5.0).all()      # the two failures left out
    assert report.stream_failures(records, "joint").empty
    assert report.stream_failures(records, drop=40.0).empty


def test_intervals_and_claim_verdicts_by_seed_count_on_constructed_data():
    """Five seeds built so that "a" is decided above "b" on the first three and not on all five."""
    gaps = [2.0, 2.2, 1.9, -3.0, 4.0]                # a - b per seed; the last two widen the interval

    def record(variant, seed, knn):
        return {"variant": variant, "label": variant, "seed": seed,
                "metrics": [{"protocol": "knn", "modality": "joint", "top1@k=1": knn},
                            {"protocol": "linear", "modality": "joint", "top1": 50.0 + seed}]}
    records = [record("b", s, 50.0) for s in range(5)] + [record("a", s, 50.0 + g) for s, g in enumerate(gaps)]
    assert {r["seed"] for r in report.first_seeds(records, 3)} == {0, 1, 2}
    with pytest.raises(ValueError, match="first 6 seeds, the records have 5"):
        report.first_seeds(records, 6)
    metrics = ["knn joint", "linear joint"]
    every = report.intervals_by_seeds(records, [3, 5], [("a", "b")], metrics)
    assert list(every.columns) == ["3 seeds", "5 seeds"]
    assert every.loc[("a − b", "knn joint"), "3 seeds"].startswith("+2.0 [+1.")   # decided: 2.03 ± 0.38
    assert every.loc[("a − b", "knn joint"), "5 seeds"].startswith("+1.4 [-")     # undecided
    assert every.loc[("a − b", "linear joint"), "5 seeds"] == "+0.0 [+0.0, +0.0]"  # same on every seed
    moved = report.intervals_by_seeds(records, [3, 5], [("a", "b")], metrics, moved_only=True)
    assert list(moved.index) == [("a − b", "knn joint")]
    claims = (("a beats b", (("a", "b"),)),)
    verdicts = report.claim_verdicts_by_seeds(records, [3, 5], ["knn joint"], claims)
    assert verdicts.loc["a beats b"].tolist() == ["supported on 1 of 1", "undecided on all 1"]


def test_search_differences_pair_each_candidate_with_the_reference_by_hand():
    def record(variant, seed, knn, linear):
        return {"variant": variant, "label": variant, "seed": seed, "config": {"data": {"benchmark": "xsub_val"}},
                "metrics": [{"protocol": "knn", "modality": "joint", "top1@k=1": knn},
                            {"protocol": "linear_fast", "modality": "joint", "top1": linear}]}
    records = [record("ref", 0, 70, 80), record("ref", 1, 74, 80), record("long", 0, 72, 82),
               record("long", 1, 74, 84), record("short", 0, 50, 60), record("short", 1, 60, 62)]
    table = report.search_differences(records, "ref")
    assert list(table.index) == ["long", "short"]                   # best score first, no reference row
    assert table.loc["long", "seed 0"] == 2.0 and table.loc["long", "seed 1"] == 2.0
    assert table.loc["short", "seed 0"] == -20.0 and table.loc["short", "seed 1"] == -16.0
    # differences -20 and -16: mean -18, sd 2*sqrt(2), t_{0.975, 1} = 12.706 -> half-width 25.4
    assert table.loc["short", "difference"] == -18.0
    assert table.loc["short", "high"] == pytest.approx(-18.0 + 12.706204736 * 2.0, abs=1e-6)
    with pytest.raises(ValueError, match="no runs of the reference 'z2.0'"):
        report.search_differences(records, "z2.0")


def test_claims_side_by_side_marks_each_claim_by_hand():
    """Two constructed testbeds: a claim that holds, one reversed, one decided only on the second,
    one undecided there, and one whose comparison the second did not run."""
    def record(variant, seed, value, metric="semi"):
        row = ({"protocol": "semi", "fraction": 0.01 if metric == "semi" else 0.1, "top1_mean": value})
        return {"variant": variant, "label": variant, "seed": seed, "metrics": [row]}
    noise = [0.0, 0.3, -0.2]
    first = [record("b", s, 50.0) for s in range(3)] + [record("a", s, 55.0 + noise[s]) for s in range(3)] \
        + [record("c", s, 45.0 + noise[s]) for s in range(3)] + [record("d", s, 50.0 + 3 * noise[s]) for s in range(3)] \
        + [record("e", s, 60.0 + noise[s]) for s in range(3)] + [record("f", s, 40.0 + noise[s]) for s in range(3)]
    spread = [4.0, -5.0, 1.0]
    second = [record("b", s, 50.0, "semi10") for s in range(3)] \
        + [record("a", s, 55.0 + noise[s], "semi10") for s in range(3)] \
        + [record("c", s, 55.0 + noise[s], "semi10") for s in range(3)] \
        + [record("d", s, 45.0 + noise[s], "semi10") for s in range(3)] \
        + [record("e", s, 50.0 + spread[s], "semi10") for s in range(3)]
    claims = (("a", (("a", "b"),)), ("c", (("c", "b"),)), ("d", (("d", "b"),)), ("e", (("e", "b"),)),
              ("f", (("f", "b"),)))
    table = report.claims_side_by_side(report.headline_values(first), report.headline_values(second),
                                       ["semi 1%"], ["semi 10%"], ("synthetic", "MSR"), claims)
    assert table["on MSR"].tolist() == ["holds", "reversed", "decided only on MSR", "undecided on MSR", "not run"]
    assert table.loc["c", "synthetic"] == "contradicted on 1 of 1" and table.loc["c", "MSR"] == "supported on 1 of 1"
    assert table.loc["f", "MSR"] == "–"
