"""Keep committed notebooks clean: no volatile outputs, no execution counts, stable cell ids.

Outputs are kept only for cells marked ``# NBVAL_CHECK_OUTPUT``: their output is
deterministic, and ``pytest --nbval-lax`` compares it with a fresh run at the smoke
profile. ``--execute`` first runs the notebook (at smoke scale) to refresh them.

    python tools/nbclean.py book/*.ipynb            # rewrite in place
    python tools/nbclean.py --execute book/ch01*.ipynb
    python tools/nbclean.py --check book/*.ipynb    # exit 1 if any notebook is not clean
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}


CHECK_MARKER = "# NBVAL_CHECK_OUTPUT"


def is_checked(cell: dict) -> bool:
    source = "".join(cell.get("source", []))
    return cell["cell_type"] == "code" and source.lstrip().startswith(CHECK_MARKER)


def clean(nb: dict) -> dict:
    """Return ``nb`` with ids ``cell-0``, ``cell-1``, ..., no execution counts, and
    outputs only on checked cells (without their execution counts and metadata)."""
    for i, cell in enumerate(nb["cells"]):
        cell["id"] = f"cell-{i}"
        if isinstance(cell.get("source"), str):
            cell["source"] = cell["source"].splitlines(keepends=True)
        if cell["cell_type"] == "code":
            kept = cell.get("outputs", []) if is_checked(cell) else []
            for output in kept:
                if output.get("output_type") == "execute_result":
                    output["execution_count"] = None
            cell["outputs"] = kept
            cell["execution_count"] = None
        meta = {k: v for k, v in cell.get("metadata", {}).items() if k == "tags"}
        cell["metadata"] = meta
    nb["metadata"] = {"kernelspec": KERNELSPEC,
                      "language_info": {"name": "python"}}
    nb["nbformat"], nb["nbformat_minor"] = 4, 5
    return nb


def execute(path: Path) -> None:
    """Run ``path`` in place with nbclient at the smoke profile (refreshes checked outputs)."""
    import os

    import nbformat
    from nbclient import NotebookClient

    os.environ["I2MD_PROFILE"] = "smoke"
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    nbformat.write(nb, path)


def dumps(nb: dict) -> str:
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--execute", action="store_true", help="run at smoke scale first")
    parser.add_argument("paths", nargs="+", type=Path)
    args = parser.parse_args(argv)
    dirty = []
    for path in args.paths:
        if args.execute:
            execute(path)
        text = path.read_text()
        cleaned = dumps(clean(json.loads(text)))
        if cleaned != text:
            dirty.append(path)
            if not args.check:
                path.write_text(cleaned)
    if args.check and dirty:
        print("not clean:", *map(str, dirty), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
