"""The benchmark scripts still run against the library (tiny sizes; no timing is checked)."""
from __future__ import annotations

import json

import pytest

from benchmarks import bench_step


def test_bench_step_runs_every_implementation_and_reports(tmp_path):
    stem = tmp_path / "step"
    bench_step.main(["--sizes", "tiny", "--repeats", "1", "--warmup", "0", "--memory-steps", "1",
                     "--out", str(stem)])
    report = json.loads(stem.with_suffix(".json").read_text())
    row = report["times"]["tiny"]
    assert set(row["median_s"]) == set(bench_step.IMPLEMENTATIONS) == {"loop", "nn_gru", "per-frame"}
    assert set(row["speedup"]) == {"loop", "nn_gru"}
    # same weights, same inputs: the three encoders give the same loss
    assert max(row["max_rel_loss_diff"].values()) < 1e-5
    assert all(report["memory"]["tiny"][impl]["peak_mib"] > 0 for impl in bench_step.IMPLEMENTATIONS)
    markdown = stem.with_suffix(".md").read_text()
    assert "| tiny (smoke) | 2 x 16 |" in markdown and "loop peak / steps add" in markdown
    bench_step.main(["--render", str(stem.with_suffix(".json")), "--note", "A note added later."])
    assert markdown.replace("\n\nRelated", "\n\nA note added later.\n\nRelated") == stem.with_suffix(".md").read_text()


def test_bench_step_models_use_the_named_recurrence():
    cpu = bench_step.torch.device("cpu")
    for impl in bench_step.LIBRARY:
        model = bench_step.build("tiny", impl, cpu)
        assert {e.recurrence for e in [*model.encoder_q.values(), *model.encoder_k.values()]} == {impl}
    per_frame = bench_step.build("tiny", "per-frame", cpu)
    assert all(isinstance(e, bench_step.PerFrameBIGRU) for e in per_frame.encoder_q.values())


def test_bench_book_steps_runs_both_recurrences_on_the_same_function(tmp_path):
    from benchmarks import bench_book_steps
    from i2md_lib.models import cpu_kernels

    report = bench_book_steps.main(["--steps", "2", "--warmup", "1", "--methods", "cmd", "--profile", "smoke",
                         "--out", str(tmp_path / "book_steps")])
    (result,) = report["results"]
    assert result["auto_resolves_to"] == ("fused_c" if cpu_kernels.available() else "fused")
    assert result["speed_up"] > 0
    assert result["max_rel_loss_diff"] < 1e-4            # the same function, up to rounding
    assert "speed-up" in (tmp_path / "book_steps.md").read_text()
    with pytest.raises(ValueError, match="nothing to compare"):   # --compile is what tells the two apart
        bench_book_steps.measure("cmd", 1, 0, "smoke", "loop", "loop", compile_now=False)


def test_gpu_check_cpu_fallback_runs_every_check(tmp_path):
    """``make gpu-check`` without CUDA: the same checks at smoke scale on the CPU (gloo)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "tools" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    assert gpu_check.main(["--cpu", "--output", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "gpu.json").read_text())
    assert report["device"] == "cpu" and report["scale"] == "smoke"
    names = [r["check"] for r in report["checks"]]
    assert all(r["ok"] for r in report["checks"]) and len(names) == 11
    assert "torchrun, 1 process (gloo)" in names and "AMP bf16" in names
    assert "every recurrence path" in (tmp_path / "gpu.md").read_text()


def test_bench_stacked_seeds_times_the_same_function_both_ways(tmp_path):
    from benchmarks import bench_stacked_seeds

    report = bench_stacked_seeds.main(["--seeds-per-call", "1", "2", "--repeats", "1", "--warmup", "0",
                                       "--profile", "smoke", "--out", str(tmp_path / "stacked")])
    assert [r["seeds_per_call"] for r in report["results"]] == [1, 2]
    assert all(r["max_rel_loss_diff"] < 1e-5 and r["gain"] > 0 for r in report["results"])
    assert "| 2 |" in (tmp_path / "stacked.md").read_text()


def test_bench_commits_runs_two_trees_in_turn(tmp_path):
    """The same commit on both sides: two processes, the same weights and batches, the same losses."""
    from benchmarks import bench_commits

    report = bench_commits.main(["--base", "HEAD", "--steps", "2", "--warmup", "1", "--methods", "cmd",
                                 "--profile", "smoke", "--out", str(tmp_path / "vs_head")])
    (result,) = report["results"]
    assert result["max_rel_loss_diff"] < 1e-5 and result["speed_up"] > 0
    if not report["dirty"]:                     # the same code on both sides: the same numbers
        assert result["max_rel_loss_diff"] == 0.0 and result["paths"]["base"] == result["paths"]["head"]
    assert len(result["losses"]["base"]) == len(result["losses"]["head"]) == 3
    assert "speed-up" in (tmp_path / "vs_head.md").read_text()
    table = (tmp_path / "vs_head.md").read_text().split("| method")[1]
    bench_commits.main(["--render", str(tmp_path / "vs_head.json"), "--note", "A note added later."])
    rendered = (tmp_path / "vs_head.md").read_text()
    assert rendered.split("| method")[1] == table + "\nA note added later.\n"   # the numbers untouched
    assert not any("i2md_bench_" in line for line in bench_commits.git("worktree", "list").splitlines())
