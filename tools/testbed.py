"""Does pretraining matter on a testbed design? Random init vs moco3 vs cmd at book size, per seed.

Runs the main suite's ``random_init``, ``moco3`` and ``cmd`` variants with one testbed
design (:data:`DESIGNS`, overrides on top of the ``book`` profile) through
``experiments.run_suite`` -- one result file per variant and seed, with command, config,
commit, hardware and timings -- on

* ``xsub_val`` (design decisions: the xsub training subjects only, every 4th held out), and
* ``xsub`` (the final check on the test split, run once after the design was fixed),

then writes ``summary.json`` and ``summary.md``: per seed, the gap between the best
pretrained method and random init on kNN joint (top-1 at k=1) and linear joint, the
pretraining and evaluation seconds, the split sizes, and linear probes on the per-clip
mean pose and on one random frame of the validation split.

    OMP_NUM_THREADS=1 python tools/testbed.py --design v3 --seeds 0 1 --jobs 2 --parts val test

Designs: ``v1`` (the book's testbed until v3 replaced it: version-1 data without distortions,
40 epochs; ``results/book/testbed_v1/``), ``v2`` (synthetic version 2: 40 classes in families,
``results/book/testbed_v2/``; ``tools/testbed_v2.py`` runs it under its recorded command) and
``v3`` (version-1 classes, residual view and build distortions, 200 pretraining epochs;
``results/book/testbed_v3/``). The book profile *is* testbed v3 now, so ``--design v3`` adds
nothing to it; its main suite, search and noise budget moved to ``results/book/``.

It refuses to run on uncommitted changes under ``i2md_lib/`` or ``tools/`` (``--allow-dirty``
for tests).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from i2md_lib import experiments  # noqa: E402
from i2md_lib.config import runs_root  # noqa: E402
from run_records import recorded_command, require_clean  # noqa: E402

#: Version-2 data at book size: 39 subjects (26 train / 13 test, xsub_val: 20 / 6), one
#: take per subject, camera and class; 15 pretraining epochs (the clips are 4x v1's).
V2_BOOK: dict[str, Any] = {
    "data.synthetic.version": 2,
    "data.synthetic.num_subjects": 39,
    "data.synthetic.test_every": 3,
    "data.synthetic.repetitions": 1,
    "pretrain.epochs": 15,
    "pretrain.lr_milestones": (12,),
}
#: Version-1 classes and sizes; each clip keeps a residual rotation (up to 0.5 rad) and
#: per-axis stretch (+-25 %) after the normalisation (``synthetic.residual_distortions``);
#: 200 pretraining epochs (lr step at 160) instead of the book profile's 40; ten label draws
#: of the semi-supervised protocol instead of three (with 1 % labels, 13 clips, one draw's SD
#: is about 4 points: the draws, not the pretraining, made the semi 1 % column noisy).
V3_BOOK: dict[str, Any] = {
    "data.synthetic.residual_rotation": 0.5,
    "data.synthetic.axis_stretch": 0.25,
    "pretrain.epochs": 200,
    "pretrain.lr_milestones": (160,),
    "eval.semi_seeds": tuple(range(10)),
    # the winner of the search under this design (results/book/testbed_v3/val/book/search: "w0.5",
    # by less than the noise of two seeds); only i2md and cmd_dna read them (config.METHOD_KEYS)
    "pretrain.cluster_weight": 0.5,
    "pretrain.imd_weight": 0.5,
}
#: Version 1 as the book used it until testbed v3 became its profile: no residual distortions,
#: 40 epochs, three label draws, DNA and IMD weights 1. ``--design v1`` rebuilds the files of
#: ``results/book/testbed_v1/`` (the book's main suite, ablations, search and noise budget of
#: that time, each with the command and commit that made it).
V1_BOOK: dict[str, Any] = {
    "data.synthetic.residual_rotation": 0.0,
    "data.synthetic.axis_stretch": 0.0,
    "pretrain.epochs": 40,
    "pretrain.lr_milestones": (32,),
    "eval.semi_seeds": (0, 1, 2),
    "pretrain.cluster_weight": 1.0,
    "pretrain.imd_weight": 1.0,
}
#: ``{design: (overrides, title of the summary)}``
DESIGNS: dict[str, tuple[dict[str, Any], str]] = {
    "v1": (V1_BOOK, "Synthetic v1 at book size (the book before testbed v3): does pretraining matter?"),
    "v2": ({**V1_BOOK, **V2_BOOK}, "Synthetic v2 at book size: does pretraining matter?"),
    "v3": (V3_BOOK, "Testbed v3 (residual distortions, 200 epochs) at book size: does pretraining matter?"),
}
PARTS = {"val": "xsub_val", "test": "xsub"}
#: The suites a design can run: the search on the validation split only (its rows carry
#: ``xsub_val`` themselves); the summary reads the main suite.
SUITES = ("main", "ablation", "search")
VARIANTS = ("random_init", "moco3", "cmd")
PRETRAINED = ("moco3", "cmd")


def headline(record: dict[str, Any]) -> dict[str, float]:
    """kNN joint (top-1, k=1) and linear joint top-1 of one result record."""
    rows = {(m["protocol"], m["modality"]): m for m in record["metrics"] if "fraction" not in m}
    linear = rows.get(("linear_fast", "joint")) or rows[("linear", "joint")]
    return {"knn_joint": rows[("knn", "joint")]["top1@k=1"], "linear_joint": linear["top1"]}


def pose_probes(overrides: dict[str, Any], benchmark: str, seed: int = 0) -> dict[str, float]:
    """Logistic-regression accuracy (%) on the per-clip mean pose and on one random frame."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from i2md_lib.config import ExperimentConfig
    from i2md_lib.data.datasets import load_arrays

    cfg = ExperimentConfig.for_profile("book", {**overrides, "data.benchmark": benchmark})
    train, test = load_arrays(cfg.data, "train"), load_arrays(cfg.data, "val")
    rng = np.random.default_rng(seed)

    def features(split, kind: str) -> np.ndarray:
        data, frames = np.asarray(split.data), split.num_frame
        if kind == "mean pose":
            return np.stack([data[i, :, :frames[i]].mean(axis=1).ravel() for i in range(len(data))])
        return np.stack([data[i, :, rng.integers(0, frames[i])].ravel() for i in range(len(data))])

    out = {}
    for kind in ("mean pose", "one frame"):
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
        model.fit(features(train, kind), train.labels)
        out[kind] = float(100.0 * model.score(features(test, kind), test.labels))
    return out


def summarise(records: dict[str, list[dict[str, Any]]], seeds: Sequence[int]) -> dict[str, Any]:
    """Per part and seed: every variant's numbers, the best pretrained one and its gap."""
    out: dict[str, Any] = {}
    for part, recs in records.items():
        by = {(r["variant"], r["seed"]): r for r in recs}
        rows = []
        for seed in seeds:
            values = {v: headline(by[v, seed]) for v in VARIANTS}
            row: dict[str, Any] = {"seed": seed, **{v: values[v] for v in VARIANTS}}
            for metric in ("knn_joint", "linear_joint"):
                best = max(PRETRAINED, key=lambda v: values[v][metric])
                row[f"gap_{metric}"] = values[best][metric] - values["random_init"][metric]
                row[f"best_{metric}"] = best
            row["pretrain_seconds"] = {v: by[v, seed]["pretrain_seconds"] for v in PRETRAINED}
            row["eval_seconds"] = {v: by[v, seed]["eval_seconds"] for v in VARIANTS}
            rows.append(row)
        first = by[VARIANTS[0], seeds[0]]
        knn = [m for m in first["metrics"] if m["protocol"] == "knn"][0]
        out[part] = {"benchmark": PARTS[part], "num_train": knn["num_gallery"], "num_test": knn["num_query"],
                     "seeds": rows}
    return out


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# {DESIGNS[report.get('design', 'v2')][1]}", "",
             f"Command: `{report['command']}`  ", f"Commit: `{report['commit']}`; overrides on the book profile: "
             f"`{json.dumps(report['overrides'])}`.", "",
             "Top-1 accuracy (%) of the joint stream; gap = best of moco3/cmd minus random init "
             "(the target was >= 20 points on both).", ""]
    for part, entry in report["summary"].items():
        lines += [f"## {part} ({entry['benchmark']}: {entry['num_train']} training clips, "
                  f"{entry['num_test']} evaluation clips)", "",
                  *([f"Summarised by `{entry['command']}` at `{entry['commit']}` (each result file records the "
                     "command and commit that made it).", ""] if "command" in entry else []),
                  "| seed | random kNN | moco3 kNN | cmd kNN | gap kNN | random linear | moco3 linear | "
                  "cmd linear | gap linear | cmd pretrain s | eval s (cmd) |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in entry["seeds"]:
            lines.append(
                f"| {r['seed']} | {r['random_init']['knn_joint']:.1f} | {r['moco3']['knn_joint']:.1f} | "
                f"{r['cmd']['knn_joint']:.1f} | {r['gap_knn_joint']:+.1f} | {r['random_init']['linear_joint']:.1f} | "
                f"{r['moco3']['linear_joint']:.1f} | {r['cmd']['linear_joint']:.1f} | {r['gap_linear_joint']:+.1f} | "
                f"{r['pretrain_seconds']['cmd']:.0f} | {r['eval_seconds']['cmd']:.0f} |")
        lines.append("")
    if report.get("probes"):
        lines += ["## Probes on the validation split (logistic regression)", "",
                  "| input | top-1 % |", "|---|---:|"]
        lines += [f"| {k} | {v:.1f} |" for k, v in report["probes"].items()]
        lines.append("")
    lines += [f"Pretraining ran {report['jobs']} job(s) side by side, one torch thread each; seconds "
              "are each run's own wall time.", ""]
    return "\n".join(lines)


def chosen_variants(suite: str, requested: Sequence[str] | None) -> list[str]:
    """The variants of ``suite`` to run, in the suite's order: ``requested`` (``["all"]``: every
    one; default: the whole suite). For ``main`` the three the summary reads (:data:`VARIANTS`)
    are always among them, and they are the default."""
    names = [v.name for v in experiments.SUITES[suite]]
    if requested == ["all"] or (requested is None and suite != "main"):
        requested = names
    wanted = set(requested or VARIANTS) | (set(VARIANTS) if suite == "main" else set())
    unknown = sorted(wanted - set(names))
    if unknown:
        raise ValueError(f"unknown variants {unknown}: suite {suite!r} has {names}")
    return [n for n in names if n in wanted]


def _keep_other_parts(path: Path, design: str, overrides: dict[str, Any], summary: dict[str, Any],
                      probes: dict[str, float]) -> tuple[dict[str, Any], dict[str, float]]:
    """``summary`` plus the parts an earlier run of the same design and ``overrides`` (as the
    report records them) wrote to ``path`` and this run did not redo (each part records its own
    command and commit), in :data:`PARTS` order."""
    try:
        previous = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return summary, probes
    same = previous.get("design") == design and previous.get("overrides") == overrides
    if not same:
        return summary, probes
    merged = {**previous.get("summary", {}), **summary}
    return {p: merged[p] for p in PARTS if p in merged}, probes or previous.get("probes", {})


def main(argv: Sequence[str] | None = None, design: str | None = None,
         tool: str = "tools/testbed.py") -> dict[str, Any]:
    """Run the design (``--design``, or ``design`` fixed by an entry point such as
    ``tools/testbed_v2.py``, which records itself as ``tool``) and write the summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    if design is None:
        parser.add_argument("--design", choices=sorted(DESIGNS), default="v3")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--parts", nargs="+", choices=sorted(PARTS), default=None,
                        help="default: val test (the search: val)")
    parser.add_argument("--suite", choices=SUITES, default="main",
                        help="suite to run under the design (the summary is written for main only)")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--variants", nargs="+", default=None,
                        help="variants to run, or 'all' (main suite default: random_init moco3 cmd, which "
                             "the summary always reads; other suites: all)")
    parser.add_argument("--profile", default="book", help="profile under the design's overrides (tests: smoke)")
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                        help="more overrides (tests: smaller sizes)")
    parser.add_argument("--out", default=None, help="default: results/book/testbed_<design>")
    parser.add_argument("--runs", default=None, help="default: runs/testbed_<design>")
    parser.add_argument("--allow-dirty", action="store_true")
    args = parser.parse_args(argv)
    design = design or args.design
    args.parts = args.parts or (["val"] if args.suite == "search" else ["val", "test"])
    if args.suite == "search" and args.parts != ["val"]:
        parser.error("the search runs on the validation split only (--parts val)")
    args.out = args.out or str(ROOT / "results" / "book" / f"testbed_{design}")
    args.runs = args.runs or str(runs_root() / f"testbed_{design}")
    import torch

    from i2md_lib.cli import parse_set

    torch.set_num_threads(1)
    dirty = require_clean(args.allow_dirty)
    code = experiments.git_commit()
    extra = dict(map(parse_set, args.extra))
    overrides = {**DESIGNS[design][0], **extra}
    command = recorded_command(tool, argv)
    out, started = Path(args.out), time.perf_counter()
    try:
        variants = chosen_variants(args.suite, args.variants)
    except ValueError as e:
        parser.error(str(e))
    records = {}
    for part in args.parts:
        # the design is the base of every run; a row's own keys win over it (the search's e60)
        split = {} if args.suite == "search" else {"data.benchmark": PARTS[part]}
        records[part] = experiments.run_suite(
            args.suite, args.profile, args.seeds, variants, out_root=out / part, runs_root=Path(args.runs) / part,
            jobs=args.jobs, base=DESIGNS[design][0], overrides={**split, **extra}, command=command)
    if args.suite != "main":
        print(f"{args.suite}: {sum(map(len, records.values()))} result files under {out}")
        return {"suite": args.suite, "records": records}
    probes = pose_probes(overrides, PARTS["val"]) if "val" in args.parts and args.profile == "book" else {}
    summary = summarise(records, args.seeds)
    for entry in summary.values():
        entry.update(command=command, commit=code["commit"])
    recorded = {k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()}
    summary, probes = _keep_other_parts(out / "summary.json", design, recorded, summary, probes)
    report = {"tool": tool, "design": design, "command": command, **code, "dirty_paths": dirty,
              "hardware": experiments.hardware(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "profile": args.profile, "overrides": recorded,
              "jobs": args.jobs, "seeds": list(args.seeds), "total_seconds": round(time.perf_counter() - started, 1),
              "summary": summary, "probes": probes}
    (out / "summary.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "summary.md").write_text(markdown(report))
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
