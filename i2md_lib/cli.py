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
    experiments  --suite main|ablation [--profile ...] [--seeds 0 1 2] [--variants ...] [--jobs N]

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
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import yaml

from .config import PROFILES, ExperimentConfig, _flatten

#: ``i2md_lib.models.moco.METHODS``, repeated so that ``--help`` needs no torch import.
METHOD_CHOICES: tuple[str, ...] = ("moco", "moco3", "posmining", "cmd", "i2md")

#: Errors that are the user's input, not a bug: printed as one line, exit code 1.
USER_ERRORS: tuple[type[Exception], ...] = (FileNotFoundError,)


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m i2md_lib`` parser with one subparser per command."""
    parser = argparse.ArgumentParser(
        prog="python -m i2md_lib",
        description="Self-supervised skeleton action representation learning (CMD, I2MD).")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_pretrain_command(commands)
    add_evaluate_command(commands)
    add_config_command(commands)
    add_prepare_ntu_command(commands)
    add_prepare_pku_command(commands)
    add_experiments_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except ConfigArgumentError as e:
        parser.error(str(e))  # exits with code 2 and the usage line
    except USER_ERRORS + _library_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0  # unreachable (parser.error exits); keeps type checkers calm


def _library_errors() -> tuple[type[Exception], ...]:
    from .checkpoint import CheckpointError, ConfigMismatchError
    from .data.ntu_format import NtuNameError
    from .data.store import DataFormatError

    return (CheckpointError, ConfigMismatchError, DataFormatError, NtuNameError)


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
    group.add_argument("--method", default=None, choices=METHOD_CHOICES,
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
    overrides.update(parse_set_items(args.overrides))
    try:
        cfg = ExperimentConfig.for_profile(profile)
        return cfg.replace({k: _coerce(cfg, k, v) for k, v in overrides.items()})
    except ValueError as e:
        raise ConfigArgumentError(str(e)) from e


def parse_set_items(items: Sequence[str]) -> dict[str, Any]:
    """``["KEY=VALUE", ...]`` of ``--set`` -> ``{key: value parsed as YAML}``."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigArgumentError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            overrides[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ConfigArgumentError(f"--set {item!r}: the value is not valid YAML ({e})") from e
    return overrides


def _read_yaml_mapping(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigArgumentError(f"--config {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigArgumentError(f"--config {path}: not valid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigArgumentError(f"--config {path}: expected a mapping of config keys, got {type(data).__name__}")
    return data


def _coerce(cfg: ExperimentConfig, key: str, value: Any) -> Any:
    """Fit a YAML-parsed ``value`` to the type of the current value of ``key``.

    YAML reads ``1e-3`` as a string and ``1`` as an int; a float field gets a float,
    and a tuple field given one scalar gets a one-element list.
    """
    current: Any = cfg
    for part in key.split("."):
        if not hasattr(current, part):
            return value  # ExperimentConfig.replace names the unknown key
        current = getattr(current, part)
    if isinstance(current, float) and isinstance(value, (int, str)) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError:
            raise ConfigArgumentError(f"{key} needs a number, got {value!r}") from None
    if isinstance(current, tuple) and not isinstance(value, (list, tuple)):
        return [value]
    return value


# -- commands ---------------------------------------------------------------------
def add_pretrain_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("pretrain", help="self-supervised pretraining (resumes by default)")
    add_config_arguments(parser)
    parser.add_argument("--run-dir", type=Path, required=True, metavar="DIR",
                        help="folder for config.yaml, log.csv and checkpoint.pt")
    parser.add_argument("--no-resume", action="store_true",
                        help="start over even if DIR holds a checkpoint")
    parser.add_argument("--max-steps", type=int, default=None, metavar="N",
                        help="stop (and checkpoint) after N optimizer steps in total")
    parser.add_argument("--allow-change", action="append", default=[], metavar="KEY",
                        help="config key that may differ from the checkpoint's on resume (repeatable)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--dist-bn", choices=("global", "shuffle"), default="global",
                        help="BatchNorm under torchrun: statistics of the global batch (default; the "
                             "same numbers as one process) or MoCo's shuffle BN")
    parser.set_defaults(run=run_pretrain)


def _rank() -> int:
    """This process's rank under torchrun (0 otherwise)."""
    return int(os.environ.get("RANK", "0") or 0)


def run_pretrain(args: argparse.Namespace) -> int:
    from . import distributed
    from .train import pretrain  # lazy: keeps `--help` and `config` fast

    cfg = config_from_args(args)
    main_rank = _rank() == 0
    if main_rank:
        print(f"pretraining {cfg.pretrain.method} ({cfg.profile} profile, {cfg.data.dataset}) into {args.run_dir}",
              file=sys.stderr)
    start = time.perf_counter()
    try:
        history = pretrain(cfg, args.run_dir, resume=not args.no_resume, max_steps=args.max_steps,
                           progress=not args.no_progress, allow_changes=args.allow_change,
                           dist_bn=args.dist_bn)
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

    from .checkpoint import load_pretrained
    from .evaluate import evaluate_encoders, results_table
    from .models.moco import encoders_for_eval
    from .utils import atomic_write

    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        raise ConfigArgumentError("evaluate runs in one process: start it with `python -m i2md_lib evaluate`, "
                                  "not torchrun (use --device to pick a GPU)")
    cfg, model = load_pretrained(args.run_dir)
    overrides = {}
    for item in args.overrides:
        key, sep, raw = item.partition("=")
        if not sep or key.split(".")[0] not in ("eval", "data"):
            raise ConfigArgumentError(f"evaluate --set takes eval.KEY=VALUE or data.KEY=VALUE, got {item!r}")
        overrides[key] = _coerce(cfg, key, yaml.safe_load(raw))
    try:
        cfg = cfg.replace(overrides)
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


def add_experiments_command(commands: argparse._SubParsersAction) -> None:
    from .experiments import SUITES  # no torch import

    parser = commands.add_parser(
        "experiments", help="run a suite of method variants x seeds and write result files")
    parser.add_argument("--suite", required=True, choices=sorted(SUITES))
    parser.add_argument("--profile", choices=PROFILES, default=None,
                        help="scale profile (default: $I2MD_PROFILE, else book)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=None, help="default: the whole suite")
    parser.add_argument("--jobs", type=int, default=1, help="runs side by side (one thread each)")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default: results/)")
    parser.add_argument("--runs", type=Path, default=None, help="run folders (default: runs/)")
    parser.add_argument("--rerun", action="store_true", help="rerun even if a current result exists")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one dotted config key in every run, e.g. data.benchmark=xsub_val "
                             "(value parsed as YAML; repeatable)")
    parser.set_defaults(run=run_experiments)


def run_experiments(args: argparse.Namespace) -> int:
    from . import experiments

    kwargs = {k: v for k, v in (("out_root", args.out), ("runs_root", args.runs)) if v is not None}
    records = experiments.run_suite(args.suite, args.profile, args.seeds, args.variants, jobs=args.jobs,
                                    rerun=args.rerun, overrides=parse_set_items(args.overrides), **kwargs)
    print(experiments.summary_table(records).to_string())
    return 0
