"""Helpers shared by the benchmark scripts."""
from __future__ import annotations

import platform
from pathlib import Path


def cpu_name() -> str:
    """The processor's model name (from /proc/cpuinfo where it exists)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def write_report(stem: str | Path, report: dict, write_markdown) -> None:
    """Write ``stem.json`` (the raw numbers) and ``stem.md`` (``write_markdown(path, report)``)."""
    import json

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    write_markdown(stem.with_suffix(".md"), report)
    print(f"wrote {stem.with_suffix('.json')} and {stem.with_suffix('.md')}")
