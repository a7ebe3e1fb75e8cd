"""The command line, in-process at smoke scale and once as a subprocess."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from i2md_lib.checkpoint import load_checkpoint
from i2md_lib.cli import build_parser, main
from i2md_lib.config import ExperimentConfig
from i2md_lib.config import METHODS
from i2md_lib.train import config_to_yaml, read_config, read_log

REPO = Path(__file__).resolve().parents[1]


def printed_config(capsys, *args: str) -> ExperimentConfig:
    assert main(["config", *args]) == 0
    return ExperimentConfig.from_dict(yaml.safe_load(capsys.readouterr().out))


def test_config_prints_the_profile(capsys):
    assert printed_config(capsys, "--profile", "smoke") == ExperimentConfig.for_profile("smoke")
    assert printed_config(capsys, "--profile", "book", "--method", "moco3") == ExperimentConfig.for_profile(
        "book", {"pretrain.method": "moco3"})


def test_set_values_are_parsed_as_yaml_and_fitted_to_the_field(capsys):
    cfg = printed_config(capsys, "--profile", "smoke", "--set", "pretrain.lr=1e-3",
                         "--set", "pretrain.lr_milestones=[3, 5]", "--set", "eval.knn_k=7",
                         "--set", "pretrain.momentum=0", "--set", "pretrain.device=cpu",
                         "--set", "pretrain.epochs=6.0")
    assert cfg.pretrain.lr == 0.001 and isinstance(cfg.pretrain.lr, float)
    assert cfg.pretrain.lr_milestones == (3, 5) and cfg.eval.knn_k == (7,)
    assert cfg.pretrain.momentum == 0.0 and isinstance(cfg.pretrain.momentum, float)
    assert cfg.pretrain.epochs == 6 and isinstance(cfg.pretrain.epochs, int)
    assert cfg.pretrain.device == "cpu"


def test_config_file_then_set(tmp_path, capsys):
    base = ExperimentConfig.for_profile("smoke", {"pretrain.epochs": 7, "encoder.kind": "bigru"})
    path = tmp_path / "config.yaml"
    path.write_text(config_to_yaml(base))
    assert printed_config(capsys, "--config", str(path)) == base          # profile taken from the file
    partial = tmp_path / "partial.yaml"
    partial.write_text("pretrain:\n  epochs: 9\ndata.window: 12\n")
    cfg = printed_config(capsys, "--profile", "smoke", "--config", str(partial), "--set", "pretrain.epochs=4")
    assert (cfg.pretrain.epochs, cfg.data.window, cfg.profile) == (4, 12, "smoke")


def exit_code_and_stderr(capsys, argv: list[str]) -> tuple[int, str]:
    """``main(argv)``'s exit code (argparse's own errors exit) and what it printed on stderr."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--set", "pretrain.nope=1"], "unknown config key 'pretrain.nope'"),
    (["--set", "pretrain.lr"], "KEY=VALUE"),
    (["--set", "pretrain.lr=fast"], "pretrain.lr must be a number, got 'fast'"),
    (["--config", "/no/such/file.yaml"], "no such file"),
    (["--method", "simclr"], "invalid choice"),
])
def test_bad_config_arguments_exit_with_code_2(capsys, args, message):
    code, err = exit_code_and_stderr(capsys, ["config", "--profile", "smoke", *args])
    assert code == 2 and message in err and "Traceback" not in err


def test_method_choices_come_from_the_config():
    pretrain = build_parser()._subparsers._group_actions[0].choices["pretrain"]
    method = next(a for a in pretrain._actions if a.dest == "method")
    assert tuple(method.choices) == METHODS


def test_pretrain_resume_and_config_change(tmp_path, capsys):
    run = tmp_path / "run"
    common = ["pretrain", "--profile", "smoke", "--method", "moco3", "--run-dir", str(run), "--no-progress"]
    assert main(common + ["--max-steps", "2"]) == 0
    assert [r["step"] for r in read_log(run / "log.csv")] == [1, 2]
    assert read_config(run / "config.yaml") == ExperimentConfig.for_profile("smoke", {"pretrain.method": "moco3"})
    # a different config is refused with the keys named ...
    assert main(common + ["--set", "pretrain.epochs=1"]) == 2
    err = capsys.readouterr().err
    assert "pretrain.epochs" in err and "checkpoint.pt" in err
    # ... unless allowed; the run resumes at step 3 and finishes epoch 1 (4 batches of 16 clips)
    assert main(common + ["--set", "pretrain.epochs=1", "--allow-change", "pretrain.epochs"]) == 0
    assert [r["step"] for r in read_log(run / "log.csv")] == [1, 2, 3, 4]
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 1


def test_evaluate_a_run(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["pretrain", "--profile", "smoke", "--method", "moco", "--run-dir", str(run),
                 "--no-progress", "--set", "pretrain.epochs=1"]) == 0
    assert main(["evaluate", "--run-dir", str(run), "--protocols", "knn", "--no-progress",
                 "--set", "eval.knn_k=[1, 3]"]) == 0
    rows = json.loads((run / "eval_results.json").read_text())
    assert [r["modality"] for r in rows] == ["joint"] and 0 <= rows[0]["top1@k=3"] <= 100   # percent
    assert main(["evaluate", "--run-dir", str(run), "--set", "pretrain.lr=1"]) == 2
    assert "eval.KEY=VALUE" in capsys.readouterr().err


def test_prepare_commands_report_missing_folders(tmp_path, capsys):
    assert main(["prepare-ntu", str(tmp_path / "missing"), str(tmp_path / "out")]) == 2
    assert "missing" in capsys.readouterr().err
    assert main(["prepare-pku", str(tmp_path / "absent"), str(tmp_path / "out")]) == 2
    assert "absent" in capsys.readouterr().err


def test_pretrain_as_a_subprocess(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "i2md_lib", "pretrain", "--profile", "smoke", "--method", "cmd",
         "--run-dir", str(tmp_path), "--max-steps", "1", "--no-progress"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "step 1" in result.stdout
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 1
