"""Write a notebook from a plain-text source with cell markers (authoring aid).

Source format: cells start with a line ``#%% md`` or ``#%% code`` (optionally followed by
``tags=a,b``); everything up to the next marker is the cell's text.

    python tools/pynb.py source.py book/chapter.ipynb
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from nbclean import clean, dumps  # noqa: E402


def parse(text: str) -> list[dict]:
    cells: list[dict] = []
    for line in text.splitlines(keepends=True):
        if line.startswith("#%%"):
            parts = line[3:].split()
            kind = parts[0]
            tags = [t for p in parts[1:] if p.startswith("tags=") for t in p[5:].split(",")]
            cell = {"cell_type": "markdown" if kind == "md" else "code", "metadata": {}, "source": []}
            if tags:
                cell["metadata"]["tags"] = tags
            cells.append(cell)
        elif cells:
            cells[-1]["source"].append(line)
    for cell in cells:
        src = "".join(cell["source"]).strip("\n")
        cell["source"] = src.splitlines(keepends=True)
    return cells


def main() -> None:
    source, target = map(Path, sys.argv[1:3])
    nb = {"cells": parse(source.read_text()), "metadata": {}}
    target.write_text(dumps(clean(nb)))


if __name__ == "__main__":
    main()
