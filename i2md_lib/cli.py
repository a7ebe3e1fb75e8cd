"""Command line: ``python -m i2md_lib <command> ...`` (also installed as ``i2md``).

Commands::

    pretrain     --run-dir DIR [--profile smoke|book|full] [--method cmd] [--config FILE]
                 [--set KEY=VALUE ...] [--no-resume] [--max-steps N] [--allow-change KEY ...]
                 [--dist-bn global|shuffle]
    evaluate     --run-dir DIR [--protocols knn linear semi finetune] [--modalities ...]
                 [--set eval.KEY=VALUE | data.KEY=VALUE ...] [--device cuda] [--output FILE]
    config       [--profile ...] [--method ...] [--config FILE] [--set KEY=VALUE ...]
    prepare-ntu  RAW_DIR OUT_DIR [--version ntu60|ntu120] [--benchmarks ...]
    prepare-pku  ROOT OUT_DIR [--version pku1|pku2] [--benchmarks ...]
    experiments  --suite main|ablation [--profile ...] [--seeds 0 1 2 | --target] [--variants ...] [--jobs N]
    reproduce    RESULT_FILE [--runs DIR] [--output FILE]   (exit code 1 when a number differs)

Messages of the library (logger ``i2md_lib``, level INFO and above: e.g. how many clips
are shorter than the window) go to stderr, one line each.

Errors (a bad config value or flag, a missing or malformed file) print one line
``error: <message>`` on stderr, naming the file or config key, and exit with code 2;
``--debug`` (before or after the command name) shows the traceback instead.

Several GPUs (or CPU processes): ``torchrun --nproc_per_node=N -m i2md_lib pretrain ...``;
``pretrain.batch_size`` is the global batch (see :mod:`i2md_lib.distributed`). Only
rank 0 prints and writes files. ``evaluate`` runs in one process.

The config is resolved in this order, later wins: the profile (``--profile``, else
``$I2MD_PROFILE``, else ``book``), the YAML file of ``--config`` (a run's
``config.yaml`` or any nested/dotted subset of keys), ``--method``, then each
``--set`` (the value is parsed as YAML: ``--set pretrain.lr_milestones=[300,400]``).

Adding a command: write ``add_<name>_command(subparsers)`` that creates its parser
and sets ``run=<function(args) -> exit code>``, and call it in :func:`build_parser`.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import yaml

from .config import DIST_BN_MODES, METHODS, PROFILES, ExperimentConfig, _flatten, launch_environment

#: Exit code of a command that stopped on an error (bad input, config or data), as argparse's.
ERROR_EXIT_CODE = 2


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m i2md_lib`` parser with one subparser per command."""
    parser = argparse.ArgumentParser(
        prog="python -m i2md_lib",
        description="Self-supervised skeleton action representation learning (CMD, I2MD).")
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_pretrain_command(commands)
    add_evaluate_command(commands)
    add_config_command(commands)
    add_prepare_ntu_command(commands)
    add_prepare_pku_command(commands)
    add_prepare_msr_command(commands)
    add_experiments_command(commands)
    add_reproduce_command(commands)
    for sub in commands.choices.values():   # --debug also after the command name
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                         help="show the Python traceback of an error")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit code.

    Bad arguments exit through argparse (usage and message, code 2). Any error of the
    command itself -- a bad config value, a missing or malformed file, a run that
    stopped on a non-finite loss -- prints ``error: <message>`` on stderr and returns
    :data:`ERROR_EXIT_CODE`; ``--debug`` shows the traceback instead.
    """
    args = build_parser().parse_args(argv)
    show_library_log()
    try:
        return int(args.run(args) or 0)
    except Exception as e:  # noqa: BLE001  (the command line reports every error as one message)
        if args.debug:
            raise
        print(f"error: {error_message(e)}", file=sys.stderr)
        return ERROR_EXIT_CODE


class _StderrHandler(logging.Handler):
    """Writes each record as one line to the ``sys.stderr`` of the moment (tests swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), file=sys.stderr)


def show_library_log() -> None:
    """Show the ``i2md_lib`` logger's INFO messages on stderr (once per process)."""
    logger = logging.getLogger("i2md_lib")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        logger.addHandler(_StderrHandler())
    logger.setLevel(logging.INFO)


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An argparse type: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def one_line(error: BaseException) -> str:
    """The text of ``error`` on one line (YAML errors span several)."""
    return " ".join(str(error).split())


def error_message(error: BaseException) -> str:
    """The message of ``error``: its text (errors of this library name the file or key), with
    the exception's type where the text alone says too little (a bug: rerun with --debug)."""
    text = str(error).strip()
    if isinstance(error, (ValueError, OSError, RuntimeError)) and text:
        return text
    return f"{type(error).__name__}: {text or 'no message'} (rerun with --debug for the traceback)"


# -- config arguments shared by the commands -------------------------------------
class ConfigArgumentError(ValueError):
    """A bad ``--profile``/``--config``/``--set`` argument."""


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``--profile``, ``--config``, ``--method`` and ``--set``; read by :func:`config_from_args`."""
    group = parser.add_argument_group("configuration")
    group.add_argument("--profile", choices=PROFILES, default=None,
                       help="scale profile (default: $I2MD_PROFILE, else book)")
    group.add_argument("--config", type=Path, default=None, metavar="FILE",
                       help="YAML file of config values (e.g. a run's config.yaml)")
    group.add_argument("--method", default=None, choices=METHODS,
                       help="pretraining method (default: the profile's, cmd)")
    group.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override one dotted config key, value parsed as YAML (repeatable)")


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    """The config the arguments of :func:`add_config_arguments` describe."""
    profile, overrides = args.profile, {}
    if args.config is not None:
        file_values = _read_yaml_mapping(args.config)
        profile = profile or file_values.pop("profile", None)
        file_values.pop("profile", None)
        overrides.update(dict(_flatten(file_values)))
    if args.method:
        overrides["pretrain.method"] = args.method
    overrides.update(parse_set(item) for item in args.overrides)
    try:
        return ExperimentConfig.for_profile(profile, overrides)   # values are fitted to their fields
    except ValueError as e:
        raise ConfigArgumentError(str(e)) from e


def parse_set(item: str) -> tuple[str, Any]:
    """``KEY=VALUE`` of ``--set`` -> ``(key, value parsed as YAML)``."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigArgumentError(f"--set expects KEY=VALUE, got {item!r}")
    try:
        return key.strip(), yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise ConfigArgumentError(f"--set {item!r}: the value is not valid YAML ({one_line(e)})") from e


def _read_yaml_mapping(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigArgumentError(f"--config {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigArgumentError(f"--config {path}: not valid YAML: {one_line(e)}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigArgumentError(f"--config {path}: expected a mapping of config keys, got {type(data).__name__}")
    return data


# -- commands ---------------------------------------------------------------------
def add_pretrain_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("pretrain", help="self-supervised pretraining (resumes by default)")
    add_config_arguments(parser)
    parser.add_argument("--run-dir", type=Path, required=True, metavar="DIR",
                        help="folder for config.yaml, log.csv and checkpoint.pt")
    parser.add_argument("--no-resume", action="store_true",
                        help="start over even if DIR holds a checkpoint")
    parser.add_argument("--max-steps", type=positive_int, default=None, metavar="N",
                        help="stop (and checkpoint) after N optimizer steps in total")
    parser.add_argument("--allow-change", action="append", default=[], metavar="KEY",
                        help="config key that may differ from the checkpoint's on resume (repeatable)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--dist-bn", choices=DIST_BN_MODES, default=None,
                        help="BatchNorm under torchrun (= --set pretrain.dist_bn=...): statistics of the "
                             "global batch (default; the same numbers as one process) or MoCo's shuffle BN")
    parser.set_defaults(run=run_pretrain)


def run_pretrain(args: argparse.Namespace) -> int:
    from . import distributed
    from .train import pretrain  # lazy: keeps `--help` and `config` fast

    cfg = config_from_args(args)
    if args.dist_bn:
        cfg = cfg.replace({"pretrain.dist_bn": args.dist_bn})
    known = set(dict(_flatten(cfg.to_dict())))
    unknown = [key for key in args.allow_change if key not in known]
    if unknown:
        raise ConfigArgumentError(f"--allow-change {unknown[0]}: unknown config key")
    main_rank = launch_environment()["rank"] == 0
    if main_rank:
        print(f"pretraining {cfg.pretrain.method} ({cfg.profile} profile, {cfg.data.dataset}) into {args.run_dir}",
              file=sys.stderr)
    start = time.perf_counter()
    try:
        history = pretrain(cfg, args.run_dir, resume=not args.no_resume, max_steps=args.max_steps,
                           progress=not args.no_progress, allow_changes=args.allow_change)
    finally:
        distributed.shutdown()
    seconds = time.perf_counter() - start
    if history and main_rank:
        last = history[-1]
        print(f"step {last['step']} (epoch {last['epoch'] + 1}/{cfg.pretrain.epochs}): "
              f"total loss {last['total']:.4f}; {seconds:.1f} s in this call")
    return 0


def add_config_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("config", help="print the resolved config as YAML")
    add_config_arguments(parser)
    parser.set_defaults(run=run_config)


def run_config(args: argparse.Namespace) -> int:
    from .train import config_to_yaml

    print(config_to_yaml(config_from_args(args)), end="")
    return 0


def add_evaluate_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("evaluate", help="evaluate a pretrained run's encoders (kNN, linear, ...)")
    parser.add_argument("--run-dir", type=Path, required=True, metavar="DIR",
                        help="a pretraining run folder (or give a checkpoint file)")
    parser.add_argument("--protocols", nargs="+", default=["knn", "linear"],
                        choices=("knn", "linear", "semi", "finetune"), help="default: knn linear")
    parser.add_argument("--modalities", nargs="+", default=None, metavar="MODALITY",
                        help="streams to evaluate (default: all the run trained)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="change an eval.* or data.* key of the run's config (repeatable)")
    parser.add_argument("--device", default=None, metavar="DEVICE",
                        help="cpu, cuda, cuda:1, ... (default: the run's pretrain.device, else CUDA when available)")
    parser.add_argument("--fast-linear", action="store_true",
                        help="linear probe on precomputed centre-crop features (no training crops)")
    parser.add_argument("--output", type=Path, default=None, metavar="FILE",
                        help="JSON file for the result rows (default: DIR/eval_results.json)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(run=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    import json

    from .evaluate import evaluate_encoders, results_table
    from .models.moco import encoders_for_eval
    from .models.pretrained import check_same_layout, load_pretrained
    from .utils import atomic_write

    if launch_environment()["world_size"] > 1:
        raise ConfigArgumentError("evaluate runs in one process: start it with `python -m i2md_lib evaluate`, "
                                  "not torchrun (use --device to pick a GPU)")
    cfg, model = load_pretrained(args.run_dir)
    overrides = {}
    for item in args.overrides:
        key, value = parse_set(item)
        if key.split(".")[0] not in ("eval", "data"):
            raise ConfigArgumentError(f"evaluate --set takes eval.KEY=VALUE or data.KEY=VALUE, got {item!r}")
        overrides[key] = value
    try:
        trained, cfg = cfg, cfg.replace(overrides)
        check_same_layout(args.run_dir, trained, cfg)
    except ValueError as e:
        raise ConfigArgumentError(str(e)) from e
    encoders = encoders_for_eval(model)
    if args.modalities:
        unknown = sorted(set(args.modalities) - set(encoders))
        if unknown:
            raise ConfigArgumentError(f"the run has no {unknown} stream(s); it trained {sorted(encoders)}")
        encoders = {m: encoders[m] for m in args.modalities}
    results = evaluate_encoders(encoders, cfg, args.protocols, augment=not args.fast_linear,
                                device=args.device, progress=not args.no_progress)
    rows = results_table(results)
    run_dir = args.run_dir if args.run_dir.is_dir() else args.run_dir.parent
    output = args.output or run_dir / "eval_results.json"
    atomic_write(output, lambda tmp: tmp.write_text(json.dumps(rows, indent=1, default=str)))
    for row in rows:
        print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    print(f"results written to {output}", file=sys.stderr)
    return 0


def add_prepare_ntu_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("prepare-ntu", help="raw NTU RGB+D .skeleton files -> the CMD array layout")
    parser.add_argument("raw_dir", type=Path, help="folder of SsssCcccPpppRrrrAaaa.skeleton files")
    parser.add_argument("out_dir", type=Path, help="output folder (then use it as data.root)")
    parser.add_argument("--version", choices=("ntu60", "ntu120"), default="ntu60")
    parser.add_argument("--benchmarks", nargs="+", default=None,
                        help="default: xsub xview (ntu60) or xsub xset (ntu120)")
    parser.set_defaults(run=run_prepare_ntu)


def run_prepare_ntu(args: argparse.Namespace) -> int:
    from .data.ntu import prepare_ntu

    prepare_ntu(args.raw_dir, args.out_dir, args.version, args.benchmarks, progress=True, verbose=True)
    return 0


def add_prepare_pku_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("prepare-pku", help="PKU-MMD skeleton and label files -> the CMD array layout")
    parser.add_argument("root", type=Path, help="PKU-MMD folder (skeleton/, label/ and the split files)")
    parser.add_argument("out_dir", type=Path, help="output folder (then use it as data.root)")
    parser.add_argument("--version", choices=("pku1", "pku2"), default="pku2")
    parser.add_argument("--benchmarks", nargs="+", default=["xsub", "xview"])
    parser.set_defaults(run=run_prepare_pku)


def run_prepare_pku(args: argparse.Namespace) -> int:
    from .data.pku import prepare_pku

    prepare_pku(args.root, args.out_dir, args.version, args.benchmarks, progress=True, verbose=True)
    return 0


def add_prepare_msr_command(commands: argparse._SubParsersAction) -> None:
    from .data.msr import BENCHMARKS, MAX_FRAMES  # no torch import

    parser = commands.add_parser("prepare-msr",
                                 help="MSR Action3D aAA_sSS_eEE_skeleton3D.txt files -> the CMD array layout")
    parser.add_argument("raw_dir", type=Path, help="folder of aAA_sSS_eEE_skeleton3D.txt files")
    parser.add_argument("out_dir", type=Path, help="output folder (then use it as data.root with data.dataset=msr)")
    parser.add_argument("--benchmarks", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    parser.add_argument("--max-frames", type=positive_int, default=MAX_FRAMES,
                        help=f"stored frames per clip; longer clips are cut (default {MAX_FRAMES})")
    parser.set_defaults(run=run_prepare_msr)


def run_prepare_msr(args: argparse.Namespace) -> int:
    from .data.msr import prepare_msr

    prepare_msr(args.raw_dir, args.out_dir, args.benchmarks, args.max_frames, progress=True, verbose=True)
    return 0


def add_experiments_command(commands: argparse._SubParsersAction) -> None:
    from .experiments import SUITES  # no torch import

    parser = commands.add_parser(
        "experiments", help="run a suite of method variants x seeds and write result files")
    parser.add_argument("--suite", required=True, choices=sorted(SUITES))
    parser.add_argument("--profile", choices=PROFILES, default=None,
                        help="scale profile (default: $I2MD_PROFILE, else book)")
    parser.add_argument("--seeds", type=non_negative_int, nargs="+", default=None,
                        help="default: the seeds the book shows (experiments.SUITE_SEEDS; 0 at smoke)")
    parser.add_argument("--target", action="store_true",
                        help="run the seeds the noise budget asks for (experiments.TARGET_SEEDS)")
    parser.add_argument("--variants", nargs="+", default=None, help="default: the whole suite")
    parser.add_argument("--jobs", type=positive_int, default=1, help="runs side by side (one thread each)")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default: results/)")
    parser.add_argument("--runs", type=Path, default=None, help="run folders (default: runs/)")
    parser.add_argument("--rerun", action="store_true", help="rerun even if a current result exists")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one dotted config key in every run, e.g. data.benchmark=xsub_val "
                             "(value parsed as YAML; repeatable)")
    parser.set_defaults(run=run_experiments)


def run_experiments(args: argparse.Namespace) -> int:
    from . import experiments, report

    kwargs = {k: v for k, v in (("out_root", args.out), ("runs_root", args.runs)) if v is not None}
    if args.seeds is not None and args.target:
        raise ValueError("--seeds and --target choose the seeds twice; give one of them")
    seeds = args.seeds if args.seeds is not None else experiments.default_seeds(args.suite, args.profile,
                                                                                 target=args.target)
    records = experiments.run_suite(args.suite, args.profile, seeds, args.variants, jobs=args.jobs,
                                    rerun=args.rerun, overrides=dict(map(parse_set, args.overrides)), **kwargs)
    print(report.summary_table(records).to_string())
    return 0


def add_reproduce_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "reproduce", help="re-run the run of one result file from scratch and compare its numbers")
    parser.add_argument("result_file", type=Path, help="results/<profile>/<suite>/<variant>/seed<k>.json")
    parser.add_argument("--runs", type=Path, default=None,
                        help="where the fresh run folder goes (default: a temporary folder)")
    parser.add_argument("--output", type=Path, default=None,
                        help="also write the comparison (both commits and hardware, every value) as JSON")
    parser.set_defaults(run=run_reproduce)


def run_reproduce(args: argparse.Namespace) -> int:
    import json
    import shlex

    from .reproduce import reproduce, summary_lines
    from .utils import atomic_write

    report = reproduce(args.result_file, args.runs)
    report["command"] = "python -m i2md_lib " + " ".join(map(shlex.quote, sys.argv[1:]))
    print("\n".join(summary_lines(report)))
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(args.output, lambda tmp: tmp.write_text(json.dumps(report, indent=1)))
    return 0 if report["identical"] else 1
