"""The committed chapters are clean and testable: stable ids, no execution counts,
outputs only on NBVAL_CHECK_OUTPUT cells, and at least one such cell per chapter."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from nbclean import clean, dumps, is_checked  # noqa: E402

CHAPTERS = sorted((ROOT / "book").glob("ch*.ipynb"))


def test_there_are_chapters():
    assert CHAPTERS, "no chapter notebooks under book/"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_notebook_is_clean(path: Path):
    text = path.read_text()
    assert dumps(clean(json.loads(text))) == text, f"run: python tools/nbclean.py {path.relative_to(ROOT)}"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_notebook_has_a_checked_cell_with_reference_output(path: Path):
    cells = json.loads(path.read_text())["cells"]
    checked = [c for c in cells if is_checked(c)]
    assert checked, "each chapter needs a # NBVAL_CHECK_OUTPUT cell"
    assert all(c["outputs"] for c in checked), "refresh with: python tools/nbclean.py --execute ..."
    assert all(c["execution_count"] is None for c in cells if c["cell_type"] == "code")


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_notebook_uses_the_library_not_its_own_models(path: Path):
    code = "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"]
                     if c["cell_type"] == "code")
    assert "nn.Module)" not in code and "optimizer.step()" not in code
    assert "tqdm.auto" not in code


def test_the_book_build_skips_the_environments_make_creates():
    """``make nbgrader`` installs nbgrader, whose package ships test notebooks (one loops forever),
    into a folder of the repository: ``make book`` after ``.ci/run`` must not execute them."""
    import re

    import yaml

    makefile = (ROOT / "Makefile").read_text()
    folders = re.findall(r"^(?:VENV|NBGRADER_VENV)\s*\?=\s*(\S+)", makefile, re.M)
    assert sorted(folders) == [".venv", ".venv-nbgrader"]
    excluded = yaml.safe_load((ROOT / "_config.yml").read_text())["exclude_patterns"]
    for folder in folders:
        assert f"{folder}/*" in excluded, folder
