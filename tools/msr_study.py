"""Real recordings: the book's methods on MSR Action3D (Li, Zhang and Liu, CVPR Workshops 2010),
and the optimisation and training-length study on both testbeds (``i2md_lib.studies``).

Runs the main suite's variants with a testbed (``--testbed msr``: ``studies.MSR_BOOK`` on top of the
``book`` profile; ``--testbed synthetic``: the book profile as it is, testbed v3), one of the studied
settings (``studies.SETTINGS``) and a part, one result file per variant and seed, with command,
config, commit and hardware, under

    results/msr/<part>/<setting>/book/main/<variant>/seed<k>.json      (synthetic: results/book/study/...)

``--part val`` runs on ``xsub_val`` (the training subjects only; MSR: subject 9 held out): every
choice of settings is made there. ``--part test`` runs on the cross-subject benchmark ``xsub`` once
the settings are fixed. The prepared MSR arrays must be in ``data/msr``
(``python -m i2md_lib prepare-msr RAW data/msr``; the files are not part of the repository) -- or
pass ``--raw RAW`` and this tool prepares them first.

    OMP_NUM_THREADS=1 python tools/msr_study.py --part val --seeds 0 1 2 --variants moco3 cmd i2md

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

from i2md_lib import studies  # noqa: E402
from run_records import recorded_command, require_clean  # noqa: E402


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=sorted(studies.PARTS), required=True)
    parser.add_argument("--testbed", choices=sorted(studies.TESTBEDS), default="msr")
    parser.add_argument("--setting", choices=sorted(studies.SETTINGS), default="book")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--variants", nargs="+", default=None, help="default: the whole main suite")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--raw", default=None, help="MSR Action3D skeleton folder to prepare into data/msr first")
    parser.add_argument("--profile", default="book", help="profile under the testbed's settings (tests: smoke)")
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

        prepare_msr(args.raw, extra.get("data.root", studies.MSR_DATA_ROOT), verbose=True)
    records = studies.run_study(args.testbed, args.part, args.setting, args.seeds, args.variants, args.profile,
                                out_root=args.out, runs=args.runs, extra=extra, jobs=args.jobs,
                                command=recorded_command("tools/msr_study.py", argv))
    print(f"{len(records)} result files under {args.out or studies.study_folder(args.testbed, args.part, args.setting)}")
    return records


if __name__ == "__main__":
    main()
