"""The studies beyond the synthetic suites: real recordings (MSR Action3D) and the optimisation and
training-length settings, on both testbeds.

Each study is the main suite (``experiments.SUITES["main"]``) run with a *testbed* (overrides on
top of a profile: :data:`TESTBEDS`), a *setting* (:data:`SETTINGS`) and a *part* (``val``: the
validation benchmark, where every choice is made; ``test``: the cross-subject benchmark, once the
choices are fixed). Result files go to

    results/<testbed folder>/<part>/<setting>/<profile>/main/<variant>/seed<k>.json

``tools/msr_study.py`` runs them (from a clean tree, so that each file names its code); the
real-recordings chapter reads them with :func:`study_records`, and at the ``smoke`` scale of the
tests runs the same pipeline live on MSR-format fixture files (:func:`fixture_msr_root`).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .config import REPO_ROOT, active_profile, results_root, runs_root

#: Where the prepared MSR Action3D arrays live, relative to the repository root (not committed:
#: ``python -m i2md_lib prepare-msr RAW data/msr``).
MSR_DATA_ROOT = "data/msr"
#: MSR Action3D at book size. About 290 training clips (232 in xsub_val), so the queue must be
#: shorter than the training set: 128 keys (4 batches of 32) hold about half of xsub_val's clips,
#: never a second copy of a clip; the distillation top-k keeps half the queue, as the book's 256 of
#: 512 and the reference's 8192 of 16384 do; DNA looks at 8 candidates (a class has about 12
#: training clips, half of them in the queue). Clips last 13-196 frames (median 39): all 200
#: stored frames are kept and the window stays the book's 32. 200 epochs of about 9 steps.
#: Labels: 1 % of 291 clips is 3 clips for 20 classes, so the semi-supervised protocol uses 10 %
#: (29 clips, about 1.5 per class) and 20 % (58, about 3 per class).
MSR_BOOK: dict[str, Any] = {
    "data.dataset": "msr",
    "data.root": MSR_DATA_ROOT,
    "data.max_frames": 200,
    "pretrain.queue_size": 128,
    "pretrain.batch_size": 32,
    "pretrain.cmd_topk": 64,
    "pretrain.imd_topk": 64,
    "pretrain.dna_max_neighbors": 8,
    "eval.label_fractions": (0.1, 0.2),
}
#: The optimisation and training-length study: each setting changes the testbed in the keys it
#: names. "book" is the book profile's optimisation (lr 0.05, key momentum 0.99), "reference" the
#: CMD reference's (lr 0.01, momentum 0.999), the other two the crossings; "long4x" and "long8x"
#: train four and eight times as many steps with the book's optimisation. The last five are the
#: search of MSR Action3D's sizes on its validation split: a queue of half and of nearly all
#: xsub_val's 232 training clips (top-k kept at half the queue), a smaller top-k, fewer and more
#: DNA candidates.
SETTINGS: dict[str, dict[str, Any]] = {
    "book": {},
    "reference": {"pretrain.lr": 0.01, "pretrain.momentum": 0.999},
    "lr0.01": {"pretrain.lr": 0.01},
    "m0.999": {"pretrain.momentum": 0.999},
    "long4x": {},
    "long8x": {},
    # the search of MSR Action3D's sizes around MSR_BOOK (queue, distillation top-k, DNA candidates)
    "queue64": {"pretrain.queue_size": 64, "pretrain.cmd_topk": 32, "pretrain.imd_topk": 32},
    "queue224": {"pretrain.queue_size": 224, "pretrain.cmd_topk": 112, "pretrain.imd_topk": 112},
    "topk32": {"pretrain.cmd_topk": 32, "pretrain.imd_topk": 32},
    "dna4": {"pretrain.dna_max_neighbors": 4},
    "dna16": {"pretrain.dna_max_neighbors": 16},
}
#: The settings that change the training length: their factor on the profile's epochs and learning-
#: rate milestones (``long4x`` at the book profile: 800 epochs, milestone 640; at smoke: 8 and 4).
LENGTH_FACTORS: dict[str, int] = {"long4x": 4, "long8x": 8}
#: The benchmark of each part.
PARTS: dict[str, str] = {"val": "xsub_val", "test": "xsub"}
#: ``{testbed: (overrides on the profile, results folder under results/)}``; ``synthetic`` is the
#: book profile as it is (testbed v3).
TESTBEDS: dict[str, tuple[dict[str, Any], str]] = {"msr": (MSR_BOOK, "msr"), "synthetic": ({}, "book/study")}


def study_folder(testbed: str, part: str, setting: str, root: Path | None = None) -> Path:
    """``results/<testbed folder>/<part>/<setting>``: the ``out_root`` of one study's suite."""
    _check(testbed, part, setting)
    return Path(root or results_root()) / TESTBEDS[testbed][1] / part / setting


def setting_overrides(setting: str, profile: str | None = None, base: Mapping[str, Any] | None = None
                      ) -> dict[str, Any]:
    """The config overrides of one setting at ``profile`` on top of ``base`` (a testbed's overrides):
    :data:`SETTINGS`, and for a setting of :data:`LENGTH_FACTORS` the profile's epochs and
    milestones times its factor."""
    from .config import ExperimentConfig

    overrides = dict(SETTINGS[setting])
    factor = LENGTH_FACTORS.get(setting)
    if factor:
        pretrain = ExperimentConfig.for_profile(profile, dict(base or {})).pretrain
        overrides["pretrain.epochs"] = pretrain.epochs * factor
        overrides["pretrain.lr_milestones"] = tuple(m * factor for m in pretrain.lr_milestones)
    return overrides


def run_study(testbed: str, part: str, setting: str, seeds: Iterable[int], variants: Sequence[str] | None = None,
              profile: str | None = None, out_root: Path | None = None, runs: Path | None = None,
              extra: Mapping[str, Any] | None = None, jobs: int = 1, command: str | None = None
              ) -> list[dict[str, Any]]:
    """Run (what is missing of) one study: the main suite with the testbed, setting and part."""
    from . import experiments

    _check(testbed, part, setting)
    base, folder = TESTBEDS[testbed]
    out = Path(out_root) / part / setting if out_root else study_folder(testbed, part, setting)
    runs = Path(runs or runs_root() / folder.replace("book/", "")) / part / setting
    overrides = {**setting_overrides(setting, profile, base), "data.benchmark": PARTS[part], **dict(extra or {})}
    return experiments.run_suite("main", profile, seeds, variants, out_root=out, runs_root=runs, jobs=jobs,
                                 base=base, overrides=overrides, command=command)


def study_records(testbed: str, part: str, setting: str, variants: Sequence[str] | None = None,
                  profile: str | None = None, seeds: Iterable[int] | None = None) -> list[dict[str, Any]]:
    """The result files of one study at ``profile``: at ``book`` and ``full`` the committed ones
    (those of ``seeds``, default all, paired by seed: a seed missing for one variant is dropped for
    all); at ``smoke`` the study is run live, seed 0, on MSR-format fixture files for ``msr``."""
    from . import experiments

    profile = active_profile(profile)
    if profile == "smoke":
        extra = {"data.root": str(fixture_msr_root())} if testbed == "msr" else {}
        return run_study(testbed, part, setting, (0,), variants, "smoke", out_root=_smoke_root(), extra=extra)
    folder = study_folder(testbed, part, setting) / profile / "main"
    records = experiments.load_records(folder) if folder.is_dir() else []
    if seeds is not None:
        wanted = set(seeds)
        records = [r for r in records if r["seed"] in wanted]
    if variants is not None:
        records = [r for r in records if r["variant"] in variants]
    names = {r["variant"] for r in records}
    complete = {s for s in {r["seed"] for r in records}
                if {r["variant"] for r in records if r["seed"] == s} == names}
    return [r for r in records if r["seed"] in complete]


#: The seeds of the MSR ladder (``part="test"``) that the real-recordings chapter shows and its prose
#: describes; result files of later seeds are committed as they finish and shown once the prose is
#: rewritten for them (the main suite's ``experiments.SUITE_SEEDS`` works the same way).
LADDER_SEEDS: range = range(10)

#: The seeds of the MSR ladder at four times the length (``setting="long4x"``) that the chapter shows
#: and describes, as :data:`LADDER_SEEDS` does for the book's length.
LONG_LADDER_SEEDS: range = range(6)

#: The seeds of the validation studies (optimisation settings, lengths, MSR's sizes) that the chapter
#: shows and describes: three per method and setting. Later seeds can be committed without changing
#: what the prose describes.
STUDY_SEEDS: range = range(3)

#: The headline metrics of each testbed: MSR's semi-supervised column uses 10 % of the labels
#: (1 % would be 3 clips for 20 classes).
STUDY_METRICS: dict[str, tuple[str, ...]] = {
    "synthetic": ("knn joint", "linear joint", "linear ensemble", "semi 1%"),
    "msr": ("knn joint", "linear joint", "linear ensemble", "semi 10%"),
}


def tagged_records(testbed: str, part: str, settings: Sequence[str], variants: Sequence[str] | None = None,
                   profile: str | None = None, seeds: Iterable[int] | None = None) -> list[dict[str, Any]]:
    """The records of several settings of one testbed and part (those of ``seeds``, default all, as
    in :func:`study_records`), each variant renamed ``"<variant> @ <setting>"`` (copies; the files
    are untouched), so that the tables of ``report`` compare settings as they compare methods,
    paired by seed."""
    out = []
    seeds = None if seeds is None else list(seeds)
    for setting in settings:
        for record in study_records(testbed, part, setting, variants, profile, seeds):
            out.append({**record, "variant": f"{record['variant']} @ {setting}"})
    return out


def settings_summary(records: Sequence[Mapping[str, Any]], metrics: Sequence[str]):
    """Per tagged variant (:func:`tagged_records`): mean ± sd over seeds of ``metrics``, the seeds,
    and the runs in which the failed-stream detector (``report.stream_checks``) flags a stream."""
    import pandas as pd

    from . import report

    values = report.headline_values(records)
    failures = report.failure_counts(records)
    rows = []
    for variant, runs in values.groupby(level="variant", sort=False):
        row: dict[str, Any] = {"run": variant, "seeds": len(runs)}
        for metric in metrics:
            column = runs[metric] if metric in runs else pd.Series(dtype=float)
            row[metric] = report.mean_sd(column.mean(), column.std()) if len(column) > 1 else \
                (f"{column.mean():.1f}" if len(column) else "–")
        row["failed runs"] = int(failures.loc[variant, "failed"]) if variant in failures.index else 0
        rows.append(row)
    return pd.DataFrame(rows).set_index("run")


#: The failure re-runs: a main-suite run whose motion stream failed, trained again with the studied
#: optimisation settings (its pretraining sees only the training split; the test accuracies are
#: read to see whether the stream learned, never to choose a setting).
FAILED_RUN: tuple[str, int] = ("cmd_dna", 13)


def rerun_records(settings: Sequence[str], run: tuple[str, int] = FAILED_RUN,
                  profile: str | None = None) -> dict[str, dict[str, Any]]:
    """``{setting: record}`` of one main-suite run (``run`` = variant, seed) trained again with
    each setting (``study`` part ``test`` of the synthetic testbed), beside the main suite's own
    record under ``"book (main suite)"``. At ``smoke`` the same pipeline runs live with seed 0."""
    from . import experiments

    profile = active_profile(profile)
    variant, seed = run
    out: dict[str, dict[str, Any]] = {}
    if profile == "smoke":
        out["book (main suite)"] = run_study("synthetic", "test", "book", (0,), [variant], "smoke",
                                             out_root=_smoke_root())[0]
        for setting in settings:
            out[setting] = run_study("synthetic", "test", setting, (0,), [variant], "smoke", out_root=_smoke_root())[0]
        return out
    main = experiments.result_path(profile, "main", variant, seed)
    if main.is_file():
        out["book (main suite)"] = experiments.load_record(main)
    for setting in settings:
        path = experiments.result_path(profile, "main", variant, seed, study_folder("synthetic", "test", setting))
        if path.is_file():
            out[setting] = experiments.load_record(path)
    return out


def stream_table(records: Mapping[str, Mapping[str, Any]]):
    """Per named record: each stream's linear and kNN accuracy and its instance InfoNCE over the
    last pretraining epoch (with ``ln(K+1)``, the loss of an encoder that learned nothing)."""
    import math

    import pandas as pd

    from . import report

    rows = []
    for name, record in records.items():
        values = dict(filter(None, (report.headline_value(m) for m in record["metrics"])))
        log = record.get("last_epoch_log") or {}
        row: dict[str, Any] = {"run": name}
        for stream in ("joint", "motion", "bone"):
            row[f"linear {stream}"] = round(values.get(f"linear {stream}", float("nan")), 1)
        for stream in ("joint", "motion", "bone"):
            row[f"InfoNCE {stream}"] = round(log.get(f"nce_{stream}", float("nan")), 2)
        row["ln(K+1)"] = round(math.log(record["config"]["pretrain"]["queue_size"] + 1), 2)
        rows.append(row)
    return pd.DataFrame(rows).set_index("run")


def study_embeddings(testbed: str, part: str, setting: str, variants: Sequence[str],
                     profile: str | None = None) -> dict[str, dict[str, Any]]:
    """``{variant: t-SNE picture}`` of seed 0's runs of one study (``experiments.tsne_embedding``
    of the part's evaluation clips); at ``smoke`` from the live runs of :func:`study_records`."""
    from . import experiments

    profile = active_profile(profile)
    study_records(testbed, part, setting, variants, profile)          # at smoke: runs them (once)
    root = _records_root(testbed, part, setting, profile)
    return {v: experiments.load_embedding(profile, "main", v, root) for v in variants}


def _records_root(testbed: str, part: str, setting: str, profile: str) -> Path:
    """The folder holding one study's ``<profile>/main/...`` result files: the committed study
    folder, or at ``smoke`` this process's folder of live runs."""
    return (_smoke_root() / part / setting) if profile == "smoke" else study_folder(testbed, part, setting)


def study_log(testbed: str, part: str, setting: str, variant: str, profile: str | None = None
              ) -> list[dict[str, float]]:
    """The training log (one dict per step, as ``train.read_log``) of seed 0's run of ``variant``
    in one study, from the compressed log next to its result file (kept for seed 0 of the runs the
    chapters inspect, ``experiments.CHAPTER_RUNS``); at ``smoke`` from the live run."""
    from . import experiments

    profile = active_profile(profile)
    if profile == "smoke":
        study_records(testbed, part, setting, (variant,), profile)   # runs it (once)
    result_file = experiments.result_path(profile, "main", variant, experiments.CHAPTER_SEED,
                                          _records_root(testbed, part, setting, profile))
    log_file = experiments.log_file_path(result_file)
    if not log_file.is_file():
        raise FileNotFoundError(f"{log_file}: no training log (one is kept for seed {experiments.CHAPTER_SEED} "
                                f"of {', '.join(experiments.CHAPTER_RUNS['main'])})")
    return experiments.committed_log(result_file)


def fixture_msr_root() -> Path:
    """Prepared MSR-format fixture data (``data.msr.write_msr_corpus``, synthetic bodies in the
    Kinect v1 layout), written once per process into a temporary folder."""
    global _FIXTURE
    if _FIXTURE is None:
        from .data.msr import prepare_msr, write_msr_corpus

        folder = Path(tempfile.mkdtemp(prefix="i2md_msr_fixture_"))
        write_msr_corpus(folder / "raw", max_frames=40)
        prepare_msr(folder / "raw", folder / "prepared")
        _FIXTURE = folder / "prepared"
    return _FIXTURE


_FIXTURE: Path | None = None


def _smoke_root() -> Path:
    """A results folder of this process for the live smoke-scale studies."""
    global _SMOKE
    if _SMOKE is None:
        _SMOKE = Path(tempfile.mkdtemp(prefix="i2md_smoke_studies_"))
    return _SMOKE


_SMOKE: Path | None = None


def msr_available(root: str | Path = MSR_DATA_ROOT) -> bool:
    """Whether prepared MSR Action3D arrays are there (``root`` relative to the repository)."""
    path = Path(root) if Path(root).is_absolute() else REPO_ROOT / root
    return (path / "xsub" / "train_data_joint.npy").is_file()


def msr_data_card(root: str | Path = MSR_DATA_ROOT) -> dict[str, Any]:
    """What a prepared MSR Action3D folder holds, without a single coordinate: split sizes, clips
    per class, clip lengths, and the prepare report's skipped clips (file names only) and notes.
    The real-recordings chapter shows it from ``results/msr/data_card.json``."""
    import json

    import numpy as np

    from .data.msr import BENCHMARKS
    from .data.store import load_split
    from .skeleton import KINECT_V1_20

    root = Path(root) if Path(root).is_absolute() else REPO_ROOT / root
    report = json.loads((root / "prepare_report.json").read_text())
    card: dict[str, Any] = {"files_seen": report["files_seen"], "clips": report["samples_written"],
                            "skipped": [{"file": Path(s["path"]).name, "reason": s["reason"]}
                                        for s in report["skipped"]],
                            "notes": report["notes"], "splits": {}}
    for bench in BENCHMARKS:
        for part in ("train", "val"):
            arrays = load_split(root / bench, part, layout=KINECT_V1_20)
            frames = np.asarray(arrays.num_frame)
            card["splits"][f"{bench} {part}"] = {
                "clips": len(frames), "subjects": sorted({int(n[5:7]) for n in arrays.names}),
                "clips per class": np.bincount(arrays.labels, minlength=20).tolist(),
                "frames": {"min": int(frames.min()), "median": float(np.median(frames)), "max": int(frames.max()),
                           "histogram": np.histogram(frames, bins=[0, 16, 24, 32, 48, 64, 96, 128, 200])[0].tolist(),
                           "bins": [0, 16, 24, 32, 48, 64, 96, 128, 200]}}
    return card


def _check(testbed: str, part: str, setting: str) -> None:
    for value, known, what in ((testbed, TESTBEDS, "testbed"), (part, PARTS, "part"), (setting, SETTINGS, "setting")):
        if value not in known:
            raise ValueError(f"unknown {what} {value!r}; choose one of {', '.join(known)}")
