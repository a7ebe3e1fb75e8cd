"""Benchmark: NTU preprocessing, vectorised library code vs. straightforward loops.

For ``--files`` synthetic ``.skeleton`` files it times, separately,

* parse      -- file -> (T, 4, 25, 3) xyz by body position
                (ours: :func:`read_skeleton` + ``dense``; loop: dict-per-joint reader)
* select     -- the 2 most active bodies -> (3, T, 25, 2), cut/padded to (3, 300, 25, 2)
* normalise  -- the CMD/2s-AGCN ``pre_normalization`` of the whole (N, 3, 300, 25, 2) batch
                (ours: :func:`pre_normalize`; loop: per-sample/person/frame/joint loops)

The loop pipeline runs once (it takes a minute per 1,000 files); the vectorised one runs
``--repeat`` times and each of its stages reports the median, to damp the noise of a
shared machine.

and checks the two pipelines give the same arrays (parse and selection exactly, the
normalised batch to ``allclose(atol=1e-5)``). Results go to ``--out`` as JSON and markdown.

    OMP_NUM_THREADS=1 python benchmarks/bench_preprocess.py --files 1000
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._preprocess_reference import (pre_normalize_loop, read_xyz_loop,  # noqa: E402
                                              select_bodies_loop)
from benchmarks._common import cpu_name  # noqa: E402
from i2md_lib.data.ntu_format import SkeletonFile, read_skeleton, write_skeleton  # noqa: E402
from i2md_lib.data.preprocess import pre_normalize, select_bodies, to_fixed_length  # noqa: E402

MAX_FRAMES, MAX_BODIES_READ = 300, 4


def write_corpus(folder: Path, n: int, seed: int, min_frames: int, max_frames: int) -> tuple[list[Path], str]:
    """The synthetic corpus of :mod:`i2md_lib.data.synthetic` if present, else a simple fallback."""
    try:
        from i2md_lib.data.synthetic import write_skeleton_corpus
    except ImportError:
        write_skeleton_corpus = None
    if write_skeleton_corpus is not None:
        paths = write_skeleton_corpus(folder, n, seed, min_frames=min_frames, max_frames=max_frames)
        return sorted(paths), "i2md_lib.data.synthetic.write_skeleton_corpus"
    return _fallback_corpus(folder, n, seed, min_frames, max_frames), "fallback generator in bench_preprocess.py"


def _fallback_corpus(folder: Path, n: int, seed: int, min_frames: int, max_frames: int) -> list[Path]:
    """Bodies that sway and wave in front of the camera, 1-2 people, a leading empty frame."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(n):
        t, m = int(rng.integers(min_frames, max_frames + 1)), int(rng.integers(1, 3))
        base = rng.normal(0, 0.25, (m, 25, 3)) + [0.0, 0.0, 3.0]
        phase = np.linspace(0, rng.uniform(2, 10), t)[:, None, None, None]
        xyz = base[None] + 0.1 * np.sin(phase + rng.uniform(0, 6, (1, m, 25, 3)))
        present = np.ones((t, m), bool)
        present[0] = rng.random() < 0.5
        name = f"S{k % 17 + 1:03d}C{k % 3 + 1:03d}P{k % 40 + 1:03d}R001A{k % 60 + 1:03d}_{k}"
        paths.append(write_skeleton(folder / f"{name}.skeleton", SkeletonFile.from_dense(xyz, present=present)))
    return paths


def run_ours(paths: list[Path]) -> tuple[dict[str, float], list[np.ndarray], np.ndarray, np.ndarray]:
    times = {}
    t0 = time.perf_counter()
    dense = [read_skeleton(p).dense(MAX_BODIES_READ) for p in paths]          # (T, 4, 25, 3) each
    times["parse"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    batch = np.zeros((len(paths), 3, MAX_FRAMES, 25, 2), dtype=np.float32)
    for i, xyz in enumerate(dense):
        batch[i], _ = to_fixed_length(select_bodies(xyz), MAX_FRAMES)
    times["select"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    normed = pre_normalize(batch)
    times["normalise"] = time.perf_counter() - t0
    return times, dense, batch, normed


def run_loops(paths: list[Path]) -> tuple[dict[str, float], list[np.ndarray], np.ndarray, np.ndarray]:
    times = {}
    t0 = time.perf_counter()
    raw = [read_xyz_loop(p, MAX_BODIES_READ) for p in paths]                   # (4, T, 25, 3) each
    times["parse"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    batch = np.zeros((len(paths), 3, MAX_FRAMES, 25, 2), dtype=np.float32)
    for i, xyz in enumerate(raw):
        sample = select_bodies_loop(xyz)
        batch[i, :, :sample.shape[1]] = sample[:, :MAX_FRAMES]
    times["select"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    normed = pre_normalize_loop(batch)
    times["normalise"] = time.perf_counter() - t0
    return times, raw, batch, normed


def machine() -> dict[str, str]:
    cpu = cpu_name()
    return {"cpu": cpu, "logical_cpus": str(os.cpu_count()), "python": platform.python_version(),
            "numpy": np.__version__, "os": platform.platform(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "unset")}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=1000, help="number of synthetic .skeleton files")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-frames", type=int, default=40)
    ap.add_argument("--max-frames", type=int, default=150)
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs of the (fast) vectorised pipeline; each stage reports the median")
    ap.add_argument("--out", type=Path, default=None, help="folder for preprocess.{json,md} (default: don't write)")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        paths, source = write_corpus(Path(tmp) / "raw", args.files, args.seed, args.min_frames, args.max_frames)
        corpus_s = time.perf_counter() - t0
        frames = [read_skeleton(p).num_frames for p in paths]
        size_mb = sum(p.stat().st_size for p in paths) / 2**20
        runs = [run_ours(paths) for _ in range(max(1, args.repeat))]
        ours = {k: float(np.median([r[0][k] for r in runs])) for k in runs[0][0]}
        _, dense, batch, normed = runs[-1]
        del runs
        loops, raw, batch_ref, normed_ref = run_loops(paths)

    parse_equal = all(np.array_equal(d, r.transpose(1, 0, 2, 3)) for d, r in zip(dense, raw))
    select_equal = bool(np.array_equal(batch, batch_ref))
    max_diff = float(np.abs(normed.astype(np.float64) - normed_ref).max())
    norm_close = bool(np.allclose(normed, normed_ref, rtol=0, atol=1e-5))
    stages = ("parse", "select", "normalise")
    result = {
        "files": args.files, "vectorised_runs": max(1, args.repeat), "corpus": source, "corpus_seconds": round(corpus_s, 2),
        "frames_mean": float(np.mean(frames)), "frames_min": int(min(frames)), "frames_max": int(max(frames)),
        "corpus_mb": round(size_mb, 1),
        "seconds": {"ours": {k: ours[k] for k in stages}, "loops": {k: loops[k] for k in stages}},
        "speedup": {k: loops[k] / ours[k] for k in stages},
        "total_speedup": sum(loops.values()) / sum(ours.values()),
        "checks": {"parse_identical": parse_equal, "selection_identical": select_equal,
                   "normalised_allclose_1e-5": norm_close, "normalised_max_abs_diff": max_diff},
        "command": "OMP_NUM_THREADS=1 python benchmarks/bench_preprocess.py " + " ".join(argv or sys.argv[1:]),
        "machine": machine(),
    }
    print(format_markdown(result))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "preprocess.json").write_text(json.dumps(result, indent=1) + "\n")
    if not (parse_equal and select_equal and norm_close):
        raise SystemExit("the vectorised and loop pipelines disagree (see checks above)")
    return result


def format_markdown(r: dict) -> str:
    rows = []
    for stage in ("parse", "select", "normalise"):
        ours, loops = r["seconds"]["ours"][stage], r["seconds"]["loops"][stage]
        rows.append(f"| {stage} | {ours:.2f} s ({1e3 * ours / r['files']:.2f} ms/file) | "
                    f"{loops:.2f} s ({1e3 * loops / r['files']:.1f} ms/file) | {loops / ours:.1f}x |")
    total_ours = sum(r["seconds"]["ours"].values())
    total_loops = sum(r["seconds"]["loops"].values())
    c = r["checks"]
    return "\n".join([
        f"{r['files']} files ({r['corpus']}), {r['frames_mean']:.0f} frames on average "
        f"({r['frames_min']}-{r['frames_max']}), {r['corpus_mb']} MB of text; stored as (N, 3, 300, 25, 2)",
        "",
        f"| stage | vectorised (i2md_lib, median of {r['vectorised_runs']}) | loops (reference style, 1 run) | speed-up |",
        "|---|---|---|---|",
        *rows,
        f"| total | {total_ours:.2f} s | {total_loops:.2f} s | {total_loops / total_ours:.1f}x |",
        "",
        f"checks: parse identical {c['parse_identical']}, selection identical {c['selection_identical']}, "
        f"normalised allclose(atol=1e-5) {c['normalised_allclose_1e-5']} "
        f"(max |diff| {c['normalised_max_abs_diff']:.2e})",
    ])


if __name__ == "__main__":
    main()
