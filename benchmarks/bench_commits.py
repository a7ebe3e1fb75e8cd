"""Book-scale training steps of an earlier commit against today's code, in two processes that take turns.

``bench_book_steps.py`` compares two recurrences of *today's* library in one process. To say how
much faster a book step is than at an earlier commit (the target of issue 30 is stated against
commit 4356ec8), everything that changed since counts, the losses included, so this script runs
the earlier commit's library itself: it checks the commit out into a temporary git worktree
(removed afterwards) and starts one worker process per tree. Each worker builds the method's model
at the ``book`` profile from the same seed and trains on the same batches of the book's data (the
training loop's ``train.train_step``, backward and SGD; building the views is not timed). The
driver asks the two workers for one step in turn, so only one process runs at a time and a busy
machine slows both alike. Both start from the same weights (seed 0; the model's parameters and
their initialisation are unchanged since), so their losses must agree up to rounding.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_commits.py --base 4356ec8 --steps 40 \
        --out benchmarks/results/book_steps_vs_4356ec8
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import command_line, machine_info, render_report, write_report  # noqa: E402

METHODS = ("moco3", "cmd", "i2md")

#: The worker: only library calls that both the earlier commit and today's code have.
WORKER = r'''
import json, sys, time
tree, method, profile = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, tree)
import torch
import i2md_lib
from i2md_lib.config import ExperimentConfig
from i2md_lib.data.datasets import PretrainDataset, load_arrays
from i2md_lib.models.encoders import resolve_recurrence
from i2md_lib.models.moco import build_model
from i2md_lib.train import epoch_batches, train_step

cfg = ExperimentConfig.for_profile(profile, {"pretrain.method": method, "pretrain.dna_warmup_epochs": 0})
torch.manual_seed(0)
model = build_model(cfg).train()
optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=cfg.pretrain.lr,
                            momentum=cfg.pretrain.sgd_momentum)
dataset = PretrainDataset.from_config(load_arrays(cfg.data, "train"), cfg)
dataset.set_epoch(0)
batches = epoch_batches(len(dataset), cfg.pretrain.batch_size, cfg.pretrain.seed, 0)
path = resolve_recurrence(cfg.encoder.recurrence, cfg.encoder.hidden_size, "cpu")
print(json.dumps({"path": path, "library": i2md_lib.__file__,
                  "encoder": f"{cfg.encoder.num_layers} x {cfg.encoder.hidden_size}",
                  "window": cfg.data.window, "batch": cfg.pretrain.batch_size, "queue": cfg.pretrain.queue_size,
                  "threads": torch.get_num_threads()}), flush=True)
for line in sys.stdin:
    i = int(line)
    batch = batches[i % len(batches)]
    view_q = torch.stack([dataset[j][0] for j in batch])
    view_k = torch.stack([dataset[j][1] for j in batch])
    start = time.perf_counter()
    terms, _ = train_step(model, model, view_q, view_k, epoch=1, index=torch.as_tensor(batch))
    optimizer.zero_grad(set_to_none=True)
    terms["total"].backward()
    optimizer.step()
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "loss": float(terms["total"].detach())}), flush=True)
'''


class Worker:
    """One worker process on one tree: ``step(i)`` -> ``(seconds, loss)``."""

    def __init__(self, tree: Path, method: str, profile: str, script: Path) -> None:
        self.process = subprocess.Popen([sys.executable, str(script), str(tree), method, profile], cwd=tree,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.info = self._read()
        if not Path(self.info["library"]).resolve().is_relative_to(tree.resolve()):
            self.close()
            raise RuntimeError(f"the worker for {tree} imported the library from {self.info['library']}")

    def _read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"a benchmark worker stopped (exit code {self.process.wait()})")
        return json.loads(line)

    def step(self, i: int) -> tuple[float, float]:
        self.process.stdin.write(f"{i}\n")
        self.process.stdin.flush()
        reply = self._read()
        return reply["seconds"], reply["loss"]

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def measure(method: str, steps: int, warmup: int, profile: str, trees: dict[str, Path], script: Path) -> dict:
    """Alternating timed steps of the two trees' workers for ``method``."""
    workers = {name: Worker(tree, method, profile, script) for name, tree in trees.items()}
    seconds = {name: [] for name in workers}
    losses = {name: [] for name in workers}
    try:
        for i in range(warmup + steps):
            for name, worker in workers.items():
                s, loss = worker.step(i)
                losses[name].append(loss)
                if i >= warmup:
                    seconds[name].append(s)
    finally:
        for worker in workers.values():
            worker.close()
    median = {name: statistics.median(s) for name, s in seconds.items()}
    ratios = [b / n for b, n in zip(seconds["base"], seconds["head"])]
    rel = [abs(a - b) / max(abs(b), 1e-12) for a, b in zip(losses["head"], losses["base"])]
    info = workers["head"].info
    return {"method": method, "steps": steps, "warmup": warmup, "median_s": median,
            "steps_per_s": {name: 1.0 / m for name, m in median.items()},
            "speed_up": median["base"] / median["head"], "step_ratio_range": [min(ratios), max(ratios)],
            "max_rel_loss_diff": max(rel), "max_rel_loss_diff_first_20": max(rel[:20]),
            "paths": {name: w.info["path"] for name, w in workers.items()},
            "threads": {name: w.info["threads"] for name, w in workers.items()},
            "encoder": info["encoder"], "window": info["window"], "batch": info["batch"], "queue": info["queue"],
            "seconds": seconds, "losses": losses}


def write_markdown(path: Path, report: dict) -> None:
    m, base, head = report["machine"], report["base"], report["head"]
    lines = [f"# Book-scale training steps: commit {base} against {head}", "",
             f"Generated by `benchmarks/bench_commits.py` (raw numbers: [`{path.stem}.json`]({path.stem}.json)). "
             "Command, from the repository root:", "", "```", report["command"], "```", "",
             f"Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs, torch {m['torch']}, "
             f"{report['results'][0]['threads']['head']} thread(s) per worker; load average at the start "
             f"{m['load_average_at_start']}. Today's code at commit {head}"
             f"{' (with uncommitted changes)' if report['dirty'] else ''}.", "",
             f"Two processes, one per commit, take turns step by step. One step = `train.train_step` (both views, "
             f"the method's losses, the enqueue) + backward + SGD on real batches of the book's data, "
             f"`{report['profile']}` profile, both from the same weights on the same batches. The relative loss "
             "differences are over the first 20 steps (the warm-up steps among them) and over all of them.", "",
             f"| method | BiGRU | frames | batch | queue | timed steps | {base}: path, steps/s | {head}: path, steps/s "
             "| speed-up (ratio of medians) | per-step ratios | max rel. loss diff, 20 steps / all |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        low, high = r["step_ratio_range"]
        lines.append(f"| {r['method']} | {r['encoder']} | {r['window']} | {r['batch']} | {r['queue']} | {r['steps']} | "
                     f"{r['paths']['base']}, {r['steps_per_s']['base']:.2f} | "
                     f"{r['paths']['head']}, {r['steps_per_s']['head']:.2f} | **{r['speed_up']:.2f}x** | "
                     f"{low:.2f}-{high:.2f} | {r['max_rel_loss_diff_first_20']:.1e} / {r['max_rel_loss_diff']:.1e} |")
    if report.get("note"):
        lines += ["", report["note"]]
    path.write_text("\n".join(lines) + "\n")


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="4356ec8", help="the earlier commit")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per commit and method")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--profile", default="book")
    parser.add_argument("--note", default="", help="a paragraph added under the table")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "book_steps_vs_base"))
    parser.add_argument("--render", metavar="JSON", help="only rewrite the markdown of an earlier run's "
                        "JSON (and its note, with --note); nothing is measured")
    args = parser.parse_args(argv)
    if args.render:
        return render_report(args.render, args.note, write_markdown)
    import torch

    base = git("rev-parse", "--short", args.base)
    head = git("rev-parse", "--short", "HEAD")
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    with tempfile.TemporaryDirectory(prefix="i2md_bench_") as folder:
        base_tree, script = Path(folder) / "base", Path(folder) / "worker.py"
        script.write_text(WORKER)
        git("worktree", "add", "--detach", str(base_tree), base)
        try:
            data = ROOT / "data"
            for name in os.listdir(data) if data.is_dir() else []:   # prepared data the tree ignores
                if not (base_tree / "data" / name).exists():
                    (base_tree / "data" / name).symlink_to(data / name)
            trees = {"base": base_tree, "head": ROOT}
            results = [measure(m, args.steps, args.warmup, args.profile, trees, script) for m in args.methods]
        finally:
            git("worktree", "remove", "--force", str(base_tree))
    report = {"command": command_line("bench_commits.py", argv), "base": base, "head": head, "dirty": dirty,
              "profile": args.profile, "machine": machine_info(torch.device("cpu")), "note": args.note,
              "results": results}
    write_report(args.out, report, write_markdown)
    return report


if __name__ == "__main__":
    main()
