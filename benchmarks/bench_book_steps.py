"""Book-scale training steps per second: one recurrence before and another now (``--before``, ``--now``).

Each method of the book (``moco3``, ``cmd``, ``i2md``) is built twice at the ``book``
profile, once per recurrence, from the same weights; both models then train on the same
real batches of the book's data (``PretrainDataset``, the training loop's
``train.train_step`` + SGD), alternating step by step so that a busy machine slows both
alike. The report gives the median seconds per step, steps per second, the ratio of the
medians and the spread of the per-step ratios, and the largest relative difference of the
two models' losses (the same function, so it is rounding only).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_book_steps.py --steps 20 --out benchmarks/results/book_steps
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_book_steps.py --before loop --now auto --steps 30 \
        --out benchmarks/results/book_steps_grouped
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402
from _common import command_line, machine_info, write_report  # noqa: E402

from i2md_lib.config import ExperimentConfig  # noqa: E402
from i2md_lib.data.datasets import PretrainDataset, load_arrays  # noqa: E402
from i2md_lib.models.encoders import resolve_recurrence  # noqa: E402
from i2md_lib.models.moco import build_model  # noqa: E402
from i2md_lib.train import epoch_batches, train_step  # noqa: E402

METHODS = ("moco3", "cmd", "i2md")


def measure(method: str, steps: int, warmup: int, profile: str, before: str = "nn_gru", now: str = "auto",
            compile_now: bool = False) -> dict:
    """Alternating timed steps of the recurrences ``before`` and ``now`` for ``method``; seconds and losses.
    ``compile_now``: the ``now`` model's encoders run under ``torch.compile`` (its label gets
    ``+compile``; the first step's seconds, the compilation, are reported apart)."""
    recurrence_of = {"before": before, "now": now}
    suffix = {"before": "", "now": "+compile" if compile_now else ""}
    label = {key: recurrence_of[key] + suffix[key] for key in recurrence_of}
    if label["before"] == label["now"]:
        raise ValueError(f"before and now are the same path ({before}): nothing to compare")
    cfg = ExperimentConfig.for_profile(profile, {"pretrain.method": method, "pretrain.dna_warmup_epochs": 0})
    torch.manual_seed(0)
    base = build_model(cfg)
    models, optimizers = {}, {}
    for key, recurrence in recurrence_of.items():
        model = copy.deepcopy(base)
        for encoders in (model.encoders("query"), model.encoders("key")):
            for encoder in encoders.values():
                encoder.recurrence = recurrence
                if key == "now" and compile_now:
                    encoder.forward = torch.compile(encoder.forward, dynamic=False)
        models[label[key]] = model.train()
        optimizers[label[key]] = torch.optim.SGD([p for p in model.parameters() if p.requires_grad],
                                                 lr=cfg.pretrain.lr, momentum=cfg.pretrain.sgd_momentum)
    dataset = PretrainDataset.from_config(load_arrays(cfg.data, "train"), cfg)
    dataset.set_epoch(0)
    batches = epoch_batches(len(dataset), cfg.pretrain.batch_size, cfg.pretrain.seed, 0)
    seconds = {r: [] for r in models}
    losses = {r: [] for r in models}
    first_step_s = {}
    for i in range(warmup + steps):
        batch = batches[i % len(batches)]
        view_q = torch.stack([dataset[j][0] for j in batch])
        view_k = torch.stack([dataset[j][1] for j in batch])
        for name, model in models.items():
            start = time.perf_counter()
            terms, _ = train_step(model, model, view_q, view_k, epoch=1, index=torch.as_tensor(batch))
            optimizers[name].zero_grad(set_to_none=True)
            terms["total"].backward()
            optimizers[name].step()
            elapsed = time.perf_counter() - start
            first_step_s.setdefault(name, elapsed)
            if i >= warmup:
                seconds[name].append(elapsed)
                losses[name].append(float(terms["total"].detach()))
    before, now = label["before"], label["now"]      # the two models' names from here on
    median = {r: statistics.median(s) for r, s in seconds.items()}
    diff = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(losses[now], losses[before]))
    ratios = sorted(a / b for a, b in zip(seconds[before], seconds[now]))
    return {"method": method, "steps": steps, "before": before, "now": now, "median_s": median,
            "steps_per_s": {r: 1.0 / m for r, m in median.items()},
            "speed_up": median[before] / median[now], "max_rel_loss_diff": diff,
            "step_ratio_range": [ratios[0], ratios[-1]], "first_step_s": first_step_s,
            "paths": {label[key]: resolve_recurrence(recurrence_of[key], cfg.encoder.hidden_size, "cpu") + suffix[key]
                      for key in label},
            "auto_resolves_to": resolve_recurrence("auto", cfg.encoder.hidden_size, "cpu"),
            "encoder": f"{cfg.encoder.num_layers} x {cfg.encoder.hidden_size}", "window": cfg.data.window,
            "batch": cfg.pretrain.batch_size, "queue": cfg.pretrain.queue_size, "seconds": seconds}


def write_markdown(path: Path, report: dict) -> None:
    m = report["machine"]
    first = report["results"][0]
    before, now = first["before"], first["now"]
    name = lambda r: r if first["paths"][r] == r else f"{r} -> {first['paths'][r]}"  # noqa: E731
    lines = [f"# Book-scale training steps: recurrence {name(before)} against {name(now)}", "",
             f"Generated by `benchmarks/bench_book_steps.py` (raw numbers: [`{path.stem}.json`]({path.stem}.json)). "
             "Command, from the repository root:", "", "```", report["command"], "```", "",
             f"Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs, torch {m['torch']} "
             f"({m['torch_threads']} thread(s)); load average at the start {m['load_average_at_start']} "
             "(other jobs shared the machine: absolute times are noisy, the ratios come from alternating steps). "
             f"Code at commit {report['commit']}.", "",
             "One step = `train.train_step` (both views, the method's losses, the enqueue) + backward + SGD on real "
             f"batches of the book's data, `{report.get('profile', 'book')}` profile. Before: `encoder.recurrence = "
             f"{before}`; now: `{now}`. Both models start from the same weights and see the same batches.", "",
             f"| method | BiGRU | frames | batch | queue | timed steps | before: {name(before)} (steps/s) | "
             f"now: {name(now)} (steps/s) | speed-up (ratio of medians) | per-step ratios | max rel. loss diff |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        low, high = r.get("step_ratio_range", [float("nan")] * 2)
        lines.append(f"| {r['method']} | {r['encoder']} | {r['window']} | {r['batch']} | {r['queue']} | {r['steps']} | "
                     f"{r['steps_per_s'][before]:.2f} | {r['steps_per_s'][now]:.2f} | "
                     f"**{r['speed_up']:.2f}x** | {low:.2f}-{high:.2f} | {r['max_rel_loss_diff']:.1e} |")
    if any(r["now"].endswith("+compile") for r in report["results"]):
        lines += ["", "First step of each model (the compilation of the compiled one included), seconds: " + "; ".join(
            f"{r['method']} {r['first_step_s'][before]:.1f} / {r['first_step_s'][r['now']]:.1f}"
            for r in report["results"]) + "."]
    if report.get("note"):
        lines += ["", report["note"]]
    path.write_text("\n".join(lines) + "\n")


def main(argv: Sequence[str] | None = None) -> dict:
    import subprocess

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per recurrence and method")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--profile", default="book")
    parser.add_argument("--before", default="nn_gru", help="the recurrence measured as 'before'")
    parser.add_argument("--now", default="auto", help="the recurrence measured as 'now'")
    parser.add_argument("--compile", action="store_true",
                        help="run the 'now' model's encoders under torch.compile (same recurrence allowed)")
    parser.add_argument("--note", default="", help="a paragraph added under the table")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "book_steps"))
    args = parser.parse_args(argv)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip() or "unknown"
    report = {"command": command_line("bench_book_steps.py", argv), "commit": commit, "profile": args.profile,
              "machine": machine_info(torch.device("cpu")), "note": args.note,
              "results": [measure(m, args.steps, args.warmup, args.profile, args.before, args.now, args.compile)
                          for m in args.methods]}
    write_report(args.out, report, write_markdown)
    return report


if __name__ == "__main__":
    main()
