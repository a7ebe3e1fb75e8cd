"""Benchmark: how fast the pretraining data pipeline delivers clips (two augmented views each).

Variants, at the paper's settings (window 64, up to 300 stored frames, batch 64):

* ``dataset, W workers`` -- :class:`i2md_lib.data.datasets.PretrainDataset` behind a
  ``DataLoader`` with W = 0 (main process), 1, 2 workers: per clip, read its frames from
  the memory-mapped split, then two NumPy views (temporal crop-resize + one spatial
  augmentation), exactly what :func:`i2md_lib.train.pretrain` uses;
* ``augment_batch (read + torch)`` -- read a batch of whole clips from the memory map
  into one tensor and run :func:`i2md_lib.data.augment.augment_batch` twice (the
  batched torch augmentation; same distribution of views);
* ``augment_batch (torch only)`` -- the same on a batch already in memory.

The split is written once to a temporary folder in the CMD layout and memory-mapped
(as ``data.mmap=True`` does); after the first round it sits in the page cache, so
this measures the CPU cost of the pipeline, not the disk. Variants alternate round
by round; each measurement is ``--batches`` batches, and a worker loader's
start-up (first batch) is reported separately from its steady throughput.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_loading.py
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import command_line, machine_info, write_report  # noqa: E402
from i2md_lib.config import ExperimentConfig  # noqa: E402
from i2md_lib.data.augment import augment_batch  # noqa: E402
from i2md_lib.data.datasets import PretrainDataset  # noqa: E402
from i2md_lib.data.store import SkeletonArrays, load_split, save_split  # noqa: E402
from i2md_lib.train import epoch_batches  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def write_split(folder: Path, clips: int, seed: int = 0) -> SkeletonArrays:
    """``clips`` random-walk skeletons ``(N, 3, 300, 25, 2)``, lengths ~ U(40, 200), in the CMD layout."""
    rng = np.random.default_rng(seed)
    num_frame = rng.integers(40, 201, size=clips)
    data = np.zeros((clips, 3, 300, 25, 2), dtype=np.float32)
    for i, n in enumerate(num_frame):
        walk = np.cumsum(rng.normal(scale=0.01, size=(3, n, 25, 2)), axis=1, dtype=np.float32)
        data[i, :, :n] = walk + rng.normal(scale=0.3, size=(3, 1, 25, 2)).astype(np.float32)
    arrays = SkeletonArrays(data, num_frame, rng.integers(0, 60, size=clips), [f"clip{i}" for i in range(clips)])
    save_split(folder, "train", arrays)
    return load_split(folder, "train", mmap=True)


def time_loader(dataset: PretrainDataset, batches: list[list[int]], workers: int) -> dict:
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=workers)
    start = time.perf_counter()
    first = None
    clips = 0
    for view_q, view_k, index in loader:
        clips += len(index)
        if first is None:
            first = time.perf_counter() - start
            steady_start, steady_clips = time.perf_counter(), 0
        else:
            steady_clips += len(index)
    total = time.perf_counter() - start
    steady = time.perf_counter() - steady_start
    return {"clips": clips, "seconds": total, "first_batch_s": first, "clips_per_s": clips / total,
            "steady_clips_per_s": steady_clips / steady if steady > 0 else float("nan")}


def time_batched(arrays: SkeletonArrays, batches: list[list[int]], cfg: ExperimentConfig,
                 read: bool, seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    aug, window = cfg.augment, cfg.data.window
    in_memory = None if read else [torch.from_numpy(np.asarray(arrays.data[sorted(b)])) for b in batches]
    start = time.perf_counter()
    clips = 0
    for i, batch in enumerate(batches):
        rows = sorted(batch)   # memory maps read fastest in file order
        x = torch.from_numpy(np.asarray(arrays.data[rows])) if read else in_memory[i]    # (N, 3, 300, 25, 2)
        num_frame = torch.from_numpy(np.minimum(arrays.num_frame[rows], cfg.data.max_frames))
        view_q = augment_batch(x, num_frame, aug, window, generator)
        view_k = augment_batch(x, num_frame, aug, window, generator)
        clips += len(rows)   # each with two views (view_q, view_k)
    total = time.perf_counter() - start
    return {"clips": clips, "seconds": total, "clips_per_s": clips / total}


def run(clips: int, batches_per_round: int, rounds: int, workers: list[int]) -> dict:
    cfg = ExperimentConfig.for_profile("full")
    with tempfile.TemporaryDirectory() as tmp:
        arrays = write_split(Path(tmp), clips)
        assert isinstance(arrays.data, np.memmap)
        dataset = PretrainDataset.from_config(arrays, cfg)
        results: dict[str, list[dict]] = {}
        for r in range(rounds):
            dataset.set_epoch(r)
            batches = epoch_batches(len(dataset), cfg.pretrain.batch_size, 0, r)[:batches_per_round]
            for w in workers:
                name = f"PretrainDataset, {w} worker{'s' if w != 1 else ''}"
                results.setdefault(name, []).append(time_loader(dataset, batches, w))
            results.setdefault("augment_batch (read + torch)", []).append(
                time_batched(arrays, batches, cfg, read=True, seed=r))
            results.setdefault("augment_batch (torch only)", []).append(
                time_batched(arrays, batches, cfg, read=False, seed=r))
            print(f"round {r}: " + ", ".join(f"{k}: {v[-1]['clips_per_s']:.0f} clips/s" for k, v in results.items()),
                  flush=True)
    summary = {}
    for name, runs in results.items():
        summary[name] = {"clips_per_s": statistics.median(x["clips_per_s"] for x in runs)}
        if "steady_clips_per_s" in runs[0]:
            summary[name]["steady_clips_per_s"] = statistics.median(x["steady_clips_per_s"] for x in runs)
            summary[name]["first_batch_s"] = statistics.median(x["first_batch_s"] for x in runs)
    base = summary[f"PretrainDataset, {workers[0]} worker{'s' if workers[0] != 1 else ''}"]["clips_per_s"]
    for s in summary.values():
        s["ratio"] = s["clips_per_s"] / base
    return {"settings": {"clips": clips, "batch": cfg.pretrain.batch_size, "window": cfg.data.window,
                         "max_frames": cfg.data.max_frames, "batches_per_round": batches_per_round,
                         "rounds": rounds, "num_frame": "U(40, 200)", "stored_frames": 300},
            "runs": results, "summary": summary}


def write_markdown(path: Path, report: dict) -> None:
    info, s = report["machine"], report["settings"]
    lines = [
        "# Pretraining data pipeline: clips per second",
        "",
        f"Generated by `benchmarks/bench_loading.py` (raw numbers: [`{path.with_suffix('.json').name}`]"
        f"({path.with_suffix('.json').name})). Command, from the repository root:",
        "",
        f"```\n{report['command']}\n```",
        "",
        f"Machine: {info['cpu']}, {info['logical_cpus']} logical CPUs, torch {info['torch']} "
        f"({info['torch_threads']} threads, OMP_NUM_THREADS {info['OMP_NUM_THREADS']}). Load average "
        f"{', '.join(f'{x:.1f}' for x in info['load_average_at_start'])} at the start, "
        f"{', '.join(f'{x:.1f}' for x in report['load_average_at_end'])} at the end: other jobs "
        "shared the 2 cores, so worker processes compete with them and with the main process.",
        "",
        f"Data: {s['clips']} random-walk clips stored as `(N, 3, {s['stored_frames']}, 25, 2)` float32 "
        f"(lengths {s['num_frame']}), memory-mapped from a temporary folder (page cache warm after the "
        f"first round). Settings of the `full` profile: window {s['window']}, up to {s['max_frames']} "
        f"frames, batch {s['batch']}; two augmented views per clip. {s['rounds']} rounds, variants "
        f"alternating; each measurement is {s['batches_per_round']} batches; medians over rounds.",
        "",
        "| variant | clips/s (incl. start-up) | ratio to the first row | steady clips/s (after the first batch) "
        "| first batch (s) |",
        "|---|---|---|---|---|",
    ]
    for name, r in report["summary"].items():
        steady = f"{r['steady_clips_per_s']:.0f}" if "steady_clips_per_s" in r else "-"
        first = f"{r['first_batch_s']:.2f}" if "first_batch_s" in r else "-"
        lines.append(f"| {name} | {r['clips_per_s']:.0f} | {r['ratio']:.2f}x | {steady} | {first} |")
    lines += [
        "",
        "A training step needs `batch` clips; compare with the step times in [`step.md`](step.md) to see "
        "whether loading can keep up (it runs in worker processes, overlapped with the step, when "
        "`data.num_workers` > 0; `-1` picks the usable CPUs per process, at most 8).",
        "",
        "Related: NTU preprocessing (once per dataset), [`preprocess.md`](preprocess.md).",
    ]
    if report.get("note"):
        lines += ["", report["note"]]
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=640, help="clips in the temporary split")
    parser.add_argument("--batches", type=int, default=8, help="batches per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", default="0,1,2", help="comma list of DataLoader worker counts")
    parser.add_argument("--out", default=str(RESULTS / "loading"), help="path stem of .json/.md ('' = no files)")
    parser.add_argument("--note", default="")
    args = parser.parse_args(argv)
    report = {"command": command_line("bench_loading.py", argv), "machine": machine_info(torch.device("cpu")), "note": args.note}
    report.update(run(args.clips, args.batches, args.rounds, [int(w) for w in args.workers.split(",")]))
    report["load_average_at_end"] = os.getloadavg()
    for name, r in report["summary"].items():
        print(f"{name:32s} {r['clips_per_s']:8.0f} clips/s  ({r['ratio']:.2f}x)")
    if args.out:
        write_report(args.out, report, write_markdown)


if __name__ == "__main__":
    main()
