"""Several seeds in one process: do stacked encoders train more seeds per CPU second?

Issue 30, part 2. ``make results JOBS=2`` already runs one single-threaded run per core. The
question here is whether a *single* thread gets through more seeds per second when the
encoders of ``k`` seeds of one method are stacked into the same batched products (the way
``encoder.recurrence=grouped`` stacks a model's three streams), instead of running one after
the other.

What is timed is the part of a book-profile step that stacking would batch: the query side's
BiGRU layers of three-stream MoCo (3 streams x 2 causal cells per layer, 2 layers, hidden 64, 32
frames, batch 64), forward and backward, through :func:`i2md_lib.models.gru_recurrence.grouped_gru_layer`.
One seed is ``S = 3`` streams; ``k`` stacked seeds are one call with ``S = 3k``; ``k`` separate
seeds are ``k`` calls with ``S = 3``. Both are alternated repeat by repeat, so that a busy machine
slows both. Seeds per second = ``k`` / seconds of one pass.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_stacked_seeds.py --seeds-per-call 1 2 4

writes ``benchmarks/results/stacked_seeds.json`` and ``.md``.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402
from _common import command_line, machine_info, render_report, write_report  # noqa: E402

from i2md_lib.config import ExperimentConfig  # noqa: E402
from i2md_lib.models.gru_recurrence import grouped_gru_layer  # noqa: E402

STREAMS_PER_SEED = 3    # joint, motion, bone
CELLS = 2               # the two causal cells of a layer


def make_weights(streams: int, size_in: int, hidden: int, layers: int, generator: torch.Generator) -> list:
    """Per layer ``(w_ih, b_ih, w_hh, b_hh)`` of ``streams`` streams, requiring gradients."""
    weights, width = [], size_in
    for _ in range(layers):
        shapes = [(streams, CELLS, 3 * hidden, width), (streams, CELLS, 3 * hidden),
                  (streams, CELLS, 3 * hidden, hidden), (streams, CELLS, 3 * hidden)]
        weights.append([(0.1 * torch.randn(s, generator=generator)).requires_grad_() for s in shapes])
        width = CELLS * hidden
    return weights


def encoder_pass(x: torch.Tensor, weights: list, frames: int) -> torch.Tensor:
    """Forward and backward of the stacked BiGRU layers; ``x`` ``(S, T*N, in)``."""
    h = x
    for w_ih, b_ih, w_hh, b_hh in weights:
        out = grouped_gru_layer(h, w_ih, b_ih, w_hh, b_hh, frames)          # (T, S, C, N, H)
        t, s, c, n, hidden = out.shape
        h = out.permute(1, 0, 3, 2, 4).reshape(s, t * n, c * hidden)
    loss = h.square().mean()
    loss.backward()
    return loss.detach()


def measure(seeds_per_call: int, repeats: int, warmup: int, profile: str) -> dict:
    """Alternating timed passes of ``k`` stacked seeds and ``k`` separate seeds."""
    cfg = ExperimentConfig.for_profile(profile)
    e, frames, batch = cfg.encoder, cfg.data.window, cfg.pretrain.batch_size
    gen = torch.Generator().manual_seed(0)
    k = seeds_per_call
    x_stacked = torch.randn(STREAMS_PER_SEED * k, frames * batch, e.input_size, generator=gen)
    stacked = make_weights(STREAMS_PER_SEED * k, e.input_size, e.hidden_size, e.num_layers, gen)
    # each seed's own weights are its slice of the stacked ones: the same function, checked below
    separate = [[[w[j * STREAMS_PER_SEED:(j + 1) * STREAMS_PER_SEED].detach().clone().requires_grad_()
                  for w in layer] for layer in stacked] for j in range(k)]
    x_separate = list(x_stacked.split(STREAMS_PER_SEED))
    seconds: dict[str, list[float]] = {"stacked": [], "separate": []}
    loss_diff = 0.0
    for i in range(warmup + repeats):
        losses = {}
        for name in ("separate", "stacked"):
            start = time.perf_counter()
            if name == "stacked":
                losses[name] = float(encoder_pass(x_stacked, stacked, frames))
            else:
                losses[name] = statistics.fmean(float(encoder_pass(x, weights, frames))
                                                for x, weights in zip(x_separate, separate))
            if i >= warmup:
                seconds[name].append(time.perf_counter() - start)
        loss_diff = max(loss_diff, abs(losses["stacked"] - losses["separate"]) / abs(losses["separate"]))
    median = {name: statistics.median(s) for name, s in seconds.items()}
    ratios = sorted(a / b for a, b in zip(seconds["separate"], seconds["stacked"]))
    return {"seeds_per_call": k, "repeats": repeats, "median_s": median,
            "seeds_per_s": {name: k / m for name, m in median.items()},
            "gain": median["separate"] / median["stacked"], "ratio_range": [ratios[0], ratios[-1]],
            "max_rel_loss_diff": loss_diff,
            "encoder": f"{e.num_layers} x {e.hidden_size}", "input": e.input_size, "frames": frames,
            "batch": batch, "seconds": seconds}


def write_markdown(path: Path, report: dict) -> None:
    m = report["machine"]
    lines = ["# Several seeds in one process: stacked encoders against one seed after another", "",
             "Generated by `benchmarks/bench_stacked_seeds.py` (raw numbers: "
             f"[`{path.with_suffix('.json').name}`]({path.with_suffix('.json').name})). Command, from the "
             "repository root:", "", "```", report["command"], "```", "",
             f"Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs, torch {m['torch']} "
             f"({m['torch_threads']} thread(s)); load average at the start {m['load_average_at_start']}. "
             f"Code at commit {report['commit']}.", "",
             "One pass = forward and backward of the query side's BiGRU layers of three-stream MoCo at the "
             f"`{report['profile']}` profile (3 streams x 2 causal cells per layer) for each seed, through "
             "`grouped_gru_layer`: *stacked* runs the k seeds' streams as one call, *separate* one call per "
             "seed. The two are alternated repeat by repeat.", "",
             "| seeds per call k | encoder | frames | batch | repeats | separate (seeds/s) | stacked (seeds/s) "
             "| gain of stacking (ratio of medians) | per-repeat ratios | max rel. loss diff |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        lines.append(f"| {r['seeds_per_call']} | {r['encoder']} | {r['frames']} | {r['batch']} | {r['repeats']} "
                     f"| {r['seeds_per_s']['separate']:.2f} | {r['seeds_per_s']['stacked']:.2f} "
                     f"| **{r['gain']:.2f}x** | {r['ratio_range'][0]:.2f}-{r['ratio_range'][1]:.2f} "
                     f"| {r['max_rel_loss_diff']:.1e} |")
    if report.get("note"):
        lines += ["", report["note"]]
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds-per-call", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--profile", default="book")
    parser.add_argument("--note", default="", help="a paragraph added under the table")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "stacked_seeds"))
    parser.add_argument("--render", default=None, metavar="JSON",
                        help="only rewrite the markdown of an earlier run's JSON (with --note)")
    args = parser.parse_args(argv)
    if args.render:
        return render_report(args.render, args.note, write_markdown)
    if min(args.seeds_per_call) < 1:
        parser.error("--seeds-per-call takes counts of at least 1")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip() or "unknown"
    report = {"command": command_line("bench_stacked_seeds.py", argv), "commit": commit, "profile": args.profile,
              "machine": machine_info(torch.device("cpu")), "note": args.note,
              "results": [measure(k, args.repeats, args.warmup, args.profile) for k in args.seeds_per_call]}
    write_report(args.out, report, write_markdown)
    return report


if __name__ == "__main__":
    main()
