"""Experiment suites: named method variants x seeds -> pretrain, evaluate, write result files.

The book's tables come from here. One *result file* per (variant, seed) records
what produced it -- the command, the resolved config, the git commit, the
hardware, the encoder's time-stepping path, timings -- and every metric row::

    results/<profile>/<suite>/<variant>/seed<k>.json

``python -m i2md_lib experiments --suite main --profile book --seeds 0 1 2`` (or
``make results``) fills them; finished files are skipped, so an interrupted run
continues where it stopped. A chapter calls :func:`suite_results`, which loads
the files for the active profile and runs only what is missing (at ``smoke``
scale under the tests, nothing is precomputed and the whole pipeline runs).
"""
from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch

from .config import REPO_ROOT, ExperimentConfig, active_profile, results_root, runs_root
from .utils import atomic_write, get_device, set_seed

#: Result files and run folders live under ``config.results_root()`` / ``config.runs_root()``
#: (``I2MD_RESULTS_DIR`` / ``I2MD_RUNS_DIR`` move them; the tests give every worker its own).
PROTOCOLS = ("knn", "linear", "semi")


@dataclass(frozen=True)
class Variant:
    """One row of a table: a name, config overrides, and whether it is pretrained at all."""

    name: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    label: str = ""
    pretrain: bool = True


def _v(name: str, label: str, **overrides: Any) -> Variant:
    return Variant(name, {k.replace("__", "."): v for k, v in overrides.items()}, label)


#: The suites behind the book's tables (keys use ``__`` for the dots of config keys).
SUITES: dict[str, tuple[Variant, ...]] = {
    "main": (
        Variant("random_init", {"pretrain.method": "moco3"}, "random encoder (no pretraining)", pretrain=False),
        _v("moco_joint", "MoCo v2, joint only", pretrain__method="moco", pretrain__modality="joint"),
        _v("moco3", "3-stream MoCo (no interaction)", pretrain__method="moco3"),
        _v("posmining", "cross-modal positive mining", pretrain__method="posmining"),
        _v("cmd", "CMD", pretrain__method="cmd"),
        _v("cmd_dna", "CMD + DNA (no IMD)", pretrain__method="i2md", pretrain__imd_weight=0.0),
        _v("i2md", "CMD + DNA + IMD (I²MD, our design)", pretrain__method="i2md"),
    ),
    "ablation": (   # each row changes one thing of the main suite's "i2md" (book profile)
        _v("no_cmd", "without CMD (cmd_weight 0)", pretrain__method="i2md", pretrain__cmd_weight=0.0),
        _v("no_neighbours", "cluster branch without neighbours (k 0)", pretrain__method="i2md",
           pretrain__dna_max_neighbors=0),
        _v("dna_fixed", "DNA's first design: fixed gates (threshold 0.5, margin 0.1, k 8)",
           pretrain__method="i2md", pretrain__dna_gate="fixed", pretrain__dna_threshold=0.5,
           pretrain__dna_margin=0.1, pretrain__dna_max_neighbors=8),
        _v("z1.5", "z-score gate 1.5 (more neighbours than the book's 2.0)", pretrain__method="i2md",
           pretrain__dna_zscore=1.5),
        _v("tau_sym", "teacher temperature 0.1 (= student)", pretrain__method="i2md",
           pretrain__cmd_tau_teacher=0.1),
        _v("topk_small", "distillation top-k 32 (default 256)", pretrain__method="i2md",
           pretrain__cmd_topk=32, pretrain__imd_topk=32),
        # (the DNA and IMD weights are not ablated here: the search of the validation split tried 1
        # against the book's 0.5, and the test split must not second-guess it)
    ),
    # the hyperparameter search: on the validation benchmark only (xsub training subjects,
    # every 4th held out); never on the test split. report.search_choice picks the winner.
    # Each row names every searched key but the temperature and epochs (the DNA and IMD weights
    # too), so a profile or design that adopts a winner leaves the rows -- and their results -- as they were.
    "search": tuple(
        _v(name, label, data__benchmark="xsub_val", pretrain__method="i2md",
           **{"pretrain__cluster_weight": 1.0, "pretrain__imd_weight": 1.0, **changes})
        for name, label, changes in (
            ("z1.5", "z-score gate 1.5", {"pretrain__dna_zscore": 1.5}),
            ("z2.0", "z-score gate 2.0", {"pretrain__dna_zscore": 2.0}),
            ("z2.5", "z-score gate 2.5", {"pretrain__dna_zscore": 2.5}),
            ("z3.0", "z-score gate 3.0", {"pretrain__dna_zscore": 3.0}),
            ("w0.5", "z 2.0, DNA and IMD weights 0.5", {"pretrain__dna_zscore": 2.0,
                                                      "pretrain__cluster_weight": 0.5,
                                                      "pretrain__imd_weight": 0.5}),
            ("t0.1", "z 2.0, InfoNCE temperature 0.1", {"pretrain__dna_zscore": 2.0,
                                                       "pretrain__temperature": 0.1}),
            ("e60", "z 2.0, 60 epochs (milestone 48)", {"pretrain__dna_zscore": 2.0, "pretrain__epochs": 60,
                                                       "pretrain__lr_milestones": (48,)}),
        )),
}
#: Suites whose seed-0 runs store a t-SNE picture of their test features.
EMBEDDING_SUITES: tuple[str, ...] = ("main",)


def variant_config(variant: Variant, profile: str | None, seed: int,
                   overrides: Mapping[str, Any] | None = None,
                   base: Mapping[str, Any] | None = None) -> ExperimentConfig:
    """The config of one run, in this order: the profile, ``base`` (a testbed design on top of the
    profile, ``tools/testbed.py``), the variant's overrides, the seed, extra ``overrides``.

    A variant's own keys win over ``base`` (the search's 60-epoch row stays 60 epochs under a
    200-epoch design); extra ``overrides`` win over everything (the tests' smaller sizes).
    """
    cfg = ExperimentConfig.for_profile(profile, dict(base or {})).replace(dict(variant.overrides))
    draws = len(cfg.eval.semi_seeds)    # label draws of the semi-supervised protocol, as many as the profile's
    cfg = cfg.replace({"pretrain.seed": seed, "eval.seed": seed,
                       "eval.semi_seeds": tuple(seed + 1000 * i for i in range(draws))})
    return cfg.replace(dict(overrides or {}))


def result_path(profile: str, suite: str, variant: str, seed: int, root: Path | None = None) -> Path:
    """``<results>/<profile>/<suite>/<variant>/seed<k>.json``."""
    return Path(root or results_root()) / profile / suite / variant / f"seed{seed}.json"


def run_dir(suite: str, variant: str, seed: int = 0, profile: str | None = None,
            root: Path | None = None) -> Path:
    """The run folder (config, log.csv, checkpoint) of one suite run."""
    return Path(root or runs_root()) / active_profile(profile) / suite / variant / f"seed{seed}"


def git_commit() -> dict[str, Any]:
    """The commit of the code that ran, and whether the work tree had changes."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                               timeout=30).stdout.strip()
    try:
        return {"commit": git("rev-parse", "HEAD") or None,
                "dirty": bool(git("status", "--porcelain", "--untracked-files=no", "--", "i2md_lib"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


#: Environment variables that change which CPU kernels torch and MKL run, hence how sums round.
KERNEL_ENV_VARS: tuple[str, ...] = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR",
                                    "MKL_DEBUG_CPU_TYPE", "ONEDNN_MAX_CPU_ISA")


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware() -> dict[str, Any]:
    """What ran a result: machine, CPU and the instruction set torch's kernels use
    (``cpu_capability``: two CPUs with different ones round differently, so a run reproduces bit
    for bit only where it matches), threads, versions, and any kernel-choosing variables set."""
    capability = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", lambda: None)()
    info = {"machine": platform.machine(), "processor": platform.processor() or platform.machine(),
            "cpu_model": cpu_model(), "cpu_capability": capability,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    kernel_env = {name: os.environ[name] for name in KERNEL_ENV_VARS if name in os.environ}
    if kernel_env:
        info["kernel_env"] = kernel_env
    return info


def recurrence_path(cfg: ExperimentConfig, device_type: str | None = None) -> str | None:
    """The time-stepping path (``encoder.recurrence`` resolved for the device, e.g. ``fused``) a
    run of ``cfg`` takes; ``None`` for encoders without one. Result files record it: two paths
    compute the same function but round differently, so a run on another path is a new sample."""
    from .models.encoders import resolve_recurrence

    if cfg.encoder.kind != "bigru_cmd":
        return None
    device_type = device_type or get_device(cfg.pretrain.device, "pretrain.device").type   # where pretraining runs
    return resolve_recurrence(cfg.encoder.recurrence, cfg.encoder.hidden_size, device_type)


def run_one(suite: str, variant: Variant, seed: int, profile: str, out_root: Path | None = None,
            runs_root: Path | None = None, protocols: Sequence[str] = PROTOCOLS,
            overrides: Mapping[str, Any] | None = None, threads: int | None = None,
            command: str | None = None, base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Pretrain (unless ``variant.pretrain`` is false) and evaluate one variant with one seed.

    Writes and returns the result record (see the module docstring).
    """
    from .pipeline import evaluate_model, pretrained_model

    if threads:
        torch.set_num_threads(threads)
    cfg = variant_config(variant, profile, seed, overrides, base)
    folder = run_dir(suite, variant.name, seed, profile, runs_root)
    path = result_path(profile, suite, variant.name, seed, out_root)
    command = command or "python -m i2md_lib " + " ".join(map(shlex.quote, sys.argv[1:]))
    code, created = git_commit(), time.strftime("%Y-%m-%dT%H:%M:%S%z")
    reused, steps_before = earlier_pretraining(path, cfg, folder) if variant.pretrain else (None, 0)
    start = time.perf_counter()
    model, history = pretrained_model(cfg, folder if variant.pretrain else None)
    final = dict(history[-1]) if history else {}
    last_epoch = last_epoch_means(history)
    pretrain_seconds = round(time.perf_counter() - start, 1)
    pretraining = reused or {"seconds": pretrain_seconds, "commit": code["commit"], "command": command,
                             "created": created, "resumed_at_step": steps_before}
    if reused and reused["seconds"] is not None:
        pretrain_seconds = reused["seconds"]
    start = time.perf_counter()
    metrics = evaluate_model(model, cfg, protocols)
    record = {
        "suite": suite, "variant": variant.name, "label": variant.label or variant.name,
        "seed": seed, "profile": profile, "overrides": dict(variant.overrides),
        **({"base_overrides": dict(base)} if base else {}),
        "command": command, **code, "hardware": hardware(), "created": created,
        "recurrence_path": recurrence_path(cfg),
        "pretrain_seconds": pretrain_seconds, "eval_seconds": round(time.perf_counter() - start, 1),
        **({"pretraining": pretraining} if variant.pretrain else {}),
        "final_log_row": final, "last_epoch_log": last_epoch,
        "config": cfg.to_dict(), "config_digest": cfg.digest(),
        "metrics": metrics,
    }
    if variant.pretrain and seed == CHAPTER_SEED and variant.name in CHAPTER_RUNS.get(suite, ()):
        save_chapter_state(path, cfg, model, folder, record)
    if seed == seeds_with_embedding(profile) and suite in EMBEDDING_SUITES:
        modality = "joint" if "joint" in model.modalities else model.modalities[0]
        embedding = tsne_embedding(model.encoders("query")[modality], modality, cfg)
        atomic_write(embedding_path(path), lambda tmp: tmp.write_text(json.dumps(embedding)))
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(record, indent=1, default=_jsonable)))
    return record


def earlier_pretraining(result_file: Path, cfg: ExperimentConfig, folder: Path
                        ) -> tuple[dict[str, Any] | None, int]:
    """``(pretraining, steps)``: the steps the checkpoint in ``folder`` holds before this run, and
    when its epochs are all of ``cfg``'s (a finished run, only evaluated again: say, with more label
    draws), where its pretraining came from -- the ``pretraining`` entry of the result file it
    replaces (the same pretraining config), or ``{"seconds": None, ...}`` when no such file is left.
    ``None`` when this run trains (from scratch, or resuming an unfinished checkpoint)."""
    from .checkpoint import checkpoint_path, load_checkpoint, pretraining_differences

    ckpt = checkpoint_path(folder)
    if not ckpt.is_file():
        return None, 0
    state = load_checkpoint(ckpt)
    steps = int(state["step"])
    if int(state["epoch"]) < cfg.pretrain.epochs:
        return None, steps
    try:
        old = load_record(result_file)
    except (FileNotFoundError, ValueError):
        old = None
    if old is None or pretraining_differences(old["config"], cfg.to_dict()):
        return {"seconds": None, "reused": True,
                "note": "a finished run folder of an earlier process, with no result file of it"}, steps
    earlier = old.get("pretraining") or {key: old.get(key) for key in ("commit", "command", "created")} | {
        "seconds": old["pretrain_seconds"], "resumed_at_step": None}
    return {**earlier, "reused": True}, steps


def last_epoch_means(history: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """The mean of every logged column over the last epoch's steps (NaN entries left out):
    end-of-training diagnostics less noisy than the last step alone."""
    import math

    if not history:
        return {}
    last = [row for row in history if row["epoch"] == history[-1]["epoch"]]
    means = {}
    for key in last[0]:
        values = [row[key] for row in last if not math.isnan(row[key])]
        means[key] = sum(values) / len(values) if values else float("nan")
    return means


#: The runs whose trained state the chapters inspect (not only their metrics): their model
#: files and logs are committed next to the result files, so the book loads them.
CHAPTER_RUNS: dict[str, tuple[str, ...]] = {"main": ("moco_joint", "moco3", "posmining", "cmd", "i2md")}
CHAPTER_SEED = 0


def model_file_path(result_file: Path) -> Path:
    """``seed<k>_model.pt`` next to a result file: config, weights and queues of the run."""
    return result_file.with_name(result_file.stem + "_model.pt")


def log_file_path(result_file: Path) -> Path:
    """``seed<k>_log.csv.gz`` next to a result file: the run's training log."""
    return result_file.with_name(result_file.stem + "_log.csv.gz")


def committed_log(result_file: Path) -> list[dict[str, float]]:
    """The rows of the compressed training log next to ``result_file`` (:func:`log_file_path`);
    errors name the log file."""
    import gzip

    from .train import log_rows

    path = log_file_path(result_file)
    return log_rows(gzip.decompress(path.read_bytes()).decode().splitlines(), str(path))


def save_chapter_state(result_file: Path, cfg: ExperimentConfig, model, run_folder: Path,
                       record: Mapping[str, Any]) -> None:
    """Write the model file and the compressed log of a run the chapters inspect."""
    import gzip

    from .models.pretrained import save_model_file
    from .train import LOG_NAME

    meta = {k: record[k] for k in ("command", "commit", "dirty", "created", "config_digest")}
    save_model_file(model_file_path(result_file), cfg, model, meta)
    log = (Path(run_folder) / LOG_NAME).read_bytes()
    atomic_write(log_file_path(result_file), lambda tmp: tmp.write_bytes(gzip.compress(log, mtime=0)))


def seeds_with_embedding(profile: str) -> int:
    """The seed whose runs also store a t-SNE picture of their test features."""
    return 0


def embedding_path(result_file: Path) -> Path:
    return result_file.with_name(result_file.stem + "_tsne.json")


def tsne_embedding(encoder, modality: str, cfg: ExperimentConfig, max_points: int = 1000) -> dict[str, Any]:
    """2-D t-SNE (scikit-learn, fixed seed) of an encoder's test-split features.

    Returns ``{"modality", "xy": [[x, y], ...], "labels": [...]}`` (at most
    ``max_points`` clips, a fixed subset).
    """
    import numpy as np
    from sklearn.manifold import TSNE

    from .data.datasets import load_arrays
    from .eval.features import extract_features

    test = load_arrays(cfg.data, "val")
    feats, labels = extract_features(encoder, test, modality, cfg.eval, data=cfg.data)
    keep = np.random.default_rng(0).permutation(len(feats))[:max_points]
    keep.sort()
    feats, labels = feats[keep], np.asarray(labels)[keep]
    feats = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    perplexity = min(30, len(feats) - 1)      # 30 unless the split is tiny (a fixture's)
    xy = TSNE(n_components=2, init="pca", random_state=0, perplexity=perplexity).fit_transform(feats)
    return {"modality": modality, "xy": np.round(xy, 3).tolist(), "labels": labels.tolist()}


def load_embedding(profile: str, suite: str, variant: str, root: Path | None = None) -> dict[str, Any]:
    """The stored t-SNE picture of ``variant`` (seed 0), see :func:`tsne_embedding`."""
    seed = seeds_with_embedding(profile)
    return json.loads(embedding_path(result_path(profile, suite, variant, seed, root)).read_text())


def _jsonable(value: Any) -> Any:
    if isinstance(value, (set, tuple)):
        return list(value)
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def run_suite(suite: str, profile: str | None = None, seeds: Iterable[int] = (0, 1, 2),
              variants: Sequence[str] | None = None, out_root: Path | None = None,
              runs_root: Path | None = None, jobs: int = 1, protocols: Sequence[str] = PROTOCOLS,
              overrides: Mapping[str, Any] | None = None, rerun: bool = False,
              command: str | None = None, base: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Run every (variant, seed) of ``suite`` whose result file is missing or stale.

    ``jobs`` > 1 runs that many single-threaded processes side by side; ``base`` and ``overrides``
    as in :func:`variant_config`.
    Returns all records of the suite (loaded or new).
    """
    profile = active_profile(profile)
    seeds, chosen = list(seeds), _variants(suite, variants)
    runs = [(v, s) for s in seeds for v in chosen] if rerun else \
        stale_runs(suite, profile, seeds, variants, out_root, overrides, base)
    todo = [(suite, variant, seed, profile, out_root, runs_root, tuple(protocols), dict(overrides or {}),
             1 if jobs > 1 else None, command, dict(base or {})) for variant, seed in runs]
    if todo:
        print(f"{suite} ({profile}): {len(todo)} run(s) to do: "
              + ", ".join(f"{job[1].name}/seed{job[2]}" for job in todo), file=sys.stderr)
    if jobs > 1 and len(todo) > 1:
        import multiprocessing

        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(_run_packed, todo))
    else:
        for job in todo:
            _run_packed(job)
    return [load_record(result_path(profile, suite, v.name, s, out_root)) for v in chosen for s in seeds]


def stale_runs(suite: str, profile: str | None = None, seeds: Iterable[int] = (0, 1, 2),
               variants: Sequence[str] | None = None, out_root: Path | None = None,
               overrides: Mapping[str, Any] | None = None,
               base: Mapping[str, Any] | None = None) -> list[tuple[Variant, int]]:
    """The ``(variant, seed)`` pairs of ``suite`` with no current result file under ``out_root``
    (missing, or made with another config), seed by seed so that an interrupted suite leaves
    whole seeds behind."""
    profile = active_profile(profile)
    chosen = _variants(suite, variants)
    return [(variant, seed) for seed in seeds for variant in chosen
            if not _is_current(result_path(profile, suite, variant.name, seed, out_root),
                               variant_config(variant, profile, seed, overrides, base))]


def _run_packed(args: tuple) -> dict[str, Any]:
    return run_one(*args)


def _variants(suite: str, names: Sequence[str] | None) -> list[Variant]:
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; choose one of {', '.join(SUITES)}")
    known = {v.name: v for v in SUITES[suite]}
    if names is None:
        return list(known.values())
    missing = [n for n in names if n not in known]
    if missing:
        raise ValueError(f"suite {suite!r} has no variants {missing}; it has {', '.join(known)}")
    return [known[n] for n in names]


def _is_current(path: Path, cfg: ExperimentConfig) -> bool:
    """Whether ``path`` holds a result of ``cfg`` (fields added to the library since
    the file was written count as their defaults; runtime-only keys are ignored)."""
    try:
        saved = load_record(path)["config"]
    except (FileNotFoundError, ValueError, KeyError):
        return False
    return _same_config(saved, cfg)


def _same_config(saved: dict[str, Any], cfg: ExperimentConfig) -> bool:
    """Whether a saved config equals ``cfg`` (fields added since count as their defaults;
    runtime-only keys and the pretraining keys of other methods are ignored)."""
    from .checkpoint import result_differences

    return not result_differences(saved, cfg.to_dict())


def load_record(path: str | Path) -> dict[str, Any]:
    """One result file; a damaged file raises ``ValueError`` naming it."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not a valid result file ({e})") from e
    if not isinstance(record, dict) or "metrics" not in record:
        raise ValueError(f"{path}: not a result file (no 'metrics')")
    return record


def load_records(folder: str | Path) -> list[dict[str, Any]]:
    """Every result file of one suite folder (``<variant>/seed<k>.json``), by variant and seed --
    for files of another testbed, which :func:`suite_results` would call stale
    (``results/book/testbed_v1/test/book/ablation``, say)."""
    paths = [p for p in Path(folder).glob("*/seed*.json") if p.stem[4:].isdigit()]
    return [load_record(p) for p in sorted(paths, key=lambda p: (p.parent.name, int(p.stem[4:])))]


#: Seeds of each suite the book shows beyond the ``smoke`` profile (which runs seed 0 only):
#: the seeds whose result files are committed, so the chapters load and never train
#: (``tests/test_experiments.py`` checks that they are all there and current).
SUITE_SEEDS: dict[str, tuple[int, ...]] = {"main": tuple(range(17)), "ablation": (0, 1, 2),
                                           "search": (0, 1)}

#: Seeds ``make results`` runs: the noise budget of testbed v3 (``results/book/noise``) gives a
#: ±2-point interval of the ladder's steps with 4-7 seeds; the main suite's own spread, with the
#: motion stream failing in a few runs, asks for about 16-18 on the linear ensemble (Chapter 6).
#: A seed joins :data:`SUITE_SEEDS` once all its runs are committed.
TARGET_SEEDS: dict[str, tuple[int, ...]] = {"main": tuple(range(20)), "ablation": (0, 1, 2), "search": (0, 1)}


def default_seeds(suite: str, profile: str | None = None, target: bool = False) -> tuple[int, ...]:
    """The seeds of ``suite`` at ``profile``: :data:`SUITE_SEEDS` (or :data:`TARGET_SEEDS` with
    ``target``), and (0,) at ``smoke``."""
    if active_profile(profile) == "smoke":
        return (0,)
    return (TARGET_SEEDS if target else SUITE_SEEDS).get(suite, (0, 1, 2))


def suite_results(suite: str, profile: str | None = None, seeds: Iterable[int] | None = None,
                  variants: Sequence[str] | None = None, **kwargs: Any) -> list[dict[str, Any]]:
    """The records of ``suite`` for the active profile: precomputed files, and runs for what is
    missing. Seeds default to :func:`default_seeds`."""
    profile = active_profile(profile)
    seeds = default_seeds(suite, profile) if seeds is None else seeds
    return run_suite(suite, profile, seeds, variants, **kwargs)


def trained_model(suite: str, variant: str, seed: int = 0, profile: str | None = None,
                  runs_root: Path | None = None, progress: bool = True, base: Mapping[str, Any] | None = None):
    """``(cfg, model)`` of one suite run, loaded or pretrained.

    A committed model file of the run (:data:`CHAPTER_RUNS`) made with today's config is
    loaded; otherwise the run folder :func:`run_suite` uses is trained (a finished
    checkpoint there resumes to the end at once). ``base`` as in :func:`variant_config`.
    """
    from .models.pretrained import load_pretrained
    from .pipeline import pretrained_model

    profile = active_profile(profile)
    chosen = _variants(suite, [variant])[0]
    cfg = variant_config(chosen, profile, seed, base=base)
    committed = model_file_path(result_path(profile, suite, chosen.name, seed))
    if chosen.pretrain and _matches(committed, cfg):
        return cfg, load_pretrained(committed)[1]
    folder = run_dir(suite, chosen.name, seed, profile, runs_root) if chosen.pretrain else None
    model, _ = pretrained_model(cfg, folder, progress=progress)
    return cfg, model


def run_log(suite: str, variant: str, seed: int = 0, profile: str | None = None,
            runs_root: Path | None = None) -> list[dict[str, float]]:
    """The training log (one dict per step) of one suite run: the committed one if it was
    made with today's config, else the run folder's (trained first if needed)."""
    from .train import LOG_NAME, read_log

    profile = active_profile(profile)
    chosen = _variants(suite, [variant])[0]
    cfg = variant_config(chosen, profile, seed)
    result_file = result_path(profile, suite, chosen.name, seed)
    if _matches(model_file_path(result_file), cfg) and log_file_path(result_file).is_file():
        return committed_log(result_file)
    trained_model(suite, variant, seed, profile, runs_root, progress=False)
    return read_log(run_dir(suite, chosen.name, seed, profile, runs_root) / LOG_NAME)


def _matches(model_file: Path, cfg: ExperimentConfig) -> bool:
    """Whether ``model_file`` exists and was trained with ``cfg`` (keys that do not change the
    weights aside: :func:`checkpoint.pretraining_differences`)."""
    from .checkpoint import pretraining_differences
    from .models.pretrained import load_model_file

    if not model_file.is_file():
        return False
    return not pretraining_differences(load_model_file(model_file)["config"], cfg.to_dict())
