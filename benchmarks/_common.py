"""Helpers shared by the benchmark scripts."""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Sequence


def cpu_name() -> str:
    """The processor's model name (from /proc/cpuinfo where it exists)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(device) -> dict:
    """What a benchmark ran on: processor, torch and its threads, device, load average now."""
    import torch

    info = {"cpu": cpu_name(), "logical_cpus": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "unset"),
            "python": platform.python_version(), "device": str(device),
            "load_average_at_start": os.getloadavg()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def command_line(script: str, argv: Sequence[str] | None) -> str:
    """The command that reruns ``benchmarks/<script>`` with these arguments (and ``OMP_NUM_THREADS``)."""
    omp = os.environ.get("OMP_NUM_THREADS")
    args = sys.argv[1:] if argv is None else list(argv)
    return (f"OMP_NUM_THREADS={omp} " if omp else "") + shlex.join([".venv/bin/python", f"benchmarks/{script}", *args])


def add_step_timing_options(parser: argparse.ArgumentParser, sizes: Sequence[str], repeats: int,
                            paper_repeats: int) -> None:
    """``--device --sizes --repeats --paper-repeats --warmup`` of the step benchmarks."""
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--sizes", default="classroom,paper", help="comma list of " + ", ".join(sizes))
    parser.add_argument("--repeats", type=int, default=repeats, help="timed steps per implementation")
    parser.add_argument("--paper-repeats", type=int, default=paper_repeats, help="timed steps at paper size")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per implementation")


def write_report(stem: str | Path, report: dict, write_markdown) -> None:
    """Write ``stem.json`` (the raw numbers) and ``stem.md`` (``write_markdown(path, report)``)."""
    import json

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    write_markdown(stem.with_suffix(".md"), report)
    print(f"wrote {stem.with_suffix('.json')} and {stem.with_suffix('.md')}")


def render_report(json_path: str | Path, note: str, write_markdown) -> dict:
    """Rewrite the markdown of an earlier run from its ``.json`` (``--render``), replacing its
    note when ``note`` is not empty; the numbers are not touched. Returns the report."""
    import json

    json_path = Path(json_path)
    report = json.loads(json_path.read_text())
    report["note"] = note or report.get("note", "")
    write_report(json_path.with_suffix(""), report, write_markdown)
    return report
