"""What the result-writing tools share: the uncommitted changes a run would hide, and the command
line a result file records. ``tools/testbed.py``, ``tools/noise_budget.py`` and
``tools/msr_study.py`` import it; it imports none of them (no import circle among the tools)."""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]


def dirty_paths(paths: Sequence[str] = ("i2md_lib", "tools")) -> list[str]:
    """Tracked files with uncommitted changes under ``paths`` (empty when clean)."""
    out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *paths],
                         cwd=ROOT, capture_output=True, text=True, timeout=30).stdout
    return [line[3:] for line in out.splitlines() if line.strip()]


def require_clean(allow_dirty: bool) -> list[str]:
    """The dirty paths; exit with a message when there are some and ``allow_dirty`` is false
    (a result file must name the code that made it)."""
    dirty = dirty_paths()
    if dirty and not allow_dirty:
        raise SystemExit(f"uncommitted changes in {dirty}: commit first (results must name their code)")
    return dirty


def recorded_command(tool: str, argv: Sequence[str] | None) -> str:
    """``OMP_NUM_THREADS=<n> python <tool> <arguments>``: the command a result file records."""
    return f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')} " + shlex.join(
        ["python", tool, *(sys.argv[1:] if argv is None else argv)])
