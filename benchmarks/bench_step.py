"""Benchmark: time and peak memory of one real CMD pretraining step, our encoder vs a per-frame loop.

The step is exactly what :func:`i2md_lib.train.pretrain` does per batch for
``pretrain.method = cmd``: :class:`i2md_lib.models.moco.MoCo` forward (three modalities,
query and momentum key encoders, InfoNCE + CMD's six distillation terms, enqueue),
backward, SGD step. Two models with identical weights run it on identical inputs:

* ``nn_gru`` -- the library's encoder as configured by default
  (:class:`~i2md_lib.models.encoders.CausalTwinGRU`, ``encoder.recurrence = nn_gru``):
  per layer two one-layer ``nn.GRU`` calls over the whole clip (cuDNN on a GPU);
* ``loop`` -- the same encoder with the opt-in ``encoder.recurrence = loop``: per layer
  one input product for both cells and all frames, then both cells step together with a
  hand-written backward (:mod:`i2md_lib.models.gru_recurrence`);
* ``per-frame`` -- the CMD reference's way, written below: a bidirectional multi-layer
  ``nn.GRU`` called on one frame at a time with the hidden state carried over (it keeps
  only the last output; the reference also concatenates all outputs, a bit slower).

Sizes are the library's own profiles: ``classroom`` = the ``book`` profile (what the
chapters train), ``paper`` = the ``full`` profile (BiGRU 3 x 1024, 64 frames, batch 64,
queue 16384). Times: the two implementations alternate step by step (A, B, A, B, ...)
in one process; the ratios are per-frame / loop and per-frame / nn_gru. Peak memory: each
(size, implementation) runs in a fresh child process -- peak resident memory
(``VmHWM``) minus the resident memory after building the model, i.e. what the training
steps add (activations, gradients, optimizer state); on CUDA
``torch.cuda.max_memory_allocated``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_step.py                  # CPU
    .venv/bin/python benchmarks/bench_step.py --device cuda --repeats 10        # a GPU
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import add_step_timing_options, command_line, machine_info, render_report, write_report  # noqa: E402
from i2md_lib.config import ExperimentConfig  # noqa: E402
from i2md_lib.models.encoders import SequenceEncoder  # noqa: E402
from i2md_lib.models.moco import MoCo, build_model  # noqa: E402
from i2md_lib.train import train_step  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = {"tiny": "smoke", "classroom": "book", "paper": "full"}   # benchmark size -> config profile
IMPLEMENTATIONS = ("loop", "nn_gru", "per-frame")
LIBRARY = ("loop", "nn_gru")          # the library's two recurrences, each compared with per-frame


class PerFrameBIGRU(SequenceEncoder):
    """The reference BIGRU's computation: one bidirectional ``nn.GRU`` call per frame."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int) -> None:
        super().__init__(input_size, hidden_size, num_layers)   # sizes, input BatchNorm
        self.gru = nn.GRU(input_size, hidden_size, num_layers, bidirectional=True, batch_first=True)

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """``frames (N, T, input_size)`` -> ``(N, 2H)``, the output after the last frame."""
        seq = self.input_norm(frames.transpose(1, 2)).transpose(1, 2)
        hidden = None
        for t in range(seq.shape[1]):
            out, hidden = self.gru(seq[:, t:t + 1], hidden)
        return out[:, 0]

    @classmethod
    def copy_of(cls, encoder: SequenceEncoder) -> "PerFrameBIGRU":
        """A per-frame encoder with the weights of a library ``bigru_cmd`` encoder."""
        ref = encoder.reference_state_dict()      # the reference BIGRU's names
        clone = cls(encoder.input_size, encoder.hidden_size, encoder.num_layers)
        state = {k.replace("encoder.gru.", "gru."): v for k, v in ref.items()}
        clone.load_state_dict(state)
        return clone


def config(size: str) -> ExperimentConfig:
    return ExperimentConfig.for_profile(SIZES[size], {"pretrain.method": "cmd"})


def build(size: str, implementation: str, device: torch.device, seed: int = 0) -> MoCo:
    """The CMD model of ``size`` with ``encoder.recurrence = implementation`` (``loop`` or
    ``nn_gru``); ``per-frame`` swaps every encoder for a per-frame copy. Same seed, same weights."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"unknown implementation {implementation!r}")
    torch.manual_seed(seed)
    cfg = config(size)
    model = build_model(cfg.replace({"encoder.recurrence": implementation}) if implementation in LIBRARY else cfg)
    if implementation == "per-frame":
        for encoders in (model.encoder_q, model.encoder_k):
            for m in list(encoders):
                encoders[m] = PerFrameBIGRU.copy_of(encoders[m])
        for p in model.encoder_k.parameters():
            p.requires_grad = False
    return model.to(device)


def sgd(model: MoCo) -> torch.optim.Optimizer:
    p = model.pcfg
    return torch.optim.SGD([q for q in model.parameters() if q.requires_grad], lr=p.lr,
                           momentum=p.sgd_momentum, weight_decay=p.weight_decay)


def inputs(size: str, step: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Two views ``(N, 3, window, 25, 2)``: skeleton-scale random numbers, seeded by ``step``."""
    cfg = config(size)
    g = torch.Generator().manual_seed(1000 + step)
    shape = (cfg.pretrain.batch_size, 3, cfg.data.window, 25, 2)
    return (0.3 * torch.randn(shape, generator=g)).to(device), (0.3 * torch.randn(shape, generator=g)).to(device)


def sgd_step(model: MoCo, optimizer: torch.optim.Optimizer, view_q: torch.Tensor,
             view_k: torch.Tensor) -> float:
    """One step of the training loop (forward, losses, backward, SGD); the total loss."""
    terms, _ = train_step(model, model, view_q, view_k, epoch=0)
    optimizer.zero_grad(set_to_none=True)
    terms["total"].backward()
    optimizer.step()
    return float(terms["total"].detach())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- the arithmetic floor ------------------------------------------------------------------------
def gru_gflop(size: str) -> float:
    """Multiply-add FLOPs (1e9) of the GRU matrix products in one CMD step, any implementation.

    Per encoder forward: for every layer, frame and cell, ``2 N 3H (in + H)`` (input and
    recurrent products). A step runs, per modality, the query encoder forward and
    backward (about 3x the forward: gradients for inputs and weights) and the key encoder
    forward: 4 forwards' worth, times 3 modalities. Heads, losses and SGD are left out.
    """
    cfg = config(size)
    n, t, h = cfg.pretrain.batch_size, cfg.data.window, cfg.encoder.hidden_size
    per_frame = sum(2 * 2 * n * 3 * h * ((cfg.encoder.input_size if layer == 0 else 2 * h) + h)
                    for layer in range(cfg.encoder.num_layers))
    return 3 * 4 * per_frame * t / 1e9


def gemm_gflops(device: torch.device, repeats: int = 10) -> float:
    """Measured speed (GFLOP/s) of one large float32 matrix product, ``4096x2048 @ 2048x3072``."""
    a, b = torch.randn(4096, 2048, device=device), torch.randn(2048, 3072, device=device)
    for _ in range(2):
        a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * 4096 * 2048 * 3072 * repeats / (time.perf_counter() - start) / 1e9


# -- times: both implementations in one process, interleaved ----------------------------------
def time_size(size: str, device: torch.device, repeats: int, warmup: int) -> dict:
    models = {impl: build(size, impl, device) for impl in IMPLEMENTATIONS}
    optimizers = {impl: sgd(m) for impl, m in models.items()}
    wall = {impl: [] for impl in IMPLEMENTATIONS}
    cpu = {impl: [] for impl in IMPLEMENTATIONS}
    losses = {impl: [] for impl in IMPLEMENTATIONS}
    for step in range(warmup + repeats):
        view_q, view_k = inputs(size, step, device)
        for impl in IMPLEMENTATIONS:
            sync(device)
            start, start_cpu = time.perf_counter(), time.process_time()
            loss = sgd_step(models[impl], optimizers[impl], view_q, view_k)
            sync(device)
            elapsed, elapsed_cpu = time.perf_counter() - start, time.process_time() - start_cpu
            losses[impl].append(loss)
            if step >= warmup:
                wall[impl].append(elapsed)
                cpu[impl].append(elapsed_cpu)
            print(f"[{size}] step {step}{' (warm-up)' if step < warmup else ''} {impl:9s} "
                  f"wall {elapsed:8.3f} s  cpu {elapsed_cpu:8.3f} s  loss {loss:.6f}", flush=True)
    median = {k: statistics.median(v) for k, v in wall.items()}
    median_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    diffs = {impl: max(abs(a - b) / abs(b) for a, b in zip(losses[impl], losses["per-frame"]))
             for impl in LIBRARY}
    cfg = config(size)
    return {
        "profile": SIZES[size], "batch": cfg.pretrain.batch_size, "window": cfg.data.window,
        "hidden": cfg.encoder.hidden_size, "layers": cfg.encoder.num_layers,
        "queue": cfg.pretrain.queue_size, "cmd_topk": cfg.pretrain.cmd_topk,
        "parameters": sum(p.numel() for p in models["loop"].parameters()),
        "repeats": repeats, "warmup": warmup, "wall_s": wall, "cpu_s": cpu,
        "median_s": median, "median_cpu_s": median_cpu,
        "gru_gflop": gru_gflop(size),
        "speedup": {impl: median["per-frame"] / median[impl] for impl in LIBRARY},
        "cpu_speedup": {impl: median_cpu["per-frame"] / median_cpu[impl] for impl in LIBRARY},
        "losses": losses, "max_rel_loss_diff": diffs,
    }


# -- memory: one fresh process per (size, implementation) -------------------------------------
def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def memory_child(size: str, impl: str, device: torch.device, steps: int) -> dict:
    """Run ``steps`` training steps in this (fresh) process; report the peak memory."""
    model = build(size, impl, device)
    optimizer = sgd(model)
    view_q, view_k = inputs(size, 0, device)
    sync(device)
    result = {"size": size, "implementation": impl, "steps": steps,
              "model_mib": sum(t.numel() * t.element_size() for t in
                               [*model.parameters(), *model.buffers()]) / 2**20}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        before = _status_kib("VmRSS") * 1024
    for _ in range(steps):
        sgd_step(model, optimizer, view_q, view_k)
    sync(device)
    if device.type == "cuda":
        result.update(kind="cuda max_memory_allocated", peak_mib=torch.cuda.max_memory_allocated(device) / 2**20,
                      before_mib=before / 2**20)
    else:
        result.update(kind="CPU peak RSS (VmHWM)", peak_mib=_status_kib("VmHWM") / 1024, before_mib=before / 2**20)
    result["step_mib"] = result["peak_mib"] - result["before_mib"]
    return result


def measure_memory(size: str, device: torch.device, steps: int) -> dict:
    out = {}
    for impl in IMPLEMENTATIONS:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-child", size, impl,
               "--device", str(device), "--memory-steps", str(steps)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"memory child {size}/{impl} failed:\n{proc.stderr[-3000:]}")
        out[impl] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"[{size}] memory {impl:9s} peak {out[impl]['peak_mib']:.0f} MiB, "
              f"steps add {out[impl]['step_mib']:.0f} MiB", flush=True)
    return out


# -- report ------------------------------------------------------------------------------------
def step_machine_info(device: torch.device) -> dict:
    """:func:`machine_info` plus the measured matrix-product speed and the code's commit."""
    return {**machine_info(device), "gemm_gflops": gemm_gflops(device), "commit": git_commit()}


def git_commit() -> str:
    """``git describe``-style id of the measured code: short hash, ``-dirty`` if files were changed."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()
    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def write_markdown(path: Path, report: dict) -> None:
    info = report["machine"]
    lines = [
        "# One CMD pretraining step: time and peak memory",
        "",
        f"Generated by `benchmarks/bench_step.py` (raw numbers: [`{path.with_suffix('.json').name}`]"
        f"({path.with_suffix('.json').name})). Command, from the repository root:",
        "",
        f"```\n{report['command']}\n```",
        "",
        f"Machine: {info['cpu']}, {info['logical_cpus']} logical CPUs, torch {info['torch']} "
        f"({info['torch_threads']} threads, OMP_NUM_THREADS {info['OMP_NUM_THREADS']}), device "
        f"`{info['device']}`{', ' + info['gpu'] if 'gpu' in info else ''}"
        f"{'; code at commit ' + info['commit'] if 'commit' in info else ''}. Load average (1, 5, 15 min) "
        f"{', '.join(f'{x:.1f}' for x in info['load_average_at_start'])} at the start and "
        f"{', '.join(f'{x:.1f}' for x in report['load_average_at_end'])} at the end (well above the "
        "thread count means other jobs shared the machine and absolute times are noisy); the ratios "
        "come from steps that alternate between the implementations.",
    ]
    if info["device"] == "cpu":
        lines += ["", "No GPU was available to this benchmark run: every number here is CPU. On a GPU run "
                  "`benchmarks/bench_step.py --device cuda` (memory then is `torch.cuda.max_memory_allocated`)."]
    lines += [
        "",
        "One step = `train.train_step` of `pretrain.method=cmd` (joint, motion, bone: query encoder + head "
        "with grad, momentum update, key encoder + head, InfoNCE against the queue, the six CMD "
        "distillation terms, enqueue), backward, SGD. All implementations start from the same weights "
        "and see the same inputs, so their losses agree (last column).",
        "",
        "| size (profile) | BiGRU | frames | batch | queue | timed steps | loop (s/step) | nn_gru (s/step) "
        "| per-frame (s/step) | speed-up loop (wall / CPU time) | speed-up nn_gru, the default (wall / CPU time) "
        "| max rel. loss diff (loop / nn_gru vs per-frame) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in report["times"].items():
        t, up, cpu_up, diff = r["median_s"], r["speedup"], r["cpu_speedup"], r["max_rel_loss_diff"]
        lines.append(
            f"| {name} ({r['profile']}) | {r['layers']} x {r['hidden']} | {r['window']} | {r['batch']} "
            f"| {r['queue']} | {r['repeats']} (+{r['warmup']} warm-up) | {t['loop']:.3f} | {t['nn_gru']:.3f} "
            f"| {t['per-frame']:.3f} | {up['loop']:.2f}x / {cpu_up['loop']:.2f}x "
            f"| **{up['nn_gru']:.2f}x** / {cpu_up['nn_gru']:.2f}x | {diff['loop']:.1e} / {diff['nn_gru']:.1e} |")
    peak = info["gemm_gflops"]
    lines += [
        "",
        f"The arithmetic floor. Every implementation performs the same GRU matrix products (the column "
        f"'GRU GFLOP' counts them; heads, losses and SGD are left out). One large float32 matrix product "
        f"runs at {peak:.0f} GFLOP/s on this machine with these threads"
        + (f" (measured {info['gemm_measured']})" if "gemm_measured" in info else "")
        + "; no step can take less than 'GRU GFLOP' divided by that. The last columns give the speed each "
        "implementation reaches over its whole step, and the largest speed-up over the per-frame loop that "
        "any implementation of the same arithmetic could reach (per-frame time / floor).",
        "",
        "| size | GRU GFLOP | floor (s) | loop GFLOP/s | nn_gru GFLOP/s | per-frame GFLOP/s | largest possible speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in report["times"].items():
        flop, t = r["gru_gflop"], r["median_s"]
        lines.append(f"| {name} | {flop:.0f} | {flop / peak:.2f} | {flop / t['loop']:.0f} | {flop / t['nn_gru']:.0f} "
                     f"| {flop / t['per-frame']:.0f} | {t['per-frame'] * peak / flop:.2f}x |")
    if report["memory"]:
        first = next(iter(report["memory"].values()))["loop"]
        lines += [
            "",
            f"Peak memory ({first['kind']}), each in a fresh process after {first['steps']} training steps; "
            "'steps add' = peak minus the memory held right after building the model (weights, queues).",
            "",
            "| size | model + queues (MiB) | " + " | ".join(f"{impl} peak / steps add (MiB)" for impl in IMPLEMENTATIONS) + " |",
            "|---|---|" + "---|" * len(IMPLEMENTATIONS),
        ]
        for name, mem in report["memory"].items():
            lines.append(f"| {name} | {mem['loop']['model_mib']:.0f} | " + " | ".join(
                f"{mem[impl]['peak_mib']:.0f} / {mem[impl]['step_mib']:.0f}" for impl in IMPLEMENTATIONS) + " |")
    if report.get("note"):
        lines += ["", report["note"]]
    lines += ["", "Related: the NTU preprocessing benchmark, [`preprocess.md`](preprocess.md) "
              "(`benchmarks/bench_preprocess.py`), and data loading, [`loading.md`](loading.md) "
              "(`benchmarks/bench_loading.py`)."]
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_step_timing_options(parser, SIZES, repeats=5, paper_repeats=2)
    parser.add_argument("--memory-steps", type=int, default=2, help="steps of each memory child")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory children")
    parser.add_argument("--out", default=str(RESULTS / "step"), help="path stem of the .json/.md ('' = no files)")
    parser.add_argument("--note", default="", help="free text at the end of the markdown")
    parser.add_argument("--render", metavar="JSON", help="only rewrite the markdown of an earlier run's "
                        "json (and its note, when --note is given)")
    parser.add_argument("--memory-child", nargs=2, metavar=("SIZE", "IMPL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    device = torch.device(args.device)

    if args.render:
        render_report(args.render, args.note, write_markdown)
        return
    if args.memory_child:
        print(json.dumps(memory_child(*args.memory_child, device, args.memory_steps)))
        return
    report = {"command": command_line("bench_step.py", argv), "machine": step_machine_info(device), "times": {}, "memory": {}, "note": args.note}
    for size in args.sizes.split(","):
        if size not in SIZES:
            parser.error(f"unknown size {size!r}; choose from {', '.join(SIZES)}")
        repeats = args.paper_repeats if size == "paper" else args.repeats
        report["times"][size] = r = time_size(size, device, repeats, args.warmup)
        print(f"[{size}] median " + ", ".join(f"{k} {v:.3f} s" for k, v in r["median_s"].items())
              + "; per-frame / " + ", ".join(f"{k} {v:.2f}x" for k, v in r["speedup"].items()), flush=True)
        if not args.no_memory:
            report["memory"][size] = measure_memory(size, device, args.memory_steps)
    report["load_average_at_end"] = os.getloadavg()
    if args.out:
        write_report(args.out, report, write_markdown)


if __name__ == "__main__":
    main()
