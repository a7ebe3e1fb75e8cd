"""Everything that depends on the device, in one command (``make gpu-check``), with its numbers.

On a CUDA machine it runs, on ``cuda``:

* the device-dependent checks: a training step and an exact resume, a checkpoint saved on the GPU
  loaded on the CPU and back (same embeddings), the evaluation protocols, AMP ``fp16`` and ``bf16``;
* ``benchmarks/bench_step.py --device cuda`` at the book's size (``classroom``) and the paper's
  (3 x 1024, queue 16384) for every recurrence path, with peak memory;
* a short pretraining of every method at the paper's model size (on the book's data);
* a one-process ``torchrun`` with NCCL;

and writes ``gpu.md`` and ``gpu.json`` (device name, every check, its seconds) to ``--output``
(``benchmarks/results/`` by default). It exits 1 when any check fails.

Without CUDA it says so in one line and runs the same checks at smoke scale on the CPU (gloo
instead of NCCL), writing to a temporary folder unless ``--output`` is given, so that CI keeps
the script from rotting without touching committed GPU numbers::

    .venv/bin/python tools/gpu_check.py [--output DIR] [--steps 200] [--cpu]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from i2md_lib.checkpoint import checkpoint_path, load_checkpoint  # noqa: E402
from i2md_lib.config import METHODS, PROFILE_OVERRIDES, ExperimentConfig  # noqa: E402
from i2md_lib.data.datasets import load_arrays  # noqa: E402
from i2md_lib.models.moco import build_model  # noqa: E402
from i2md_lib.pipeline import evaluate_model  # noqa: E402
from i2md_lib.train import pretrain  # noqa: E402

#: The book profile's data settings: the paper-size runs train the full model on the book's clips.
BOOK_DATA = {k: v for k, v in PROFILE_OVERRIDES["book"].items() if k.startswith("data.")}


class Checks:
    """Runs named checks, recording ``ok``, seconds and what each returned or raised."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def run(self, name: str, fn: Callable[[], Any]) -> None:
        start = time.perf_counter()
        try:
            detail, ok = fn(), True
        except Exception as e:  # noqa: BLE001 - every failure is recorded and the run goes on
            detail, ok = f"{type(e).__name__}: {' '.join(str(e).split())[:400]}", False
            traceback.print_exc()
        row = {"check": name, "ok": ok, "seconds": round(time.perf_counter() - start, 1), "detail": detail}
        print(f"[{'ok' if ok else 'FAILED'}] {name} ({row['seconds']} s): {str(detail)[:200]}", flush=True)
        self.rows.append(row)


def small_config(device: str, scale: str, method: str = "cmd", **overrides: Any) -> ExperimentConfig:
    """``smoke`` profile on ``device`` (``scale='smoke'``), or the paper's model on the book's data."""
    base = {"pretrain.method": method, "pretrain.device": device, "pretrain.dna_warmup_epochs": 0,
            "pretrain.epochs": 1000, **overrides}
    if scale == "smoke":
        return ExperimentConfig.for_profile("smoke", base)
    return ExperimentConfig.for_profile("full", {**BOOK_DATA, **base})


def check_train_and_resume(device: str, folder: Path) -> dict:
    """4 steps in one go against 2 + 2 steps with a resume in between: the same log."""
    cfg = small_config(device, "smoke")
    whole = pretrain(cfg, folder / "whole", max_steps=4, progress=False)
    pretrain(cfg, folder / "resumed", max_steps=2, progress=False)
    resumed = pretrain(cfg, folder / "resumed", max_steps=4, progress=False)
    diff = max(abs(a[k] - b[k]) / max(abs(a[k]), 1e-6) for a, b in zip(whole, resumed) for k in a)
    if len(whole) != len(resumed) != 4 or diff > 1e-4:
        raise AssertionError(f"resumed log differs from the uninterrupted one (max rel. diff {diff:.2e})")
    return {"steps": 4, "final_loss": whole[-1]["total"], "max_rel_diff_resumed": diff}


def check_checkpoint_devices(device: str, folder: Path) -> dict:
    """The checkpoint written on ``device`` loads on the CPU and back; the embeddings agree."""
    cfg = small_config(device, "smoke")
    state = load_checkpoint(checkpoint_path(folder / "whole"), map_location="cpu")
    on_cpu = build_model(cfg)
    on_cpu.load_state_dict(state["model"])
    x = torch.randn(4, 3, cfg.data.window, 25, 2, generator=torch.Generator().manual_seed(0))
    cpu_emb = on_cpu.embed(x, "joint")
    back = build_model(cfg).to(device)
    back.load_state_dict({k: v.to(device) for k, v in on_cpu.state_dict().items()})
    dev_emb = back.embed(x.to(device), "joint").cpu()
    diff = float((cpu_emb - dev_emb).abs().max())
    if diff > 1e-3:
        raise AssertionError(f"embeddings on {device} and cpu differ by {diff:.2e}")
    return {"max_abs_embedding_diff": diff}


def check_evaluation(device: str, folder: Path) -> dict:
    """kNN, linear and semi-supervised protocols of the trained smoke model on ``device``."""
    from i2md_lib.models.pretrained import load_pretrained

    cfg, model = load_pretrained(folder / "whole")
    cfg = ExperimentConfig.from_dict({**cfg.to_dict(), "pretrain": {**cfg.to_dict()["pretrain"], "device": device}})
    rows = evaluate_model(model.to(device), cfg, ("knn", "linear", "semi"))
    return dict(first_accuracy(r) for r in rows if any(k.startswith("top") for k in r))


def first_accuracy(row: dict) -> tuple[str, float]:
    """``("<protocol> <modality> <top-k field>", value)`` of a result row's first accuracy."""
    key = next(k for k in row if k.startswith("top"))
    return " ".join(str(row[k]) for k in ("protocol", "modality") if row.get(k) is not None) + f" {key}", row[key]


def check_amp(device: str, folder: Path, amp: str) -> dict:
    rows = pretrain(small_config(device, "smoke", **{"pretrain.amp": amp}), folder / f"amp_{amp}",
                    max_steps=3, progress=False)
    losses = [r["total"] for r in rows]
    if not all(map(lambda v: v == v and abs(v) != float("inf"), losses)):
        raise AssertionError(f"non-finite losses under {amp}: {losses}")
    return {"losses": losses}


def check_pretraining(device: str, scale: str, method: str, steps: int, folder: Path) -> dict:
    cfg = small_config(device, scale, method)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    rows = pretrain(cfg, folder / f"pretrain_{method}", max_steps=steps, progress=False)
    seconds = time.perf_counter() - start
    out = {"steps": len(rows), "s_per_step": seconds / len(rows), "first_loss": rows[0]["total"],
           "last_loss": rows[-1]["total"], "encoder": f"{cfg.encoder.num_layers} x {cfg.encoder.hidden_size}",
           "batch": cfg.pretrain.batch_size, "queue": cfg.pretrain.queue_size}
    if torch.cuda.is_available():
        out["peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def check_torchrun(device: str, folder: Path) -> dict:
    """``torchrun --nproc_per_node=1 -m i2md_lib pretrain`` (NCCL on CUDA, gloo on the CPU)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m", "i2md_lib",
           "pretrain", "--run-dir", str(folder / "torchrun"), "--profile", "smoke", "--method", "cmd",
           "--max-steps", "2", "--set", f"pretrain.device={device}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode:
        raise RuntimeError(f"torchrun exited {done.returncode}: {done.stderr.strip()[-400:]}")
    return {"backend": "nccl" if device.startswith("cuda") else "gloo", "returncode": 0}


def check_bench_step(device: str, smoke: bool, out: Path) -> dict:
    """``benchmarks/bench_step.py`` for every recurrence path, with peak memory."""
    args = (["--sizes", "tiny", "--repeats", "1", "--paper-repeats", "1", "--warmup", "0", "--memory-steps", "1"]
            if smoke else ["--sizes", "classroom,paper", "--repeats", "5", "--paper-repeats", "3", "--warmup", "1"])
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_step.py"), "--device", device, *args,
           "--out", str(out / "gpu_step")]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    if done.returncode:
        raise RuntimeError(f"bench_step.py exited {done.returncode}: {done.stderr.strip()[-400:]}")
    report = json.loads((out / "gpu_step.json").read_text())
    return {size: {"median_s": t["median_s"], "speedup_vs_per_frame": t["speedup"]}
            for size, t in report["times"].items()} | {"memory": report.get("memory", {})}


def write_report(out: Path, report: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    lines = ["# Device check (`make gpu-check`)", "",
             "Generated by `tools/gpu_check.py` (raw numbers: [`gpu.json`](gpu.json)). Command:", "",
             "```", report["command"], "```", "",
             f"Device: **{report['device_name']}** (`{report['device']}`), torch {report['torch']}, "
             f"scale `{report['scale']}`, code at commit {report['commit']}. "
             f"{sum(r['ok'] for r in report['checks'])} of {len(report['checks'])} checks passed "
             f"in {report['seconds']:.0f} s.", "",
             "| check | result | seconds | detail |", "|---|---|---|---|"]
    for r in report["checks"]:
        detail = json.dumps(r["detail"], default=str) if not isinstance(r["detail"], str) else r["detail"]
        lines.append(f"| {r['check']} | {'ok' if r['ok'] else '**FAILED**'} | {r['seconds']} | "
                     f"{detail.replace('|', '/')[:600]} |")
    lines += ["", "The step benchmark's own tables: [`gpu_step.md`](gpu_step.md)."]
    (out / "gpu.md").write_text("\n".join(lines) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", help="folder for gpu.md/gpu.json (default: benchmarks/results on CUDA, "
                                         "a temporary folder on the CPU)")
    parser.add_argument("--steps", type=int, default=200, help="pretraining steps per method on CUDA")
    parser.add_argument("--cpu", action="store_true", help="the CPU fallback even where CUDA is available")
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available() and not args.cpu
    device = "cuda" if cuda else "cpu"
    if not cuda:
        print("gpu-check: no CUDA device; running the same checks at smoke scale on the CPU (gloo, not NCCL)")
    out = Path(args.output) if args.output else (ROOT / "benchmarks" / "results" if cuda
                                                 else Path(tempfile.mkdtemp(prefix="gpu_check_")))
    start, checks = time.perf_counter(), Checks()
    with tempfile.TemporaryDirectory(prefix="gpu_check_runs_") as tmp:
        runs = Path(tmp)
        checks.run("training step + exact resume", lambda: check_train_and_resume(device, runs))
        checks.run(f"checkpoint {device} -> cpu -> {device}", lambda: check_checkpoint_devices(device, runs))
        checks.run("evaluation protocols (knn, linear, semi)", lambda: check_evaluation(device, runs))
        for amp in (("fp16", "bf16") if cuda else ("bf16",)):
            checks.run(f"AMP {amp}", lambda amp=amp: check_amp(device, runs, amp))
        checks.run("bench_step.py, every recurrence path", lambda: check_bench_step(device, not cuda, out))
        scale, steps = ("paper", args.steps) if cuda else ("smoke", 2)
        load_arrays(small_config(device, scale).data, "train")      # the data cache, before the timings
        for method in METHODS:
            checks.run(f"pretraining {method} ({scale} model, {steps} steps)",
                       lambda method=method: check_pretraining(device, scale, method, steps, runs))
        checks.run(f"torchrun, 1 process ({'nccl' if cuda else 'gloo'})", lambda: check_torchrun(device, runs))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip() or "unknown"
    report = {"command": "python tools/gpu_check.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "device": device, "device_name": torch.cuda.get_device_name(0) if cuda else "CPU (no CUDA)",
              "torch": torch.__version__, "scale": "paper" if cuda else "smoke", "commit": commit,
              "seconds": time.perf_counter() - start, "checks": checks.rows}
    write_report(out, report)
    failed = [r["check"] for r in checks.rows if not r["ok"]]
    print(f"wrote {out / 'gpu.md'} and {out / 'gpu.json'}; "
          + (f"{len(failed)} check(s) FAILED: {', '.join(failed)}" if failed else "every check passed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
