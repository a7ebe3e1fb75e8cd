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
    parser.add_argument("--part", choices=sorted(studies.PARTS), default=None)
    parser.add_argument("--data-card", action="store_true",
                        help="only write results/msr/data_card.json (what data/msr holds, no coordinates)")
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
    if args.part is None and not args.data_card:
        parser.error("give --part (or --data-card)")
    import torch

    from i2md_lib.cli import parse_set

    torch.set_num_threads(1)
    require_clean(args.allow_dirty)
    os.chdir(ROOT)                       # data.root is relative to the repository
    extra = dict(map(parse_set, args.extra))
    if args.raw:
        from i2md_lib.data.msr import prepare_msr

        prepare_msr(args.raw, extra.get("data.root", studies.MSR_DATA_ROOT), verbose=True)
    if args.data_card:
        return [write_data_card(argv)]
    records = studies.run_study(args.testbed, args.part, args.setting, args.seeds, args.variants, args.profile,
                                out_root=args.out, runs=args.runs, extra=extra, jobs=args.jobs,
                                command=recorded_command("tools/msr_study.py", argv))
    print(f"{len(records)} result files under {args.out or studies.study_folder(args.testbed, args.part, args.setting)}")
    return records


def write_data_card(argv: Sequence[str] | None) -> dict[str, Any]:
    """``results/msr/data_card.json``: :func:`studies.msr_data_card` with command, commit and hardware."""
    import json
    import time

    from i2md_lib import experiments

    card = {"command": recorded_command("tools/msr_study.py", argv), **experiments.git_commit(),
            "hardware": experiments.hardware(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **studies.msr_data_card()}
    path = ROOT / "results" / "msr" / "data_card.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(card, indent=1) + "\n")
    print(f"wrote {path}")
    return card


if __name__ == "__main__":
    main()
