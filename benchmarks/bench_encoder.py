"""Time one CMD-like pretraining step: our whole-sequence encoder vs the per-frame loop.

Both implementations compute the same function (the CMD reference encoder) from the same
weights; only the way the GRU is called differs:

* ``whole-seq`` -- :class:`i2md_lib.models.encoders.CausalTwinGRU`: per layer two
  one-layer ``nn.GRU`` calls over the whole clip.
* ``per-frame`` -- the reference's way (written here): a bidirectional ``nn.GRU`` called
  on one frame at a time, the hidden state carried over. Unlike the reference we keep
  only the last output instead of concatenating every frame's output (the reference's
  ``torch.cat`` in the loop costs extra), so this baseline is, if anything, a bit fast.

One step = for each of joint/motion/bone: momentum update of the key encoder, query
encoder + head with grad, key encoder + head without grad, InfoNCE against a random
queue; then backward of the summed loss, an SGD step and the enqueue. The two
implementations run interleaved (A, B, A, B, ...) on the same inputs, and the losses are
compared step by step.

    OMP_NUM_THREADS unset:  .venv/bin/python benchmarks/bench_encoder.py
    a GPU:                  .venv/bin/python benchmarks/bench_encoder.py --device cuda
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import add_step_timing_options, command_line, machine_info  # noqa: E402
from i2md_lib.models.encoders import CausalTwinGRU, ProjectionHead, flatten_frames  # noqa: E402
from i2md_lib.skeleton import PARENTS  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
MODALITIES = ("joint", "motion", "bone")


@dataclass(frozen=True)
class Size:
    hidden: int
    layers: int
    frames: int
    batch: int
    proj_hidden: int
    out_dim: int
    queue: int


SIZES = {
    "tiny": Size(hidden=16, layers=2, frames=8, batch=8, proj_hidden=32, out_dim=16, queue=64),
    "classroom": Size(hidden=128, layers=2, frames=32, batch=64, proj_hidden=256, out_dim=64, queue=512),
    "paper": Size(hidden=1024, layers=3, frames=64, batch=64, proj_hidden=2048, out_dim=128, queue=16384),
}


class _Recurrent(nn.Module):
    def __init__(self, hidden: int, layers: int) -> None:
        super().__init__()
        self.gru = nn.GRU(150, hidden, num_layers=layers, bidirectional=True, batch_first=True)


class PerFrameBIGRU(nn.Module):
    """The reference encoder's computation and state-dict names, one frame per GRU call."""

    def __init__(self, hidden: int, layers: int) -> None:
        super().__init__()
        self.input_norm = nn.BatchNorm1d(150)
        self.encoder = _Recurrent(hidden, layers)
        with torch.no_grad():
            for p in self.encoder.gru.parameters():
                if p.dim() == 2:
                    nn.init.xavier_uniform_(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (N, C, T, V, M)`` -> ``(N, 2H)``."""
        seq = self.input_norm(flatten_frames(x).transpose(1, 2)).transpose(1, 2)
        hidden = None
        for t in range(seq.shape[1]):
            out, hidden = self.encoder.gru(seq[:, t:t + 1], hidden)
        return out[:, 0]


class StepModel(nn.Module):
    """Query/key encoders + heads + queues for the three modalities (MoCo-style)."""

    def __init__(self, encoders: dict[str, nn.Module], heads: dict[str, nn.Module],
                 queues: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.enc_q = nn.ModuleDict(encoders)
        self.head_q = nn.ModuleDict(heads)
        self.enc_k = copy.deepcopy(self.enc_q).requires_grad_(False)
        self.head_k = copy.deepcopy(self.head_q).requires_grad_(False)
        for m, queue in queues.items():
            self.register_buffer(f"queue_{m}", queue.clone())
        self.ptr = 0

    def step(self, views_q: dict[str, torch.Tensor], views_k: dict[str, torch.Tensor],
             optimizer: torch.optim.Optimizer, momentum: float = 0.999, tau: float = 0.07) -> float:
        loss = torch.zeros((), device=views_q["joint"].device)
        keys = {}
        for m in MODALITIES:
            with torch.no_grad():  # EMA of the key encoder (parameters only, as the reference)
                for pq, pk in zip(list(self.enc_q[m].parameters()) + list(self.head_q[m].parameters()),
                                  list(self.enc_k[m].parameters()) + list(self.head_k[m].parameters())):
                    pk.mul_(momentum).add_(pq, alpha=1 - momentum)
            q = F.normalize(self.head_q[m](self.enc_q[m](views_q[m])), dim=1)       # (N, D)
            with torch.no_grad():
                keys[m] = F.normalize(self.head_k[m](self.enc_k[m](views_k[m])), dim=1)  # (N, D)
            queue = getattr(self, f"queue_{m}")                                       # (D, K)
            logits = torch.cat([(q * keys[m]).sum(1, keepdim=True), q @ queue], dim=1) / tau
            loss = loss + F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            n = len(keys["joint"])
            for m in MODALITIES:
                queue = getattr(self, f"queue_{m}")
                idx = (torch.arange(n, device=queue.device) + self.ptr) % queue.shape[1]
                queue[:, idx] = keys[m].T
            self.ptr = (self.ptr + n) % getattr(self, "queue_joint").shape[1]
        return float(loss.detach())


def modality_views(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """joint / motion (forward difference, last frame 0) / bone (joint minus parent)."""
    motion = torch.zeros_like(x)
    motion[:, :, :-1] = x[:, :, 1:] - x[:, :, :-1]
    bone = x - x[:, :, :, torch.tensor(PARENTS.tolist(), device=x.device)]
    return {"joint": x, "motion": motion, "bone": bone}


def build_pair(size: Size, device: torch.device, seed: int = 0) -> tuple[StepModel, StepModel]:
    """(whole-sequence model, per-frame model) holding identical weights."""
    torch.manual_seed(seed)
    reference = {m: PerFrameBIGRU(size.hidden, size.layers) for m in MODALITIES}
    ours = {}
    for m, ref in reference.items():
        ours[m] = CausalTwinGRU(150, size.hidden, size.layers)
        ours[m].load_reference_state_dict(ref.state_dict())
    heads = {m: ProjectionHead(2 * size.hidden, size.proj_hidden, size.out_dim) for m in MODALITIES}
    queues = {m: F.normalize(torch.randn(size.out_dim, size.queue), dim=0) for m in MODALITIES}
    model_a = StepModel(ours, copy.deepcopy(heads), queues).to(device)
    model_b = StepModel(reference, copy.deepcopy(heads), queues).to(device)
    return model_a, model_b


def sgd(model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-4)


def run_size(name: str, size: Size, device: torch.device, repeats: int, warmup: int) -> dict:
    model_a, model_b = build_pair(size, device)
    opt_a, opt_b = sgd(model_a), sgd(model_b)
    times = {"whole-seq": [], "per-frame": []}
    cpu_times = {"whole-seq": [], "per-frame": []}
    losses = {"whole-seq": [], "per-frame": []}
    for step in range(warmup + repeats):
        g = torch.Generator().manual_seed(1000 + step)
        clip_q = torch.randn(size.batch, 3, size.frames, 25, 2, generator=g).to(device)
        clip_k = torch.randn(size.batch, 3, size.frames, 25, 2, generator=g).to(device)
        views_q, views_k = modality_views(clip_q), modality_views(clip_k)
        for label, model, opt in (("whole-seq", model_a, opt_a), ("per-frame", model_b, opt_b)):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start, start_cpu = time.perf_counter(), time.process_time()
            loss = model.step(views_q, views_k, opt)
            if device.type == "cuda":
                torch.cuda.synchronize()
            elapsed, elapsed_cpu = time.perf_counter() - start, time.process_time() - start_cpu
            losses[label].append(loss)
            if step >= warmup:
                times[label].append(elapsed)
                cpu_times[label].append(elapsed_cpu)
            print(f"[{name}] step {step}{' (warm-up)' if step < warmup else ''} {label:9s} "
                  f"wall {elapsed:8.3f} s  cpu {elapsed_cpu:8.3f} s  loss {loss:.6f}", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu_times.items()}
    diffs = [abs(a - b) for a, b in zip(losses["whole-seq"], losses["per-frame"])]
    return {
        "size": asdict(size), "repeats": repeats, "warmup": warmup,
        "times_s": times, "median_s": med, "speedup": med["per-frame"] / med["whole-seq"],
        "cpu_times_s": cpu_times, "median_cpu_s": med_cpu,
        "cpu_speedup": med_cpu["per-frame"] / med_cpu["whole-seq"],
        "losses": losses, "max_abs_loss_diff": max(diffs),
        "max_rel_loss_diff": max(d / abs(b) for d, b in zip(diffs, losses["per-frame"])),
    }


def write_markdown(path: Path, runs: list[dict]) -> None:
    lines = [
        "# One CMD pretraining step: whole-sequence encoder vs per-frame loop",
        "",
        f"Generated by `benchmarks/bench_encoder.py` from `{path.with_suffix('.json').name}` "
        "(every step's times and losses are there).",
        "",
        "One step: for joint, motion and bone, EMA update of the key encoder, query encoder + "
        "projection head with grad, key encoder + head without grad, InfoNCE against the queue "
        "(temperature 0.07); backward of the summed loss, SGD (lr 0.01, momentum 0.9, wd 1e-4), "
        "enqueue. Both implementations start from identical weights, see identical inputs and run "
        "interleaved (A, B, A, B, ...); the loss column compares them step by step, warm-up "
        "included. The per-frame baseline keeps only the last output (the reference also "
        "concatenates every frame's output), so it is if anything slightly favoured.",
    ]
    for i, report in enumerate(runs, 1):
        info = report["machine"]
        lines += [
            "",
            f"## Run {i}{': ' + report['label'] if report.get('label') else ''}",
            "",
            f"Command: `{report['command']}`",
            "",
            f"Machine: {info['cpu']}, {info['logical_cpus']} logical CPUs, torch {info['torch']} "
            f"(torch threads: {info['torch_threads']}, OMP_NUM_THREADS {info['OMP_NUM_THREADS']}), "
            f"device `{info['device']}`{', ' + info['gpu'] if 'gpu' in info else ''}; "
            f"load average at start {', '.join(f'{x:.2f}' for x in info['load_average_at_start'])}, "
            f"at end {', '.join(f'{x:.2f}' for x in report['load_average_at_end'])}.",
            "",
            "| size | hidden x layers | T | batch | queue | timed steps | whole-seq wall (s) "
            "| per-frame wall (s) | wall speed-up | CPU-time speed-up | max loss diff (abs / rel) |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, r in report["results"].items():
            s = r["size"]
            cpu = f"{r['cpu_speedup']:.2f}x" if "cpu_speedup" in r else "not recorded"
            lines.append(
                f"| {name} | {s['hidden']} x {s['layers']} | {s['frames']} | {s['batch']} "
                f"| {s['queue']} | {r['repeats']} (+{r['warmup']} warm-up) "
                f"| {r['median_s']['whole-seq']:.3f} | {r['median_s']['per-frame']:.3f} "
                f"| {r['speedup']:.2f}x | {cpu} "
                f"| {r['max_abs_loss_diff']:.2e} / {r['max_rel_loss_diff']:.2e} |"
            )
        if report.get("note"):
            lines += ["", report["note"]]
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_step_timing_options(parser, SIZES, repeats=7, paper_repeats=5)
    parser.add_argument("--out", default=str(RESULTS / "encoder_step"),
                        help="path stem of the .json and .md results ('' to skip writing)")
    parser.add_argument("--note", default="", help="free text under this run in the markdown")
    parser.add_argument("--label", default="", help="a title for this run in the markdown")
    parser.add_argument("--append", action="store_true",
                        help="add this run to the existing results instead of replacing them")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    report = {
        "command": command_line("bench_encoder.py", argv),
        "label": args.label, "machine": machine_info(device), "results": {}, "note": args.note,
    }
    for name in args.sizes.split(","):
        repeats = args.paper_repeats if name == "paper" else args.repeats
        r = run_size(name, SIZES[name], device, repeats, args.warmup)
        report["results"][name] = r
        print(f"[{name}] median whole-seq {r['median_s']['whole-seq']:.3f} s, per-frame "
              f"{r['median_s']['per-frame']:.3f} s, speed-up {r['speedup']:.2f}x, "
              f"max |loss diff| {r['max_abs_loss_diff']:.2e}", flush=True)
    report["load_average_at_end"] = os.getloadavg()
    if args.out:
        stem = Path(args.out)
        stem.parent.mkdir(parents=True, exist_ok=True)
        runs = _previous_runs(stem.with_suffix(".json")) if args.append else []
        runs.append(report)
        stem.with_suffix(".json").write_text(json.dumps({"runs": runs}, indent=2) + "\n")
        write_markdown(stem.with_suffix(".md"), runs)
        print(f"wrote {stem.with_suffix('.json')} and {stem.with_suffix('.md')}")


def _previous_runs(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    saved = json.loads(path.read_text())
    return saved["runs"] if "runs" in saved else [saved]  # older files held one run


if __name__ == "__main__":
    main()
