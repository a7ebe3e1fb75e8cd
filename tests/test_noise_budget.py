"""tools/noise_budget.py at smoke size: structure, and agreement with the experiment suite."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import noise_budget  # noqa: E402

from i2md_lib import experiments  # noqa: E402


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("noise")
    return noise_budget.main(["--profile", "smoke", "--methods", "random_init", "moco3", "cmd",
                              "--seeds", "0", "1", "--eval-seeds", "0", "1", "--n-boot", "200",
                              "--runs-dir", str(tmp / "runs"), "--out", str(tmp / "out"),
                              "--allow-dirty"]), tmp


def test_report_files_and_components(report):
    rep, tmp = report
    on_disk = json.loads((tmp / "out" / "noise_budget.json").read_text())
    assert on_disk["analysis"] == json.loads(json.dumps(rep["analysis"]))
    assert "| cmd | knn_joint |" in (tmp / "out" / "noise_budget.md").read_text()
    assert rep["command"].endswith("--allow-dirty") and "commit" in rep and "hardware" in rep
    for method, metrics in rep["analysis"]["methods"].items():
        assert set(metrics) == set(noise_budget.METRICS)
        knn = metrics["knn_joint"]
        assert knn["eval_var"] == 0.0                   # k-NN has no evaluation randomness
        for entry in metrics.values():
            assert np.array(entry["values"]).shape == (2, 2)
            assert entry["test_var"] > 0 and entry["binomial_var"] > 0
            assert entry["total_var"] == pytest.approx(entry["pretrain_var"] + entry["eval_var"]
                                                       + entry["test_var"])
    paired = rep["analysis"]["paired"]
    assert (paired["a"], paired["b"]) == ("cmd", "moco3")
    a = np.array(rep["analysis"]["methods"]["cmd"]["linear_joint"]["values"])
    b = np.array(rep["analysis"]["methods"]["moco3"]["linear_joint"]["values"])
    assert np.allclose(paired["metrics"]["linear_joint"]["values"], a - b)


def test_eval_seed_equal_to_pretrain_seed_reproduces_the_suite(report):
    """With evaluation seed = pretraining seed the numbers are the suite's result file."""
    rep, tmp = report
    variant = experiments._variants("main", ["moco3"])[0]
    record = experiments.run_one("main", variant, 1, "smoke", out_root=tmp / "res", runs_root=tmp / "runs")
    rows = {(m["protocol"], m["modality"], m.get("fraction")): m for m in record["metrics"]}
    values = {k: np.array(v["values"])[1, 1] for k, v in rep["analysis"]["methods"]["moco3"].items()}
    assert values["knn_joint"] == pytest.approx(rows["knn", "joint", None]["top1@k=1"])
    assert values["linear_joint"] == pytest.approx(rows["linear_fast", "joint", None]["top1"])
    assert values["linear_ensemble"] == pytest.approx(rows["linear_fast", "ensemble", None]["top1"])
    assert values["semi1_joint"] == pytest.approx(rows["semi", "joint", 0.01]["top1_mean"])


def test_semi_draws_average_as_the_suite_does(report):
    """--semi-draws k: the semi-supervised number of evaluation seed e is the mean of draws
    e + 1000 i, as the suite averages ``eval.semi_seeds``."""
    _, tmp = report
    variant = experiments._variants("main", ["moco3"])[0]
    draws = {"eval.semi_seeds": (1, 1001)}
    record = experiments.run_one("main", variant, 1, "smoke", out_root=tmp / "res2", runs_root=tmp / "runs",
                                 overrides=draws)
    semi = [m for m in record["metrics"] if m["protocol"] == "semi" and m["fraction"] == 0.01][0]
    cfg, model = experiments.trained_model("main", "moco3", 1, "smoke", runs_root=tmp / "runs", progress=False)
    measured = noise_budget.measure_model(model, cfg.replace(draws), [1], semi_draws=2)
    assert measured["values"]["semi1_joint"][0] == pytest.approx(semi["top1_mean"])
    assert measured["correct"]["semi1_joint"].shape[0] == 1
    assert 100 * measured["correct"]["semi1_joint"][0].mean() == pytest.approx(semi["top1_mean"])


def test_the_tools_import_no_circle():
    """tools/testbed.py and tools/noise_budget.py share tools/run_records.py; neither is imported by
    the modules it imports (noise_budget reads testbed's designs, testbed no longer reads noise_budget)."""
    import ast
    from pathlib import Path

    tools = Path(__file__).resolve().parents[1] / "tools"
    local = {p.stem for p in tools.glob("*.py")}
    graph = {}
    for path in tools.glob("*.py"):
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module in local:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name in local}
        graph[path.stem] = found

    def reaches(start: str, goal: str, seen=()) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, (*seen, n))) for n in graph[start])

    assert not [name for name in graph if reaches(name, name)]
    assert "run_records" in graph["testbed"] and "noise_budget" not in graph["testbed"]
