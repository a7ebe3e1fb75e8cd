"""tools/testbed.py (and its v2 entry point tools/testbed_v2.py) at smoke size: result files per
variant and seed, and the gap summary."""
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import testbed  # noqa: E402
import testbed_v2  # noqa: E402


def test_summary_of_a_tiny_run(tmp_path):
    report = testbed_v2.main([
        "--profile", "smoke", "--seeds", "0", "--parts", "val", "--allow-dirty",
        "--set", "data.synthetic.num_subjects=8", "--set", "data.synthetic.test_every=2",
        "--set", "data.synthetic.num_cameras=1", "--set", "pretrain.epochs=1",
        "--set", "pretrain.lr_milestones=[1]", "--set", "eval.label_fractions=[0.1]",
        "--out", str(tmp_path / "out"), "--runs", str(tmp_path / "runs")])
    entry = report["summary"]["val"]
    assert entry["benchmark"] == "xsub_val" and entry["num_train"] > entry["num_test"] > 0
    row = entry["seeds"][0]
    for metric in ("knn_joint", "linear_joint"):
        best = max(testbed_v2.PRETRAINED, key=lambda v: row[v][metric])
        assert row[f"gap_{metric}"] == pytest.approx(row[best][metric] - row["random_init"][metric])
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["summary"] == \
        json.loads(json.dumps(report["summary"]))
    for variant in testbed_v2.VARIANTS:
        record = json.loads((tmp_path / "out" / "val" / "smoke" / "main" / variant / "seed0.json").read_text())
        assert record["config"]["data"]["synthetic"]["version"] == 2
        assert record["config"]["data"]["benchmark"] == "xsub_val"
        assert record["command"].startswith("OMP_NUM_THREADS=") and "tools/testbed_v2.py" in record["command"]
    assert "| 0 |" in (tmp_path / "out" / "summary.md").read_text()


def test_design_v3_runs_with_its_distortions(tmp_path):
    report = testbed.main([
        "--design", "v3", "--profile", "smoke", "--seeds", "0", "--parts", "val", "--allow-dirty",
        "--set", "data.synthetic.num_subjects=8", "--set", "pretrain.epochs=1",
        "--set", "pretrain.lr_milestones=[1]", "--set", "eval.label_fractions=[0.1]", "--out", str(tmp_path / "out"), "--runs", str(tmp_path / "runs")])
    assert report["design"] == "v3" and report["tool"] == "tools/testbed.py"
    record = json.loads((tmp_path / "out" / "val" / "smoke" / "main" / "moco3" / "seed0.json").read_text())
    synthetic = record["config"]["data"]["synthetic"]
    assert synthetic["version"] == 1 and synthetic["residual_rotation"] == 0.5 and synthetic["axis_stretch"] == 0.25
    assert "tools/testbed.py --design v3" in record["command"]
    assert (tmp_path / "out" / "summary.md").read_text().startswith("# Testbed v3")


def test_a_later_run_keeps_the_parts_it_did_not_redo(tmp_path):
    args = ["--design", "v3", "--profile", "smoke", "--seeds", "0", "--allow-dirty",
            "--set", "data.synthetic.num_subjects=8", "--set", "pretrain.epochs=1",
            "--set", "pretrain.lr_milestones=[1]", "--set", "eval.label_fractions=[0.1]",
            "--out", str(tmp_path / "out"), "--runs", str(tmp_path / "runs")]
    first = testbed.main(args + ["--parts", "val"])
    second = testbed.main(args + ["--parts", "test"])
    assert list(second["summary"]) == ["val", "test"]
    assert second["summary"]["val"] == json.loads(json.dumps(first["summary"]["val"]))
    assert "--parts val" in second["summary"]["val"]["command"]
    assert "--parts test" in second["summary"]["test"]["command"]
    other = testbed.main(args + ["--parts", "test", "--set", "pretrain.temperature=0.2",
                                 "--runs", str(tmp_path / "runs-other")])
    assert list(other["summary"]) == ["test"]          # another design: nothing kept


def test_a_design_is_the_base_and_a_rows_own_keys_win():
    from i2md_lib import experiments

    search = {v.name: v for v in experiments.SUITES["search"]}
    short = experiments.variant_config(search["e60"], "book", 3, base=testbed.V3_BOOK)
    assert (short.pretrain.epochs, short.pretrain.lr_milestones) == (60, (48,))       # the row wins
    assert short.data.benchmark == "xsub_val" and short.data.synthetic.residual_rotation == 0.5
    main = experiments.variant_config(experiments.SUITES["main"][4], "book", 3, base=testbed.V3_BOOK)
    assert (main.pretrain.method, main.pretrain.epochs, main.pretrain.lr_milestones) == ("cmd", 200, (160,))
    assert main.eval.semi_seeds == tuple(3 + 1000 * i for i in range(10))           # ten draws, per seed
    # extra overrides still come last
    extra = experiments.variant_config(search["e60"], "book", 3, {"pretrain.epochs": 70}, base=testbed.V3_BOOK)
    assert extra.pretrain.epochs == 70


def test_the_search_runs_under_a_design_on_the_validation_split_only(tmp_path):
    args = ["--design", "v3", "--profile", "smoke", "--seeds", "0", "--allow-dirty", "--suite", "search",
            "--variants", "z2.0", "--set", "data.synthetic.num_subjects=8", "--set", "eval.label_fractions=[0.1]",
            "--set", "pretrain.epochs=1", "--set", "pretrain.lr_milestones=[1]",
            "--out", str(tmp_path / "out"), "--runs", str(tmp_path / "runs")]
    with pytest.raises(SystemExit):
        testbed.main(args + ["--parts", "test"])
    testbed.main(args)
    record = json.loads((tmp_path / "out" / "val" / "smoke" / "search" / "z2.0" / "seed0.json").read_text())
    assert record["config"]["data"]["benchmark"] == "xsub_val"
    assert record["config"]["data"]["synthetic"]["axis_stretch"] == 0.25
    assert record["config"]["pretrain"]["dna_zscore"] == 2.0 and record["config"]["pretrain"]["epochs"] == 1
    assert record["base_overrides"]["pretrain.epochs"] == 200          # the design, under the tests' sizes
    assert not (tmp_path / "out" / "summary.json").exists()            # the summary reads the main suite


def test_which_variants_run():
    main = [v.name for v in testbed.experiments.SUITES["main"]]
    assert testbed.chosen_variants("main", None) == ["random_init", "moco3", "cmd"]     # what the summary reads
    assert testbed.chosen_variants("main", ["all"]) == main
    assert testbed.chosen_variants("main", ["i2md"]) == ["random_init", "moco3", "cmd", "i2md"]
    assert testbed.chosen_variants("ablation", None) == [v.name for v in testbed.experiments.SUITES["ablation"]]
    assert testbed.chosen_variants("search", ["z2.0"]) == ["z2.0"]
    with pytest.raises(ValueError, match="unknown variants \\['z9'\\]"):
        testbed.chosen_variants("search", ["z9"])


def test_the_book_profile_is_testbed_v3():
    """The book adopted testbed v3 whole: the design adds nothing to the book profile."""
    from i2md_lib.config import ExperimentConfig

    assert ExperimentConfig.for_profile("book", testbed.V3_BOOK) == ExperimentConfig.for_profile("book")


def test_design_v1_rebuilds_the_book_before_testbed_v3():
    """The suites the book showed before it moved to testbed v3 stay current under ``--design v1``
    (``results/book/testbed_v1``): version 1 stays reproducible, file by file."""
    from i2md_lib import experiments

    folder = ROOT / "results" / "book" / "testbed_v1"
    kept = {"main": (folder / "test", range(16)), "ablation": (folder / "test", (0, 1, 2)),
            "search": (folder / "val", (0, 1))}
    for suite, (root, seeds) in kept.items():
        assert not experiments.stale_runs(suite, "book", seeds, out_root=root, base=testbed.V1_BOOK), suite
    assert experiments.stale_runs("main", "book", (0,), out_root=folder / "test")   # not under the book profile
