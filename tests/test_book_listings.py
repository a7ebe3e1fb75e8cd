"""Every code listing the book shows (``show_source(...)`` in a chapter) exists and shows
what the chapter asks for: the object is the library's, and its markers are in the code."""
from __future__ import annotations

import ast
import inspect
import json
from pathlib import Path

import pytest

from i2md_lib import booktools

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("ch*.ipynb"))


def listings(path: Path) -> list[tuple[str, str]]:
    """(imports of the chapter, ``show_source(...)`` call) for every listing of a chapter."""
    cells = ["".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    imports, calls = [], []
    for cell in cells:
        tree = ast.parse(cell)
        imports += [ast.get_source_segment(cell, n) for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        calls += [ast.get_source_segment(cell, n) for n in ast.walk(tree)
                  if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "show_source"]
    return [("\n".join(imports), call) for call in calls]


CASES = [(path.name, imports, call) for path in CHAPTERS for imports, call in listings(path)]


def test_the_book_shows_listings():
    assert len(CASES) >= 20


@pytest.mark.parametrize("chapter, imports, call", CASES, ids=[f"{c[0]}:{c[2][12:60]}" for c in CASES])
def test_listing_exists_and_its_markers_are_in_the_code(chapter, imports, call):
    namespace: dict = {}
    exec(imports, namespace)                                    # the chapter's own imports
    namespace["show_source"] = lambda obj, between=None: (obj, booktools.listing(obj, between))
    obj, text = eval(call, namespace)
    assert inspect.getmodule(obj).__name__.startswith("i2md_lib."), f"{chapter} shows non-library code"
    assert text.strip() and len(text.splitlines()) <= 80, f"{chapter}: {call} shows {len(text.splitlines())} lines"


def test_a_missing_marker_is_an_error():
    with pytest.raises(ValueError, match="no line containing 'no such line'"):
        booktools.listing(booktools.listing, between=("no such line", "return"))
    with pytest.raises(ValueError, match="after 'def listing'"):
        booktools.listing(booktools.listing, between=("def listing", "no such end"))
    part = booktools.listing(booktools.listing, between=("if between is None", "return source"))
    assert part.splitlines()[0] == "if between is None:" and part.splitlines()[-1].strip().startswith("return")
