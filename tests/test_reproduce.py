"""Re-running a result file's run: the same numbers come back, and a changed number is caught."""
from __future__ import annotations

import json

import pytest

from i2md_lib import experiments, reproduce
from i2md_lib.cli import main


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory):
    root = tmp_path_factory.mktemp("reproduce")
    experiments.run_suite("main", "smoke", seeds=[0], variants=["random_init", "moco3"],
                          out_root=root / "results", runs_root=root / "runs")
    return {v: experiments.result_path("smoke", "main", v, 0, root / "results") for v in ("random_init", "moco3")}


def test_a_result_file_comes_back_bit_for_bit(smoke_results, tmp_path):
    report = reproduce.reproduce(smoke_results["moco3"], tmp_path / "runs")
    assert report["identical"], reproduce.summary_lines(report)
    names = {r["name"] for r in report["metrics"]}
    assert {"knn joint top1@k=1", "linear_fast ensemble top1", "semi joint 0.01 top1_mean"} <= names
    assert {r["name"] for r in report["final_log_row"]} >= {"step", "nce_motion", "total"}
    assert report["protocols"] == ["knn", "linear", "semi"]
    assert report["now"]["hardware"]["cpu_capability"] == report["then"]["hardware"]["cpu_capability"]
    assert list((tmp_path / "runs").iterdir()) == []          # the fresh run folder is removed
    untrained = reproduce.reproduce(smoke_results["random_init"])
    assert untrained["identical"] and untrained["final_log_row"] == []


def test_a_changed_number_is_reported(smoke_results, tmp_path, capsys):
    record = json.loads(smoke_results["moco3"].read_text())
    knn_joint = next(r for r in record["metrics"] if r["protocol"] == "knn" and r["modality"] == "joint")
    knn_joint["top1@k=1"] += 2.5
    record["final_log_row"]["nce_motion"] += 0.125
    changed = tmp_path / "seed0.json"
    changed.write_text(json.dumps(record))
    output = tmp_path / "check" / "reproduction.json"
    assert main(["reproduce", str(changed), "--output", str(output)]) == 1
    printed = capsys.readouterr().out
    assert "2 of" in printed and "knn joint top1@k=1" in printed and "(-2.5000)" in printed
    report = json.loads(output.read_text())
    assert not report["identical"]
    diff = {r["name"]: r["difference"] for r in report["metrics"] + report["final_log_row"] if r["difference"] != 0}
    assert diff == pytest.approx({"knn joint top1@k=1": -2.5, "nce_motion": -0.125})
    assert report["command"].startswith("python -m i2md_lib")


def test_a_config_this_code_builds_differently_is_refused(smoke_results, tmp_path):
    record = json.loads(smoke_results["moco3"].read_text())
    record["config"]["pretrain"]["lr"] = 0.5                 # the digest still says the old config
    changed = tmp_path / "seed0.json"
    changed.write_text(json.dumps(record))
    with pytest.raises(ValueError, match="seed0.json.*digest"):
        reproduce.reproduce(changed)
    record["config"]["pretrain"]["no_such_key"] = 1
    changed.write_text(json.dumps(record))
    with pytest.raises(ValueError, match="seed0.json.*cannot be rebuilt"):
        reproduce.reproduce(changed)


def test_a_result_file_from_before_a_config_field_existed_is_repeated(smoke_results, tmp_path):
    """Fields added since take the values such runs used (``config.LEGACY_DEFAULTS``): the run
    is repeated, not refused because today's code would write a longer config."""
    from i2md_lib.config import LEGACY_DEFAULTS, config_digest

    record = json.loads(smoke_results["moco3"].read_text())
    section, key = next(iter(LEGACY_DEFAULTS)).split(".")
    del record["config"][section][key]                       # as an older library wrote it
    record["config_digest"] = config_digest(record["config"])
    older = tmp_path / "seed0.json"
    older.write_text(json.dumps(record))
    assert reproduce.reproduce(older)["identical"]


def test_compare_and_identical():
    rows = reproduce.compare({"a": 1.0, "b": float("nan")}, {"a": 1.0, "b": float("nan"), "c": 2.0})
    assert [r["name"] for r in rows] == ["a", "b", "c"]
    assert reproduce.identical(rows[:2]) and not reproduce.identical(rows)


def test_hardware_names_the_kernels(monkeypatch):
    for name in experiments.KERNEL_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    info = experiments.hardware()
    assert info["cpu_model"] and "kernel_env" not in info
    import torch
    assert info["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    monkeypatch.setenv("MKL_CBWR", "COMPATIBLE")
    assert experiments.hardware()["kernel_env"] == {"MKL_CBWR": "COMPATIBLE"}


def test_reproduction_table(smoke_results):
    same = reproduce.reproduce(smoke_results["random_init"])
    table = reproduce.reproduction_table([same])
    assert table.loc[0, "result file"] == "random_init/seed0.json"
    assert table.loc[0, "values equal"] == f"{len(same['metrics'])} of {len(same['metrics'])}"
    assert table.loc[0, "knn joint top1@k=1, then"] == table.loc[0, "knn joint top1@k=1, now"]
    assert table.loc[0, "made with"] == table.loc[0, "re-run with"] != "not recorded"


def test_the_committed_reproduction_reports_are_sound():
    from i2md_lib.config import REPO_ROOT

    reports = sorted((REPO_ROOT / "results" / "book" / "reproduce").glob("*.json"))
    assert reports, "chapter 6 shows results/book/reproduce"
    for path in reports:
        rep = json.loads(path.read_text())
        assert (REPO_ROOT / rep["result_file"]).is_file(), path.name
        assert rep["now"]["dirty"] is False and rep["now"]["hardware"]["cpu_capability"], path.name
        assert rep["identical"] == reproduce.identical(rep["metrics"] + rep["final_log_row"]), path.name
        then = experiments.load_record(REPO_ROOT / rep["result_file"])
        assert reproduce.accuracies(then["metrics"]) == {r["name"]: r["then"] for r in rep["metrics"]}, path.name


def test_reproduction_table_shows_the_accuracies_asked_for(smoke_results):
    untrained = reproduce.reproduce(smoke_results["random_init"])
    table = reproduce.reproduction_table([untrained], ["knn motion top1@k=1", "no such accuracy"])
    assert table.loc[0, "knn motion top1@k=1, then"] == table.loc[0, "knn motion top1@k=1, now"]
    assert table[["no such accuracy, then", "no such accuracy, now"]].isna().all(axis=None)


def test_a_result_file_from_before_the_fused_path_is_repeated_on_the_loop(tmp_path, monkeypatch):
    """Files made before ``fused`` record no path; ``auto`` then took ``loop`` on a CPU at small
    sizes, so the re-run takes ``loop`` too and the numbers come back bit for bit."""
    from i2md_lib.models import encoders

    today = encoders.resolve_recurrence
    monkeypatch.setattr(encoders, "resolve_recurrence",           # the rule of the older commits
                        lambda r, h, d="cpu": "loop" if today(r, h, d) in ("fused", "fused_c") else today(r, h, d))
    experiments.run_suite("main", "smoke", seeds=[0], variants=["moco3"], out_root=tmp_path / "results",
                          runs_root=tmp_path / "runs")
    monkeypatch.setattr(encoders, "resolve_recurrence", today)
    path = experiments.result_path("smoke", "main", "moco3", 0, tmp_path / "results")
    record = json.loads(path.read_text())
    assert record["recurrence_path"] == "loop" and record["config"]["encoder"]["recurrence"] == "auto"
    del record["recurrence_path"]                                 # as an older library wrote it
    path.write_text(json.dumps(record))
    assert reproduce.recorded_recurrence_path(record) == "loop"
    report = reproduce.reproduce(path)
    assert report["recurrence_path"] == "loop" and report["identical"], reproduce.summary_lines(report)
    assert "both on the loop path" in reproduce.summary_lines(report)[0]
    assert report["recurrence_path_now"] == "loop"
    elsewhere = {**report, "recurrence_path": "fused_c", "recurrence_path_now": "fused", "identical": False}
    assert ("made on the fused_c path and re-run on the fused path (this machine lacks fused_c"
            in reproduce.summary_lines(elsewhere)[0])
    on_gpu = {**record, "hardware": {**record["hardware"], "cuda": "some GPU"}}
    assert reproduce.recorded_recurrence_path(on_gpu) == "nn_gru"
    assert reproduce.recorded_recurrence_path({"config": {"encoder": {"kind": "bigru"}}}) is None
