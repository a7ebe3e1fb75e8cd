"""Noise budget of the main suite: where the seed-to-seed spread of the headline numbers comes from.

For every method and pretraining seed the encoders are pretrained once (the run folders
of ``experiments.run_dir("main", ...)``, so a finished checkpoint is reused) and then
evaluated with several *evaluation* seeds (linear-probe initialisation, batch order and
validation split; the 1 % label subset of the semi-supervised protocol). Each headline
number is split into

(a) pretraining seed   -- between-group variance of a one-way random-effects model
                           (group = pretraining seed, replicate = evaluation seed);
(b) evaluation seed    -- within-group variance (weights fixed);
(c) test-set size      -- bootstrap variance over test clips of the accuracy (per-clip
                           0/1 correctness; the binomial ``p(1-p)/n`` is kept beside it),

and the same for the paired difference of two methods (same pretraining and evaluation
seed in both, so what the seeds share cancels; (c) then counts only the clips on which
the two methods disagree). ``random_init`` has no pretraining: its "pretraining seed" is
the seed of the random weights.

    OMP_NUM_THREADS=1 python tools/noise_budget.py --profile book --semi-draws 10 \\
        --methods random_init moco3 cmd --seeds 0 1 2 --eval-seeds 0 1 2 3 --pair cmd moco3 --jobs 2

writes ``noise_budget.json`` (command, config, commit, hardware, every number) and
``noise_budget.md`` (the tables). It refuses to run on a work tree with uncommitted
changes under ``i2md_lib/`` or ``tools/`` unless ``--allow-dirty`` (tests).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from i2md_lib import experiments, stats  # noqa: E402
from run_records import recorded_command, require_clean  # noqa: E402
from i2md_lib.config import ExperimentConfig, runs_root  # noqa: E402

#: name -> (protocol, stream) of the headline numbers.
METRICS: dict[str, tuple[str, str]] = {
    "knn_joint": ("knn", "joint"),              # top1@k=1
    "linear_joint": ("linear", "joint"),        # top1 (fast linear probe, as the suite)
    "linear_ensemble": ("linear", "ensemble"),
    "semi1_joint": ("semi", "joint"),           # 1 % labels, one label-subset draw per evaluation seed
}
SEMI_FRACTION = 0.01


def method_config(method: str, profile: str, seed: int, base: dict[str, Any] | None = None) -> ExperimentConfig:
    variant = experiments._variants("main", [method])[0]
    return experiments.variant_config(variant, profile, seed, base=base)


def design_overrides(design: str | None) -> dict[str, Any]:
    """The overrides of a testbed design (``tools/testbed.py``), the base of every run; none for None."""
    if design is None:
        return {}
    from testbed import DESIGNS

    return dict(DESIGNS[design][0])


def _pretrain(args: tuple[str, str, int, str, dict[str, Any]]) -> str:
    """Worker: make sure the run of (method, seed) is pretrained (single-threaded)."""
    import torch

    method, profile, seed, runs_folder, base = args
    torch.set_num_threads(1)
    experiments.trained_model("main", method, seed, profile, runs_root=Path(runs_folder), progress=False, base=base)
    return f"{method}/seed{seed}"


def chosen_correct(result) -> np.ndarray:
    """0/1 ``(N_test,)`` correctness at the evaluation a :class:`ClassifierResult` selected."""
    from i2md_lib.eval.results import select_index

    probs = result.test_probs[select_index(result.curve, result.select_on)]
    correct = (np.argmax(probs, axis=1) == result.test_labels).astype(np.float64)
    if not np.isclose(100.0 * correct.mean(), result.top1):
        raise RuntimeError(f"{result.protocol} {result.modality}: per-clip accuracy {100 * correct.mean()} "
                           f"differs from the reported {result.top1}")
    return correct


def measure_model(model, cfg: ExperimentConfig, eval_seeds: Sequence[int], semi_draws: int = 1) -> dict[str, Any]:
    """Headline numbers and per-clip correctness of one pretrained model for each evaluation seed.

    The semi-supervised number of one evaluation seed ``e`` averages ``semi_draws`` label draws
    (seeds ``e + 1000 i``, as the suites draw them), its per-clip correctness the draws' mean.
    Returns ``{"values": {metric: [per eval seed]}, "correct": {metric: (E, N_test)},
    "eval_seconds": float}``; k-NN does not depend on the evaluation seed (repeated).
    """
    import torch

    from i2md_lib.eval.ensemble import ensemble_classifiers
    from i2md_lib.eval.features import split_features
    from i2md_lib.eval.finetune import finetune_eval
    from i2md_lib.eval.knn import knn_predict
    from i2md_lib.eval.linear import linear_eval
    from i2md_lib.eval.setup import EvalSetup
    from i2md_lib.models.moco import encoders_for_eval

    start = time.perf_counter()
    encoders = encoders_for_eval(model)
    setup = EvalSetup.from_config(cfg, device=torch.device("cpu"))
    setup = setup.replace(num_classes=setup.classes)
    feats = {m: split_features(enc, m, setup) for m, enc in encoders.items()}
    joint = feats["joint"]
    knn = (knn_predict(joint.train[0], joint.train[1], joint.test[0], 1) == joint.test[1]).astype(np.float64)
    correct: dict[str, list[np.ndarray]] = {name: [] for name in METRICS}
    values: dict[str, list[float]] = {name: [] for name in METRICS}
    for e in eval_seeds:
        seeded = setup.replace(eval=dataclasses.replace(cfg.eval, seed=e, semi_seeds=(e,)))
        linear = {m: linear_eval(enc, m, seeded, augment=False, features=feats[m], keep_probs=True)
                  for m, enc in encoders.items()}
        ensemble = ensemble_classifiers(list(linear.values())) if len(linear) > 1 else linear["joint"]
        semi = [finetune_eval(encoders["joint"], "joint", seeded, fraction=SEMI_FRACTION, seed=e + 1000 * i,
                              keep_probs=True) for i in range(semi_draws)]
        runs = {"knn_joint": (100.0 * knn.mean(), knn),
                "linear_joint": (linear["joint"].top1, chosen_correct(linear["joint"])),
                "linear_ensemble": (ensemble.top1, chosen_correct(ensemble)),
                "semi1_joint": (float(np.mean([r.top1 for r in semi])),
                                np.mean([chosen_correct(r) for r in semi], axis=0))}
        for name, (value, per_clip) in runs.items():
            values[name].append(float(value))
            correct[name].append(per_clip)
    return {"values": values, "correct": {k: np.stack(v) for k, v in correct.items()},
            "eval_seconds": time.perf_counter() - start}


def decompose(table: np.ndarray, correct: np.ndarray, n_boot: int) -> dict[str, Any]:
    """Variance components (%²) of one metric: ``table`` ``(seeds, eval seeds)`` of numbers,
    ``correct`` ``(seeds, eval seeds, N_test)`` per-clip correctness (or differences of it)."""
    vc = stats.random_effects(table)
    boot = [stats.bootstrap_mean_variance(c, n_boot=n_boot, seed=i)
            for i, c in enumerate(correct.reshape(-1, correct.shape[-1]))]
    out = {"mean": float(table.mean()), "pretrain_var": vc.between, "pretrain_var_raw": vc.between_raw,
           "eval_var": vc.within, "test_var": float(np.mean(boot)),
           "num_test": int(correct.shape[-1]), "anova": vc.to_dict()}
    out["total_var"] = out["pretrain_var"] + out["eval_var"] + out["test_var"]
    out["run_sd"] = float(np.sqrt(vc.total))        # SD of one run on this fixed test set
    return out


def analyse(measured: dict[str, dict[int, dict[str, Any]]], seeds: Sequence[int],
            pair: tuple[str, str] | None, n_boot: int) -> dict[str, Any]:
    """Per-method and paired decompositions from :func:`measure_model` outputs."""
    per_method: dict[str, Any] = {}
    for method, runs in measured.items():
        per_method[method] = {}
        for name in METRICS:
            table = np.array([runs[s]["values"][name] for s in seeds])               # (S, E)
            correct = np.stack([runs[s]["correct"][name] for s in seeds])            # (S, E, N)
            entry = decompose(table, correct, n_boot)
            entry["binomial_var"] = float(np.mean([stats.binomial_variance(v, correct.shape[-1])
                                                   for v in table.ravel()]))
            entry["values"] = table.tolist()
            per_method[method][name] = entry
    result: dict[str, Any] = {"methods": per_method}
    if pair is not None:
        a, b = pair
        paired = {}
        for name in METRICS:
            table = np.array([np.subtract(measured[a][s]["values"][name], measured[b][s]["values"][name])
                              for s in seeds])
            correct = np.stack([measured[a][s]["correct"][name] - measured[b][s]["correct"][name]
                                for s in seeds])
            entry = decompose(table, correct, n_boot)
            entry["values"] = table.tolist()
            # what the suite does: one evaluation per pretraining seed (the first eval seed)
            entry["interval_one_eval_seed"] = stats.t_interval(table[:, 0]).to_dict()
            entry["interval_eval_seed_mean"] = stats.t_interval(table.mean(axis=1)).to_dict()
            sd_one = float(np.sqrt(entry["pretrain_var"] + entry["eval_var"]))
            entry["sd_one_difference"] = sd_one
            entry["seeds_needed"] = {str(h): (stats.seeds_needed(sd_one, h) if sd_one > 0 else 2)
                                     for h in (0.5, 1.0, 2.0)}
            paired[name] = entry
        result["paired"] = {"a": a, "b": b, "metrics": paired}
    return result


def markdown(report: dict[str, Any]) -> str:
    """The tables of ``noise_budget.md``."""
    a = report["analysis"]
    design = f", testbed design {report['design']}" if report.get("design") else ""
    lines = [f"# Noise budget ({report['profile']} profile{design})", "",
             f"Command: `{report['command']}`  ", f"Commit: `{report['commit']}`; "
             f"{len(report['seeds'])} pretraining seeds x {len(report['eval_seeds'])} evaluation seeds; "
             f"test split: {report['num_test']} clips; semi-supervised: {report.get('semi_draws', 1)} label "
             "draw(s) averaged per evaluation seed.", "",
             "Standard deviations in accuracy points (square roots of the variance components). "
             "(a) pretraining seed, (b) evaluation seed (weights fixed), (c) test-set sampling "
             "(bootstrap over test clips; binomial beside it). `one run` = sqrt((a)+(b)), the "
             "seed-to-seed SD on this fixed test set.", "",
             "| method | metric | mean | (a) pretrain | (b) eval | (c) test set | (c) binomial | one run |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for method, metrics in a["methods"].items():
        for name, e in metrics.items():
            lines.append(f"| {method} | {name} | {e['mean']:.1f} | {np.sqrt(e['pretrain_var']):.2f} | "
                         f"{np.sqrt(e['eval_var']):.2f} | {np.sqrt(e['test_var']):.2f} | "
                         f"{np.sqrt(e['binomial_var']):.2f} | {e['run_sd']:.2f} |")
    if "paired" in a:
        p = a["paired"]
        lines += ["", f"## Paired difference {p['a']} - {p['b']} (same pretraining and evaluation seed)", "",
                  "| metric | mean diff | (a) pretrain | (b) eval | (c) test set | SD of one diff | "
                  "95 % CI, 1 eval seed/seed | 95 % CI, mean of eval seeds | seeds for ±1 / ±2 |",
                  "|---|---:|---:|---:|---:|---:|---|---|---|"]
        for name, e in p["metrics"].items():
            one, avg = e["interval_one_eval_seed"], e["interval_eval_seed_mean"]
            lines.append(f"| {name} | {e['mean']:+.2f} | {np.sqrt(e['pretrain_var']):.2f} | "
                         f"{np.sqrt(e['eval_var']):.2f} | {np.sqrt(e['test_var']):.2f} | "
                         f"{e['sd_one_difference']:.2f} | {one['mean']:+.1f} ± {one['half_width']:.1f} | "
                         f"{avg['mean']:+.1f} ± {avg['half_width']:.1f} | "
                         f"{e['seeds_needed']['1.0']} / {e['seeds_needed']['2.0']} |")
    lines += ["", "`seeds for ±1 / ±2`: pretraining seeds (one evaluation each) for a 95 % t-interval of "
              "that half-width on the paired difference, from its measured SD (`i2md_lib.stats.seeds_needed`).",
              "The test-set column is not part of the seed spread (the test set is fixed); it is what a "
              "fresh test set of the same size would add.", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="book")
    parser.add_argument("--methods", nargs="+", default=["random_init", "moco3", "cmd"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="pretraining seeds")
    parser.add_argument("--eval-seeds", nargs="+", type=int, default=[0, 1, 2, 3])
    parser.add_argument("--pair", nargs=2, default=["cmd", "moco3"], metavar=("A", "B"),
                        help="paired difference A - B (both must be in --methods)")
    parser.add_argument("--jobs", type=int, default=1, help="pretraining runs side by side (1 thread each)")
    parser.add_argument("--n-boot", type=int, default=2000)
    parser.add_argument("--runs-dir", default=str(runs_root()))
    parser.add_argument("--design", default=None, help="a testbed design of tools/testbed.py (v2, v3) as the "
                        "base of every run (default: the profile alone)")
    parser.add_argument("--semi-draws", type=int, default=1,
                        help="label draws averaged in the semi-supervised number of one evaluation seed")
    parser.add_argument("--out", default=None, help="folder for the report (default results/<profile>/noise)")
    parser.add_argument("--allow-dirty", action="store_true", help="run on uncommitted code (tests only)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    dirty = require_clean(args.allow_dirty)
    if len(args.seeds) < 2 or len(args.eval_seeds) < 2:
        raise SystemExit("need at least 2 pretraining seeds and 2 evaluation seeds")
    pair = tuple(args.pair) if all(m in args.methods for m in args.pair) else None
    profile = args.profile
    code = experiments.git_commit()      # before anything runs: the code that produced the numbers
    started = time.perf_counter()
    base = design_overrides(args.design)
    jobs = [(m, profile, s, args.runs_dir, base) for m in args.methods for s in args.seeds
            if experiments._variants("main", [m])[0].pretrain]
    pretrain_start = time.perf_counter()
    if args.jobs > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            for done in pool.map(_pretrain, jobs):
                print(f"pretrained {done}", file=sys.stderr)
    else:
        for job in jobs:
            print(f"pretrained {_pretrain(job)}", file=sys.stderr)
    pretrain_seconds = time.perf_counter() - pretrain_start
    measured: dict[str, dict[int, dict[str, Any]]] = {}
    eval_seconds: dict[str, list[float]] = {}
    for method in args.methods:
        measured[method] = {}
        for seed in args.seeds:
            cfg, model = experiments.trained_model("main", method, seed, profile,
                                                   runs_root=Path(args.runs_dir), progress=False, base=base)
            measured[method][seed] = measure_model(model, cfg, args.eval_seeds, args.semi_draws)
            eval_seconds.setdefault(method, []).append(round(measured[method][seed]["eval_seconds"], 1))
            print(f"evaluated {method}/seed{seed}: "
                  + ", ".join(f"{k} {np.round(v, 1).tolist()}" for k, v in measured[method][seed]["values"].items()),
                  file=sys.stderr)
    analysis = analyse(measured, args.seeds, pair, args.n_boot)
    any_run = next(iter(next(iter(measured.values())).values()))
    report = {
        "tool": "tools/noise_budget.py", "profile": profile,
        "command": recorded_command("tools/noise_budget.py", argv),
        **code, "dirty_paths": dirty, "hardware": experiments.hardware(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seeds": list(args.seeds), "eval_seeds": list(args.eval_seeds), "methods": list(args.methods),
        "semi_fraction": SEMI_FRACTION, "semi_draws": args.semi_draws, "design": args.design,
        "num_test": int(any_run["correct"]["knn_joint"].shape[-1]),
        "pretrain_seconds_all_jobs": round(pretrain_seconds, 1), "pretrain_jobs": args.jobs,
        "eval_seconds": eval_seconds, "total_seconds": round(time.perf_counter() - started, 1),
        "configs": {m: method_config(m, profile, args.seeds[0], base).to_dict() for m in args.methods},
        "analysis": analysis,
    }
    out = Path(args.out) if args.out else ROOT / "results" / profile / "noise"
    out.mkdir(parents=True, exist_ok=True)
    (out / "noise_budget.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "noise_budget.md").write_text(markdown(report))
    print(f"wrote {out / 'noise_budget.json'} and {out / 'noise_budget.md'}", file=sys.stderr)
    return report


if __name__ == "__main__":
    main()
