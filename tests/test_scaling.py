"""Scaling up: full-scale checks and estimates, memory-mapped data, mixed precision."""
from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest
import torch

from i2md_lib import scaling
from i2md_lib.checkpoint import load_checkpoint
from i2md_lib.config import ExperimentConfig
from i2md_lib.data.datasets import PretrainDataset, load_arrays
from i2md_lib.data.store import SkeletonArrays, save_split, split_paths
from i2md_lib.eval.suite import evaluate_encoders
from i2md_lib.models.moco import build_model, encoders_for_eval
from i2md_lib.scaling import check_full_scale, epoch_estimate, full_scale_cell, full_scale_config
from i2md_lib.train import amp_dtype, pretrain, read_log


def clips(n: int, t: int = 300, seed: int = 0) -> SkeletonArrays:
    rng = np.random.default_rng(seed)
    data = rng.normal(scale=0.3, size=(n, 3, t, 25, 2)).astype(np.float32)
    return SkeletonArrays(data, rng.integers(20, 60, size=n), np.arange(n) % 4, [f"c{i}" for i in range(n)])


@pytest.fixture(autouse=True)
def no_benchmark_files(monkeypatch, tmp_path_factory):
    """The checks below must not depend on what benchmarks/results/ holds on this machine."""
    monkeypatch.setattr(scaling, "BENCHMARK_RESULTS", tmp_path_factory.mktemp("no_benchmarks"))


@pytest.fixture
def ntu_root(tmp_path):
    """A prepared-looking NTU-60 folder: xsub/{train,val} in the CMD layout, T = 300."""
    save_split(tmp_path / "xsub", "train", clips(48))
    save_split(tmp_path / "xsub", "val", clips(16, seed=1))
    return tmp_path


def full(**overrides) -> ExperimentConfig:
    return ExperimentConfig.for_profile("full", overrides)


TINY_MODEL = {"encoder.hidden_size": 8, "encoder.num_layers": 1, "encoder.proj_hidden": 16,
              "encoder.out_dim": 8, "pretrain.queue_size": 32, "pretrain.cmd_topk": 8,
              "pretrain.batch_size": 16, "pretrain.epochs": 1, "pretrain.lr_milestones": (),
              "data.window": 8, "data.max_frames": 64,
              "eval.epochs": 1, "eval.lr_milestones": (1,), "eval.eval_every": 1, "pretrain.device": "cpu"}


# -- check_full_scale ---------------------------------------------------------------------
def test_full_scale_problems_name_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(scaling, "_cuda_available", lambda: False)
    monkeypatch.delenv("I2MD_DEVICE", raising=False)
    problems = check_full_scale(full())
    assert len(problems) == 2
    assert "synthetic" in problems[0] and "I2MD_DATA_ROOT" in problems[0]
    assert "no CUDA GPU" in problems[1] and "pretrain.device=cpu" in problems[1]
    assert check_full_scale(full(**{"pretrain.device": "cpu"}))[1:] == []    # the CPU, on purpose

    (no_root,) = check_full_scale(full(**{"data.dataset": "ntu60", "pretrain.device": "cpu"}))
    assert "prepare-ntu RAW_DIR OUT_DIR --version ntu60" in no_root and "I2MD_DATA_ROOT" in no_root
    (missing,) = check_full_scale(full(**{"data.dataset": "ntu120", "data.benchmark": "xset",
                                          "data.root": str(tmp_path), "pretrain.device": "cpu"}))
    assert str(tmp_path / "xset") in missing and "--benchmarks xset" in missing
    fp16 = check_full_scale(full(**{"pretrain.amp": "fp16", "pretrain.device": "cpu"}), world_size=3)
    assert any("fp16" in p and "CUDA" in p for p in fp16)
    assert any("batch_size 64" in p and "3 processes" in p for p in fp16)


def test_a_prepared_dataset_passes_and_a_damaged_one_is_named(ntu_root):
    cfg = full(**{"data.dataset": "ntu60", "data.root": str(ntu_root), "pretrain.device": "cpu"})
    assert check_full_scale(cfg, world_size=8) == []
    paths = split_paths(ntu_root / "xsub", "val")
    paths["data"].write_bytes(b"garbage")
    paths["label"].unlink()
    problems = check_full_scale(cfg)
    assert problems == [f"{ntu_root / 'xsub'}: the val split lacks val_label.pkl; re-run "
                        f"`python -m i2md_lib prepare-ntu RAW_DIR OUT_DIR --version ntu60`"]
    save_split(ntu_root / "xsub", "val", clips(4))
    paths["data"].write_bytes(b"garbage")
    (bad,) = check_full_scale(cfg)
    assert str(paths["data"]) in bad and "not a readable .npy" in bad


def test_full_scale_config_reads_the_environment(monkeypatch):
    monkeypatch.setenv("I2MD_DATASET", "ntu120")
    monkeypatch.setenv("I2MD_BENCHMARK", "xset")
    monkeypatch.setenv("I2MD_DATA_ROOT", "/data/ntu120")
    cfg = full_scale_config({"pretrain.method": "i2md"}, "full")
    assert (cfg.profile, cfg.data.dataset, cfg.data.benchmark, cfg.data.root) == ("full", "ntu120", "xset", "/data/ntu120")
    assert cfg.encoder.hidden_size == 1024 and cfg.pretrain.method == "i2md"
    tiny = full_scale_config({"pretrain.method": "i2md"}, "book")
    assert tiny == ExperimentConfig.for_profile("smoke", {"pretrain.method": "i2md"})


# -- estimates from the benchmark files --------------------------------------------------
def test_epoch_estimate_uses_the_measured_step(tmp_path, monkeypatch):
    cfg = full(**{"data.dataset": "ntu60"})
    row = {"hidden": 1024, "layers": 3, "window": 64, "batch": 64, "queue": 16384,
           "median_s": {"loop": 3.0, "nn_gru": 2.5, "per-frame": 9.0}}
    machine = {"device": "cpu", "cpu": "test CPU", "torch_threads": 1}
    (tmp_path / "step.json").write_text(json.dumps({
        "machine": machine, "times": {"classroom": {**row, "hidden": 64}, "paper": row},
        "memory": {"paper": {"loop": {"peak_mib": 2500.0}, "nn_gru": {"peak_mib": 3000.0}}}}))
    (tmp_path / "loading.json").write_text(json.dumps(
        {"summary": {"PretrainDataset, 0 workers": {"clips_per_s": 500.0}}}))
    est = epoch_estimate(cfg, folder=tmp_path)
    assert est["clips"] == 40_091 and est["clips_source"] == "reported in the literature"
    assert est["steps_per_epoch"] == 626                          # 40091 // 64, drop_last
    assert est["hours_per_epoch"] == pytest.approx(626 * 2.5 / 3600)
    assert est["hours_total"] == pytest.approx(626 * 2.5 * 451 / 3600)
    assert est["peak_memory_mib"] == 3000.0 and est["loading_seconds_per_epoch"] == pytest.approx(40_091 / 500)
    assert epoch_estimate(cfg, num_clips=640, folder=tmp_path)["steps_per_epoch"] == 10
    loop = cfg.replace({"encoder.recurrence": "loop"})     # the time measured for that recurrence
    assert epoch_estimate(loop, folder=tmp_path)["seconds_per_step"] == 3.0
    fused = cfg.replace({"encoder.recurrence": "fused"})   # not timed by bench_step: loop's time, an upper bound
    assert scaling.measured_recurrence(fused) == "loop" and epoch_estimate(fused, folder=tmp_path)["seconds_per_step"] == 3.0
    fused_c = cfg.replace({"encoder.recurrence": "fused_c"})
    assert scaling.measured_recurrence(fused_c) == "loop"
    assert epoch_estimate(full(**{"pretrain.batch_size": 32}), folder=tmp_path) is None   # size not measured
    # the same files drive the checks: the measured CPU cost of the missing GPU, and the RAM a step needs
    monkeypatch.setattr(scaling, "_total_ram_mib", lambda: 2048.0)
    monkeypatch.setattr(scaling, "_cuda_available", lambda: False)
    monkeypatch.delenv("I2MD_DEVICE", raising=False)
    problems = check_full_scale(cfg, benchmarks=tmp_path)
    assert any(f"about {626 * 2.5 / 3600:.1f} h per epoch" in p for p in problems)
    assert any("needs about 2.9 GiB (measured) but this machine has 2.0 GiB" in p for p in problems)


# -- the full-scale cell --------------------------------------------------------------------
def test_full_scale_cell_explains_instead_of_failing(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("I2MD_PROFILE", "full")
    monkeypatch.delenv("I2MD_DATA_ROOT", raising=False)
    monkeypatch.delenv("I2MD_DATASET", raising=False)
    out = full_scale_cell("chX", {"pretrain.method": "cmd"}, runs_root=tmp_path)
    text = capsys.readouterr().out
    assert not out["ran"] and out["results"] == [] and list(tmp_path.iterdir()) == []
    assert "cannot start" in text and "prepare-ntu" in text
    assert "torchrun --nproc_per_node=8 -m i2md_lib pretrain --profile full" in text
    assert "--set pretrain.method=cmd" in text and f"--run-dir {tmp_path / 'full' / 'chX'}" in text


def test_full_scale_cell_trains_on_a_prepared_dataset(monkeypatch, ntu_root, tmp_path, capsys):
    """The real-data path end to end (memory-mapped split, pretrain, evaluate), with a tiny model."""
    monkeypatch.setenv("I2MD_PROFILE", "full")
    monkeypatch.setenv("I2MD_DATA_ROOT", str(ntu_root))
    out = full_scale_cell("chY", {"pretrain.method": "cmd", **TINY_MODEL}, protocols=("knn",),
                          progress=False, runs_root=tmp_path / "runs")
    assert out["ran"] and out["problems"] == [] and out["run_dir"] == str(tmp_path / "runs" / "full" / "chY")
    assert len(out["history"]) == 48 // 16
    knn = {r["modality"]: r for r in out["results"]}
    assert set(knn) == {"joint", "motion", "bone", "ensemble"} and knn["joint"]["num_gallery"] == 48
    assert "knn (3-stream ensemble): top-1" in capsys.readouterr().out   # a real run reports its result


def test_the_stand_in_says_what_it_is_and_prints_no_accuracy(monkeypatch, capsys, tmp_path):
    """Under a small profile the cell runs a smoke-scale stand-in; a 'top-1' there would read as a result."""
    monkeypatch.setenv("I2MD_PROFILE", "smoke")
    out = full_scale_cell("chZ", {"pretrain.method": "cmd", **TINY_MODEL}, protocols=("knn",),
                          runs_root=tmp_path)
    text = capsys.readouterr().out
    assert out["ran"] and out["run_dir"] is None and out["results"]      # it did run and evaluate
    assert "smoke-scale stand-in" in text and "not results" in text
    assert "top-1" not in text and "%" not in text, text


# -- memory-mapped data --------------------------------------------------------------------
def test_training_path_reads_the_split_through_a_memory_map(ntu_root, tmp_path):
    cfg = ExperimentConfig.for_profile("full", {"data.dataset": "ntu60", "data.root": str(ntu_root),
                                                **TINY_MODEL})
    arrays = load_arrays(cfg.data, "train")
    assert isinstance(arrays.data, np.memmap) and str(arrays.data.filename).endswith("train_data_joint.npy")
    split_bytes = arrays.data.nbytes                               # 48 x 180 kB
    pretrain(cfg, tmp_path / "warm-up", progress=False, max_steps=1)   # lazy imports, outside the trace
    tracemalloc.start()
    try:
        pretrain(cfg, tmp_path / "run", progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < split_bytes / 4, (peak, split_bytes)             # never copied whole
    assert len(read_log(tmp_path / "run" / "log.csv")) == 3


def test_evaluation_path_reads_the_split_through_a_memory_map(ntu_root):
    cfg = ExperimentConfig.for_profile("full", {"data.dataset": "ntu60", "data.root": str(ntu_root),
                                                **TINY_MODEL})
    torch.manual_seed(0)
    encoders = encoders_for_eval(build_model(cfg))
    split_bytes = load_arrays(cfg.data, "train").data.nbytes
    evaluate_encoders(encoders, cfg, ("knn", "linear"), augment=False, device="cpu", progress=False)  # warm-up
    tracemalloc.start()
    try:   # kNN and the linear probe on centre-crop features: clips are read one at a time
        results = evaluate_encoders(encoders, cfg, ("knn", "linear"), augment=False, device="cpu",
                                    progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < split_bytes / 4, (peak, split_bytes)
    assert results["knn"]["joint"].num_gallery == 48


def test_dataset_item_reads_only_its_clip(ntu_root):
    arrays = load_arrays(ExperimentConfig.for_profile("full", {"data.dataset": "ntu60",
                                                               "data.root": str(ntu_root)}).data, "train")
    dataset = PretrainDataset(arrays, ExperimentConfig().augment, window=64, max_frames=300)
    dataset[4]                                                      # warm-up
    tracemalloc.start()
    try:
        dataset[5]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    one_clip = arrays.data[0].nbytes                                # 180 kB
    assert peak < 2 * one_clip, (peak, one_clip)


# -- mixed precision -------------------------------------------------------------------------
def amp_cfg(amp: str) -> ExperimentConfig:
    return ExperimentConfig.for_profile("smoke", {"pretrain.method": "cmd", "pretrain.amp": amp,
                                                  "pretrain.epochs": 3, "pretrain.queue_size": 40,
                                                  "pretrain.cmd_topk": 20, "pretrain.device": "cpu"})


def test_bf16_on_the_cpu_trains_with_float32_losses(tmp_path):
    data = clips(40, t=48)
    fp32 = pretrain(amp_cfg("none"), tmp_path / "fp32", arrays=data, progress=False, max_steps=2)
    bf16 = pretrain(amp_cfg("bf16"), tmp_path / "bf16", arrays=data, progress=False, max_steps=2)
    for a, b in zip(bf16, fp32):
        assert np.isfinite(a["total"])
        assert a["total"] == pytest.approx(b["total"], rel=0.05)          # same run, lower precision
        assert a["total"] != b["total"]                                   # ... and bf16 did change numbers
    state = load_checkpoint(tmp_path / "bf16" / "checkpoint.pt")
    assert state["scaler"] == {}                                          # no loss scaling for bf16
    assert all(v.dtype == torch.float32 for k, v in state["model"].items() if v.is_floating_point())


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")   # all epoch-1 steps skipped
def test_fp16_scaler_state_is_checkpointed_and_resumed(tmp_path, monkeypatch):
    """fp16 is CUDA-only in pretrain; on the CPU we force it to test the GradScaler bookkeeping."""
    with pytest.raises(ValueError, match="fp16.*needs a CUDA device"):
        amp_dtype("fp16", torch.device("cpu"))
    monkeypatch.setattr("i2md_lib.train.amp_dtype", lambda amp, device: torch.float16)
    data, cfg = clips(40, t=48), amp_cfg("fp16")
    straight = pretrain(cfg, tmp_path / "a", arrays=data, progress=False)
    pretrain(cfg, tmp_path / "b", arrays=data, progress=False, max_steps=4)
    scaler = load_checkpoint(tmp_path / "b" / "checkpoint.pt")["scaler"]
    # the live scaler's state: steps whose fp16 gradients overflowed halved the initial 2**16
    assert scaler["scale"] < 2.0 ** 16
    resumed = pretrain(cfg, tmp_path / "b", arrays=data, progress=False)
    assert resumed == straight            # a scaler restarted at 2**16 would skip other steps
    assert (load_checkpoint(tmp_path / "b" / "checkpoint.pt")["scaler"]
            == load_checkpoint(tmp_path / "a" / "checkpoint.pt")["scaler"])


def test_step_floor_rows_divide_the_arithmetic_by_the_measured_speed():
    report = {"machine": {"gemm_gflops": 100.0},
              "times": {"paper": {"gru_gflop": 4000.0,
                                  "median_s": {"loop": 50.0, "nn_gru": 55.0, "per-frame": 60.0},
                                  "speedup": {"loop": 1.2, "nn_gru": 60 / 55}}}}
    (row,) = scaling.step_floor_rows(report, "1 thread")
    assert row["run"] == "1 thread" and row["size"] == "paper" and row["GRU TFLOP/step"] == 4.0
    assert row["floor s/step"] == 40.0 and row["loop s/step"] == 50.0 and row["per-frame s/step"] == 60.0
    assert row["speed-up loop"] == 1.2 and row["speed-up nn_gru"] == 1.09 and row["largest possible speed-up"] == 1.5
