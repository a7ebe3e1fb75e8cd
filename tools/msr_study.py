"""Real recordings: the book's methods on MSR Action3D (Li, Zhang and Liu, CVPR Workshops 2010),
and the optimisation and training-length study on both testbeds.

Runs the main suite's variants (``experiments.SUITES["main"]``) on MSR Action3D with the settings of
:data:`MSR_BOOK` (overrides on top of the ``book`` profile) and, optionally, one of the studied
:data:`SETTINGS` (the optimisation and training-length study), through ``experiments.run_suite``:
one result file per variant and seed, with command, config, commit and hardware, under

    results/msr/<part>/<setting>/book/main/<variant>/seed<k>.json

``--part val`` runs on ``xsub_val`` (the training subjects, subject 9 held out): every choice of
settings is made there. ``--part test`` runs on the cross-subject benchmark ``xsub`` (odd subjects
train, even subjects test), once the settings are fixed. The prepared arrays must be in
``data/msr`` (``python -m i2md_lib prepare-msr RAW data/msr``; the files are not part of the
repository) -- or pass ``--raw RAW`` and this tool prepares them first.

    OMP_NUM_THREADS=1 python tools/msr_study.py --part val --seeds 0 1 2 --variants moco3 cmd i2md

``--testbed synthetic`` runs the same settings on the synthetic testbed v3 (the ``book`` profile as
it is, its validation benchmark ``xsub_val``), writing under ``results/book/study/``.

It refuses to run on uncommitted changes under ``i2md_lib/`` or ``tools/`` (``--allow-dirty`` for tests).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from i2md_lib import experiments  # noqa: E402
from i2md_lib.config import runs_root  # noqa: E402
from run_records import recorded_command, require_clean  # noqa: E402

#: Where the prepared arrays live (relative to the repository root, which the tool runs from).
DATA_ROOT = "data/msr"
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
    "data.root": DATA_ROOT,
    "data.max_frames": 200,
    "pretrain.queue_size": 128,
    "pretrain.batch_size": 32,
    "pretrain.cmd_topk": 64,
    "pretrain.imd_topk": 64,
    "pretrain.dna_max_neighbors": 8,
    "eval.label_fractions": (0.1, 0.2),
}
#: The optimisation and training-length study: each setting changes MSR_BOOK (or the book profile)
#: in the keys it names. "book" is the book profile's optimisation (lr 0.05, key momentum 0.99),
#: "reference" the CMD reference's (lr 0.01, momentum 0.999), the other two the crossings;
#: "long4x" trains four times as many steps with the book's optimisation.
SETTINGS: dict[str, dict[str, Any]] = {
    "book": {},
    "reference": {"pretrain.lr": 0.01, "pretrain.momentum": 0.999},
    "lr0.01": {"pretrain.lr": 0.01},
    "m0.999": {"pretrain.momentum": 0.999},
    "long4x": {"pretrain.epochs": 800, "pretrain.lr_milestones": (640,)},
}
PARTS = {"val": "xsub_val", "test": "xsub"}
#: ``{testbed: (overrides on the book profile, results folder under results/)}``
TESTBEDS: dict[str, tuple[dict[str, Any], str]] = {"msr": (MSR_BOOK, "msr"), "synthetic": ({}, "book/study")}


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=sorted(PARTS), required=True)
    parser.add_argument("--testbed", choices=sorted(TESTBEDS), default="msr")
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="book")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--variants", nargs="+", default=None, help="default: the whole main suite")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--raw", default=None, help="MSR Action3D skeleton folder to prepare into data/msr first")
    parser.add_argument("--profile", default="book", help="profile under the MSR settings (tests: smoke)")
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                        help="more overrides (tests: smaller sizes, another data.root)")
    parser.add_argument("--out", default=None, help="default: results/msr (synthetic: results/book/study)")
    parser.add_argument("--runs", default=None, help="default: runs/msr (synthetic: runs/study)")
    parser.add_argument("--allow-dirty", action="store_true")
    args = parser.parse_args(argv)
    import torch

    from i2md_lib.cli import parse_set

    torch.set_num_threads(1)
    require_clean(args.allow_dirty)
    os.chdir(ROOT)                       # data.root is relative to the repository
    extra = dict(map(parse_set, args.extra))
    if args.raw:
        from i2md_lib.data.msr import prepare_msr

        prepare_msr(args.raw, extra.get("data.root", DATA_ROOT), verbose=True)
    command = recorded_command("tools/msr_study.py", argv)
    base, folder = TESTBEDS[args.testbed]
    out = Path(args.out or ROOT / "results" / folder) / args.part / args.setting
    runs = Path(args.runs or runs_root() / folder.replace("book/", "")) / args.part / args.setting
    overrides = {**SETTINGS[args.setting], "data.benchmark": PARTS[args.part], **extra}
    records = experiments.run_suite("main", args.profile, args.seeds, args.variants, out_root=out,
                                    runs_root=runs, jobs=args.jobs, base=base, overrides=overrides,
                                    command=command)
    print(f"{len(records)} result files under {out}")
    return records


if __name__ == "__main__":
    main()
