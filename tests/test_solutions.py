"""Every exercise solution of the book runs, as a reader would run it: after its chapter.

Each chapter is executed once with nbclient at the smoke profile in a fresh kernel, with the
code of all its solutions (the ``~~~python`` blocks inside its ``{admonition} Solution ...``
dropdowns) appended as extra cells, in the order the chapter prints them. A solution that
raises fails the test and is named. Results and runs go to a temporary folder.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("ch*.ipynb"))
SOLUTION_BLOCK = re.compile(r"```\{admonition\}\s+(Solution[^\n]*)\n(.*?)\n```", re.S)
PYTHON_BLOCK = re.compile(r"~~~python\n(.*?)\n~~~", re.S)
TIMEOUT_S = 900

pytestmark = pytest.mark.slow


def solutions(cells: list[dict]) -> list[tuple[str, str]]:
    """(title, code) of every solution with code, in the order of the markdown cells."""
    found = []
    for cell in cells:
        if cell["cell_type"] != "markdown":
            continue
        for title, body in SOLUTION_BLOCK.findall("".join(cell["source"])):
            code = "\n\n".join(PYTHON_BLOCK.findall(body))
            if code.strip():
                found.append((title.strip(), code))
    return found


def test_solutions_are_found():
    """The parser sees the solutions (else the chapter test below would pass vacuously)."""
    counts = {path.name: len(solutions(json.loads(path.read_text())["cells"])) for path in CHAPTERS}
    assert CHAPTERS and all(counts.values()), counts


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_every_solution_runs_after_its_chapter(path: Path, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    for name, value in {"I2MD_PROFILE": "smoke", "I2MD_RESULTS_DIR": str(tmp_path / "results"),
                        "I2MD_RUNS_DIR": str(tmp_path / "runs"), "OMP_NUM_THREADS": "1",
                        "MKL_NUM_THREADS": "1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(path, as_version=4)
    found = solutions(nb.cells)
    chapter_cells = len(nb.cells)
    for title, code in found:
        nb.cells.append(nbformat.v4.new_code_cell(f"# {title}\n{code}"))
    client = NotebookClient(nb, timeout=TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    try:
        client.execute()
    except CellExecutionError as error:
        failed = next((i for i, c in enumerate(nb.cells) if any(
            o.get("output_type") == "error" for o in c.get("outputs", []))), None)
        where = ("the chapter itself, cell " + str(failed) if failed is None or failed < chapter_cells
                 else found[failed - chapter_cells][0])
        pytest.fail(f"{path.name}: {where} fails:\n{str(error)[-3000:]}")
