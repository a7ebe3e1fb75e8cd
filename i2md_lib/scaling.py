"""From the classroom to the paper: can a full-scale run start here, and what will it cost?

* :func:`check_full_scale` ``(cfg) -> list[str]`` -- everything that stops ``cfg`` from
  running as the paper did on this machine (no prepared dataset, no GPU, a batch that
  does not split over the processes, ...), each problem with what to do about it.
* :func:`epoch_estimate` -- time and memory per epoch, computed from the benchmark
  result files in ``benchmarks/results/`` (``bench_step.py``, ``bench_loading.py``).
* :func:`full_scale_cell` -- the *full-scale cell* of a chapter, in two lines::

      from i2md_lib.scaling import full_scale_cell
      full_scale_cell("ch03_cmd", {"pretrain.method": "cmd"})

  With ``I2MD_PROFILE=full`` it pretrains and evaluates with the paper's settings on
  the real dataset (``$I2MD_DATASET``, default ``ntu60``, prepared under
  ``$I2MD_DATA_ROOT``) in ``runs/full/<name>`` (re-running the cell resumes). Under any
  other profile it lists what a full-scale run would still need here and runs a tiny
  stand-in (``smoke`` sizes, synthetic data) in a temporary folder, in seconds.
  Where something is missing it says what, instead of failing deep inside training.

This module does not import :mod:`i2md_lib.experiments`.
"""
from __future__ import annotations

import json
import os
import shlex
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .config import (BENCHMARK_ENV, DATA_ROOT_ENV, DATASET_ENV, DEVICE_ENV, REPO_ROOT, ExperimentConfig,
                     active_profile, launch_environment)
from .config import runs_root as config_runs_root

BENCHMARK_RESULTS = REPO_ROOT / "benchmarks" / "results"

#: (train, test) clips of the NTU benchmarks after dropping the samples with missing
#: skeletons: the counts widely reported in the literature (not measured here).
REPORTED_SPLIT_SIZES: dict[tuple[str, str], tuple[int, int]] = {
    ("ntu60", "xsub"): (40_091, 16_487),
    ("ntu60", "xview"): (37_646, 18_932),
    ("ntu120", "xsub"): (63_026, 50_919),
    ("ntu120", "xset"): (54_468, 59_477),
}

_PREPARE = {"ntu60": "prepare-ntu RAW_DIR OUT_DIR --version ntu60",
            "ntu120": "prepare-ntu RAW_DIR OUT_DIR --version ntu120",
            "pku1": "prepare-pku PKU_ROOT OUT_DIR --version pku1",
            "pku2": "prepare-pku PKU_ROOT OUT_DIR --version pku2"}


# ----------------------------------------------------------------------------
# Configs
# ----------------------------------------------------------------------------


def full_scale_config(overrides: Mapping[str, Any] | None = None,
                      profile: str | None = None) -> ExperimentConfig:
    """The config of a full-scale cell under ``profile`` (default: the active one).

    ``full``: the paper's settings on ``$I2MD_DATASET`` (default ``ntu60``),
    ``$I2MD_BENCHMARK`` (default ``xsub``) under ``$I2MD_DATA_ROOT``. Any other profile:
    the ``smoke`` config (a stand-in that runs in seconds). ``overrides`` apply last.
    """
    if active_profile(profile) != "full":
        return ExperimentConfig.for_profile("smoke", overrides)
    data = {"data.dataset": os.environ.get(DATASET_ENV) or "ntu60",
            "data.benchmark": os.environ.get(BENCHMARK_ENV) or "xsub",
            "data.root": os.environ.get(DATA_ROOT_ENV) or None}
    return ExperimentConfig.for_profile("full", {**data, **dict(overrides or {})})


# ----------------------------------------------------------------------------
# What is missing
# ----------------------------------------------------------------------------


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _world_size() -> int:
    try:
        return max(1, launch_environment()["world_size"])
    except ValueError:
        return 1


def check_data(cfg: ExperimentConfig) -> list[str]:
    """Problems with ``cfg.data``: an unprepared real dataset, missing or unreadable split files."""
    from .data.datasets import BENCHMARKS, _REFERENCE_FOLDER_ALIASES
    from .data.store import split_paths

    d, problems = cfg.data, []
    if d.dataset not in BENCHMARKS:
        return [f"data.dataset {d.dataset!r} is unknown; choose one of {', '.join(BENCHMARKS)}"]
    if d.benchmark not in BENCHMARKS[d.dataset]:
        return [f"data.benchmark {d.benchmark!r} does not exist for {d.dataset}; "
                f"choose one of {', '.join(BENCHMARKS[d.dataset])}"]
    if d.dataset == "synthetic":
        if cfg.profile == "full":
            problems.append(
                f"data.dataset is 'synthetic': the paper trains on NTU RGB+D / PKU-MMD. Set "
                f"{DATASET_ENV}=ntu60 (or data.dataset) and {DATA_ROOT_ENV} (data.root) to a prepared folder")
        return problems
    prepare = f"python -m i2md_lib {_PREPARE[d.dataset]}"
    if not d.root:
        return [f"no dataset folder: data.root is not set for {d.dataset}. Prepare the raw files with "
                f"`{prepare}`, then set {DATA_ROOT_ENV}=OUT_DIR (or --set data.root=OUT_DIR)"]
    root = Path(d.root).expanduser()
    if not root.is_dir():
        return [f"data.root {root} does not exist; create it with `{prepare}`"]
    folder = root / d.benchmark
    alias = _REFERENCE_FOLDER_ALIASES.get(d.benchmark)
    if not folder.is_dir() and alias and (root / alias).is_dir():
        folder = root / alias
    if not folder.is_dir():
        return [f"{folder} is missing: {root} holds no {d.benchmark!r} benchmark of {d.dataset}; "
                f"run `{prepare} --benchmarks {d.benchmark}`"]
    for part in ("train", "val"):
        paths = split_paths(folder, part)
        missing = [p.name for p in paths.values() if not p.is_file()]
        if missing:
            problems.append(f"{folder}: the {part} split lacks {', '.join(missing)}; re-run `{prepare}`")
            continue
        try:
            shape = np.load(paths["data"], mmap_mode="r").shape      # reads the header only
        except (ValueError, OSError) as e:
            problems.append(f"{paths['data']}: not a readable .npy array ({e})")
            continue
        if len(shape) != 5 or shape[1] != 3 or shape[3] != 25:
            problems.append(f"{paths['data']}: shape {shape} is not (N, 3, T, 25, M)")
    return problems


def check_full_scale(cfg: ExperimentConfig, world_size: int | None = None,
                     benchmarks: str | Path | None = None) -> list[str]:
    """Everything that stops ``cfg`` from running at full scale here; ``[]`` means go.

    Checks the dataset (:func:`check_data`), the device (a CUDA GPU unless
    ``pretrain.device`` asks for the CPU on purpose), mixed precision, the split of the
    global batch over ``world_size`` processes (default ``$WORLD_SIZE``), the queue,
    and the memory a step needs (from ``benchmarks/results/step.json``, when measured
    at this size) against this machine's RAM. Each problem says what to do.
    ``benchmarks``: the folder of benchmark results (default ``benchmarks/results/``).
    """
    p, problems = cfg.pretrain, check_data(cfg)
    world = world_size or _world_size()
    cuda = _cuda_available()
    wants = (p.device or os.environ.get(DEVICE_ENV) or ("cuda" if cuda else "")).split(":")[0]
    if wants == "cuda" and not cuda:
        problems.append(f"pretrain.device={p.device!r} asks for CUDA, but torch sees no CUDA GPU here")
    elif wants == "" and cfg.profile == "full":
        estimate = epoch_estimate(cfg, folder=benchmarks)
        cost = (f" (on the CPU of benchmarks/results/step.md: about {estimate['hours_per_epoch']:.1f} h "
                f"per epoch, {estimate['hours_total'] / 24:.0f} days for {p.epochs} epochs)" if estimate else "")
        problems.append(f"no CUDA GPU: the paper's model is meant for a GPU{cost}. Run on a GPU machine, "
                        f"or set pretrain.device=cpu to train on the CPU anyway")
    if p.amp == "fp16" and not (cuda and wants != "cpu"):
        problems.append("pretrain.amp='fp16' needs CUDA; use 'bf16' or 'none' on the CPU")
    if p.amp not in ("none", "bf16", "fp16"):
        problems.append(f"pretrain.amp must be none, bf16 or fp16, got {p.amp!r}")
    if p.batch_size % world:
        problems.append(f"pretrain.batch_size {p.batch_size} (the global batch) does not split over "
                        f"{world} processes; use a multiple of {world}")
    if p.batch_size > p.queue_size:
        problems.append(f"pretrain.queue_size {p.queue_size} is smaller than one batch ({p.batch_size})")
    need = step_memory_mib(cfg, benchmarks)
    if need is not None and wants != "cuda":
        have = _total_ram_mib()
        if have is not None and need > have:
            problems.append(f"a training step needs about {need / 1024:.1f} GiB (measured) but this "
                            f"machine has {have / 1024:.1f} GiB of RAM")
    return problems


def _total_ram_mib() -> float | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
    except (ValueError, OSError, AttributeError):
        return None


# ----------------------------------------------------------------------------
# What it costs (from the benchmark files)
# ----------------------------------------------------------------------------


def load_benchmark(name: str, folder: str | Path | None = None) -> dict[str, Any] | None:
    """``<folder>/<name>.json`` (``step``, ``loading``, ``preprocess``), or ``None`` if absent.

    ``folder`` defaults to :data:`BENCHMARK_RESULTS` (``benchmarks/results/``).
    """
    path = Path(folder or BENCHMARK_RESULTS) / f"{name}.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not a valid benchmark result file ({e})") from e


def _step_result(cfg: ExperimentConfig, folder: str | Path | None) -> dict[str, Any] | None:
    """The ``bench_step`` timing measured at ``cfg``'s encoder, window, batch and queue."""
    report = load_benchmark("step", folder)
    if not report:
        return None
    e, p = cfg.encoder, cfg.pretrain
    for name, r in report.get("times", {}).items():
        if (r["hidden"], r["layers"], r["window"], r["batch"], r["queue"]) == (
                e.hidden_size, e.num_layers, cfg.data.window, p.batch_size, p.queue_size):
            return {"name": name, **r, "memory": report.get("memory", {}).get(name),
                    "machine": report["machine"]}
    return None


#: Paths that ``benchmarks/bench_step.py`` does not time, and the timed path each stands in
#: for: ``fused`` and ``fused_c`` (later than ``step.json``) train faster per book step than
#: ``loop`` (``benchmarks/results/book_steps_fused.md``, ``book_steps_fused_c.md``), so
#: ``loop``'s time is an upper bound.
UNTIMED_PATH_STANDS_IN = {"fused": "loop", "fused_c": "loop", "grouped": "loop"}


def measured_recurrence(cfg: ExperimentConfig) -> str:
    """The benchmark column of ``cfg``'s recurrence on a CPU (``auto`` resolved by size; a path
    ``bench_step.py`` does not time reads the column of :data:`UNTIMED_PATH_STANDS_IN`)."""
    from .models.encoders import resolve_recurrence

    path = resolve_recurrence(cfg.encoder.recurrence, cfg.encoder.hidden_size, "cpu")
    return UNTIMED_PATH_STANDS_IN.get(path, path)


def step_memory_mib(cfg: ExperimentConfig, folder: str | Path | None = None) -> float | None:
    """Peak memory (MiB) of a training step at ``cfg``'s size, as measured (CPU RSS), or ``None``."""
    r = _step_result(cfg, folder)
    return r["memory"][measured_recurrence(cfg)]["peak_mib"] if r and r.get("memory") else None


def step_floor_rows(report: Mapping[str, Any], label: str) -> list[dict[str, Any]]:
    """Rows comparing a ``bench_step`` report with its arithmetic floor, one per size.

    The floor is the GRU matrix products of a step (``gru_gflop``) at the measured speed
    of one large matrix product (``machine.gemm_gflops``); per-frame time / floor is the
    largest speed-up over the per-frame loop that any implementation of the same
    arithmetic could reach on that machine.
    """
    peak = report["machine"]["gemm_gflops"]
    rows = []
    for size, r in report["times"].items():
        flop, t = r["gru_gflop"], r["median_s"]
        rows.append({"run": label, "size": size, "GRU TFLOP/step": round(flop / 1000, 3),
                     "floor s/step": round(flop / peak, 3),
                     **{f"{impl} s/step": round(sec, 3) for impl, sec in t.items()},
                     **{f"speed-up {impl}": round(up, 2) for impl, up in r["speedup"].items()},
                     "largest possible speed-up": round(t["per-frame"] * peak / flop, 2)})
    return rows


def train_clips(cfg: ExperimentConfig) -> tuple[int | None, str]:
    """Training clips of ``cfg.data`` and where the number comes from."""
    d = cfg.data
    if d.dataset == "synthetic":
        if cfg.profile == "full":     # not generated at this size unless asked for
            return None, "the synthetic dataset at full size is not generated here"
        from .data.datasets import load_arrays

        return len(load_arrays(d, "train").labels), "counted in the synthetic dataset"
    if d.root and not check_data(cfg):
        from .data.datasets import _benchmark_folder

        return len(np.load(_benchmark_folder(d) / "train_num_frame.npy")), f"counted in {d.root}"
    size = REPORTED_SPLIT_SIZES.get((d.dataset, d.benchmark))
    if size:
        return size[0], "reported in the literature"
    return None, f"unknown until {d.dataset} is prepared"


def epoch_estimate(cfg: ExperimentConfig, num_clips: int | None = None,
                   folder: str | Path | None = None) -> dict[str, Any] | None:
    """Time and memory of one pretraining epoch of ``cfg``, from the measured step time.

    Uses ``benchmarks/results/step.json`` (a step measured at ``cfg``'s encoder, window,
    batch and queue) and ``loading.json`` (clips/s of the data pipeline). ``None`` if
    that size was not measured or the number of clips is unknown.

    Returns:
        ``steps_per_epoch``, ``seconds_per_step``, ``hours_per_epoch``, ``hours_total``
        (``cfg.pretrain.epochs`` epochs), ``peak_memory_mib``, ``loading_seconds_per_epoch``
        (one process, no workers), ``clips`` and ``clips_source``, ``measured`` (which
        benchmark row, on which machine).
    """
    step = _step_result(cfg, folder)
    clips, source = (num_clips, "given") if num_clips is not None else train_clips(cfg)
    if step is None or clips is None:
        return None
    steps = clips // cfg.pretrain.batch_size
    path = measured_recurrence(cfg)
    seconds = step["median_s"][path]     # as measured for the config's recurrence
    loading = load_benchmark("loading", folder)
    load_rate = None
    if loading:
        load_rate = next((v["clips_per_s"] for k, v in loading["summary"].items() if k.endswith(" 0 workers")), None)
    m = step["machine"]
    return {
        "steps_per_epoch": steps, "seconds_per_step": seconds,
        "hours_per_epoch": steps * seconds / 3600, "hours_total": steps * seconds * cfg.pretrain.epochs / 3600,
        "peak_memory_mib": step["memory"][path]["peak_mib"] if step.get("memory") else None,
        "loading_seconds_per_epoch": clips / load_rate if load_rate else None,
        "clips": clips, "clips_source": source,
        "measured": f"bench_step '{step['name']}' on {m['device']} ({m['cpu']}, {m['torch_threads']} thread(s))",
    }


# ----------------------------------------------------------------------------
# The full-scale cell
# ----------------------------------------------------------------------------


def cli_commands(cfg: ExperimentConfig, run_dir: str | Path, overrides: Mapping[str, Any] | None = None,
                 gpus: int = 8) -> list[str]:
    """The command lines that do what a full-scale cell does: one GPU, ``gpus`` GPUs, evaluation."""
    sets = [f"--set {k}={_yaml(v)}" for k, v in dict(overrides or {}).items()]
    if cfg.data.dataset != "synthetic":
        sets = [f"--set data.dataset={cfg.data.dataset}", f"--set data.benchmark={cfg.data.benchmark}",
                f"--set data.root={cfg.data.root or 'OUT_DIR'}"] + sets
    args = " ".join([f"--profile {cfg.profile}", *sets, f"--run-dir {shlex.quote(str(run_dir))}"])
    return [f"python -m i2md_lib pretrain {args}",
            f"torchrun --nproc_per_node={gpus} -m i2md_lib pretrain {args}",
            f"python -m i2md_lib evaluate --run-dir {shlex.quote(str(run_dir))} --protocols knn linear"]


def _yaml(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value)


def full_scale_cell(name: str, overrides: Mapping[str, Any] | None = None,
                    protocols: Sequence[str] = ("knn", "linear"), progress: bool = True,
                    runs_root: str | Path | None = None) -> dict[str, Any]:
    """A chapter's full-scale cell: the paper's run under ``I2MD_PROFILE=full``, a tiny one otherwise.

    Args:
        name: run name; the full-scale run lives in ``runs_root/full/<name>`` and resumes.
        overrides: what the chapter changes, e.g. ``{"pretrain.method": "i2md"}``.
        protocols: evaluation protocols (``knn``, ``linear``, ``semi``, ``finetune``).

    Returns:
        ``{"profile", "problems", "ran", "run_dir", "history", "results"}``: ``problems``
        of a full-scale run here (:func:`check_full_scale`), whether a run happened, its
        folder (``None`` for the stand-in), its log rows and metric rows (``[]`` if none).
    """
    profile = active_profile()
    full = full_scale_config(overrides, "full")
    problems = check_full_scale(full)
    run_dir = Path(runs_root or config_runs_root()) / "full" / name
    out: dict[str, Any] = {"profile": profile, "problems": problems, "ran": False, "run_dir": None,
                           "history": [], "results": []}
    if profile == "full":
        if problems:
            print("The full-scale run cannot start on this machine:")
            for problem in problems:
                print(f"  - {problem}")
            print("Fix these, re-run this cell (it resumes), or use the command line:")
            for line in cli_commands(full, run_dir, overrides):
                print(f"  {line}")
            return out
        print(f"Full scale: {full.pretrain.method} on {full.data.dataset} {full.data.benchmark}, "
              f"{full.pretrain.epochs} epochs, into {run_dir} (re-running this cell resumes)")
        return _run(full, run_dir, protocols, progress, out, augment=True)
    print(f"Profile {profile!r}: a smoke-scale stand-in (tiny model, synthetic data, seconds), "
          f"so that the chapter runs top to bottom. With I2MD_PROFILE=full this cell trains with "
          f"the paper's settings.")
    if problems:
        print("A full-scale run here would still need:")
        for problem in problems:
            print(f"  - {problem}")
    with tempfile.TemporaryDirectory(prefix=f"i2md_{name}_") as tmp:
        _run(full_scale_config(overrides, profile), Path(tmp), protocols, False, out, augment=False,
             report=False)
    out["run_dir"] = None   # the stand-in's folder is gone
    print(f"The stand-in ran: {len(out['history'])} training steps, then {', '.join(protocols)}. "
          f"It checks that the code path works; its accuracies are not results and are not shown.")
    return out


def _run(cfg: ExperimentConfig, run_dir: Path, protocols: Sequence[str], progress: bool,
         out: dict[str, Any], augment: bool, report: bool = True) -> dict[str, Any]:
    """Pretrain and evaluate ``cfg`` in ``run_dir`` into ``out``; print the ensemble's top-1
    accuracies only when ``report`` (a full-scale run, whose numbers are results)."""
    from .pipeline import evaluate_model, pretrained_model

    model, history = pretrained_model(cfg, run_dir, progress=progress)
    rows = evaluate_model(model, cfg, protocols, augment=augment, progress=progress)
    out.update(ran=True, run_dir=str(run_dir), history=history, results=rows)
    for row in out["results"] if report else []:
        if row.get("modality") != "ensemble":
            continue
        value = row.get("top1@k=1", row.get("top1"))
        if value is not None:
            print(f"{row['protocol']} (3-stream ensemble): top-1 {value:.1f}%")
    return out
