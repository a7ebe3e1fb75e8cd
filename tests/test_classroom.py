"""Classroom use: chapter exercises hide their solutions, and the assignments grade as they should.

* Every chapter ends with an "Exercises" section whose solutions sit in
  ``{admonition} Solution ...`` blocks with ``:class: dropdown`` (hidden by default).
* The teacher's assignment notebooks (``classroom/source``) pass their own test cells;
  the student versions (``classroom/release``, made by ``tools/student_versions.py``) run
  but fail every test cell until filled in; wrong answers fail them; grading restores the
  hidden tests.
* Hand-made submissions (``tools/classroom_samples.py``) earn exactly their points: the solution
  and a solution whose comments say "for" earn everything, a partly solved one the points of
  its first function, one that delegates to the library and the empty one nothing.
* Every assignment states learning objectives and a time, and asks one written question.
* The recorded nbgrader round trip (``classroom/nbgrader_run.json``, ``make nbgrader``) passed
  and was made from the current notebooks.
"""
from __future__ import annotations

import ast
import copy
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import classroom_samples as samples  # noqa: E402
import nbgrader_roundtrip  # noqa: E402
import student_versions as sv  # noqa: E402

CHAPTERS = sorted((ROOT / "book").glob("ch*.ipynb"))
ASSIGNMENTS = sv.assignments()


# -- chapter exercises ------------------------------------------------------------------------
FENCE = re.compile(r"^\s*(?P<fence>`{3,}|:{3,}|~{3,})\s*(?P<info>.*)$")
DIRECTIVE = re.compile(r"^\{(?P<name>[\w:-]+)\}\s*(?P<title>.*)$")
HEADING = re.compile(r"^(?P<level>#{1,6})\s+(?P<title>.+?)\s*#*\s*$")


def directive_blocks(markdown: str) -> list[dict]:
    """MyST directive blocks of ``markdown``: name, title, options and body lines (nesting aware).

    Code fences (no ``{name}``) are literal: nothing inside them is parsed.
    """
    blocks: list[dict] = []
    stack: list[dict] = []
    for line in markdown.split("\n"):
        match = FENCE.match(line)
        top = stack[-1] if stack else None
        if top is not None and match and not match["info"] and match["fence"][0] == top["char"] \
                and len(match["fence"]) >= top["length"]:
            stack.pop()                                        # closing fence
            continue
        if top is not None:
            top["body"].append(line)
            if top["directive"] is None:
                continue                                       # inside a plain code fence
        if match:
            directive = DIRECTIVE.match(match["info"].strip())
            block = {"char": match["fence"][0], "length": len(match["fence"]), "body": [],
                     "directive": directive["name"] if directive else None,
                     "title": directive["title"] if directive else ""}
            stack.append(block)
            if directive:
                blocks.append(block)
    for block in blocks:
        block["options"] = directive_options(block["body"])
    return blocks


def directive_options(body: list[str]) -> dict[str, str]:
    """``:key: value`` lines (or a ``---`` YAML block) at the top of a directive's body."""
    options: dict[str, str] = {}
    lines = [line.strip() for line in body]
    if lines and lines[0] == "---":
        end = lines.index("---", 1) if "---" in lines[1:] else 0
        pairs = [line.split(":", 1) for line in lines[1:end] if ":" in line]
        return {k.strip(): v.strip() for k, v in pairs}
    for line in lines:
        match = re.match(r"^:([\w-]+):\s*(.*)$", line)
        if not match:
            break
        options[match[1]] = match[2]
    return options


def markdown_cells(path: Path) -> list[str]:
    return ["".join(c["source"]) for c in json.loads(path.read_text())["cells"]
            if c["cell_type"] == "markdown"]


def headings_outside_fences(markdown: str) -> list[tuple[int, str]]:
    """(level, title) of the markdown headings that are not inside a fenced block."""
    found, fence = [], None
    for line in markdown.split("\n"):
        match = FENCE.match(line)
        if fence is None and match:
            fence = match["fence"]
        elif fence is not None and match and not match["info"] and match["fence"][0] == fence[0] \
                and len(match["fence"]) >= len(fence):
            fence = None
        elif fence is None and (heading := HEADING.match(line)):
            found.append((len(heading["level"]), heading["title"]))
    return found


def test_there_are_chapters_and_assignments():
    assert CHAPTERS, "no chapter notebooks under book/"
    assert len(ASSIGNMENTS) >= 4, f"expected at least four assignments, found {ASSIGNMENTS}"
    assert "knn_probe" in ASSIGNMENTS, "the evaluation side needs its assignment"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_ends_with_an_exercises_section(path: Path):
    headings = [h for cell in markdown_cells(path) for h in headings_outside_fences(cell)]
    exercises = [i for i, (_, title) in enumerate(headings) if re.match(r"exercises\b", title, re.I)]
    assert exercises, f"{path.name}: no '## Exercises' heading"
    level = headings[exercises[-1]][0]
    later = [title for lvl, title in headings[exercises[-1] + 1:] if lvl <= level]
    assert not later, f"{path.name}: the Exercises section must come last, but is followed by {later}"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_every_solution_is_a_hidden_dropdown(path: Path):
    cells = markdown_cells(path)
    solutions = [b for cell in cells for b in directive_blocks(cell)
                 if re.match(r"solution\b", b["title"], re.I) or b["directive"] in ("solution", "dropdown")]
    assert solutions, f"{path.name}: no solution blocks ({{admonition}} Solution ... with :class: dropdown)"
    for block in solutions:
        name = f"{path.name}: '{{{block['directive']}}} {block['title']}'"
        assert block["directive"] == "admonition", f"{name}: solutions use the admonition directive"
        assert "dropdown" in block["options"].get("class", "").split(), \
            f"{name}: needs ':class: dropdown' so that it is hidden by default"
    # a solution written as plain text (outside any block) would be visible to every reader
    for cell in cells:
        outside = "\n".join(line for line in _lines_outside_blocks(cell))
        visible = re.findall(r"^\s*(?:\*\*|#+\s*|_)?(solution\b[^\n]*)", outside, re.I | re.M)
        assert not visible, f"{path.name}: solution text outside a dropdown: {visible}"


def _lines_outside_blocks(markdown: str) -> list[str]:
    lines, depth = [], []
    for line in markdown.split("\n"):
        match = FENCE.match(line)
        if depth and match and not match["info"] and match["fence"][0] == depth[-1][0] \
                and len(match["fence"]) >= len(depth[-1]):
            depth.pop()
        elif match and (not depth or DIRECTIVE.match(match["info"].strip())):
            depth.append(match["fence"])
        elif not depth:
            lines.append(line)
    return lines


def test_the_solution_parser_sees_what_myst_sees():
    """The checks above are only as good as the parser: hidden, visible and nested cases."""
    text = "\n".join([
        "## Exercises", "1. Do it.",
        "````{admonition} Solution to exercise 1", ":class: tip dropdown", "",
        "```python", "x = 1", "```", "Because.", "````",
        "```{admonition} Solution to exercise 2", "---", "class: dropdown", "---", "text", "```",
        ":::{admonition} Solution to exercise 3", "shown!", ":::",
        "```python", "# ```{admonition} Solution inside code is not a block", "```",
    ])
    blocks = directive_blocks(text)
    assert [(b["title"], b["options"].get("class")) for b in blocks] == [
        ("Solution to exercise 1", "tip dropdown"),
        ("Solution to exercise 2", "dropdown"),
        ("Solution to exercise 3", None),
    ]
    assert blocks[0]["body"][-1] == "Because."
    assert headings_outside_fences(text) == [(2, "Exercises")]
    assert _lines_outside_blocks(text) == ["## Exercises", "1. Do it."]


# -- student versions ----------------------------------------------------------------------------
def _cell(kind: str, source: str, **nbgrader) -> dict:
    cell = {"cell_type": kind, "metadata": {}, "source": source.splitlines(keepends=True)}
    if kind == "code":
        cell.update(outputs=[{"output_type": "stream", "name": "stdout", "text": "old\n"}],
                    execution_count=3)
    if nbgrader:
        cell["metadata"]["nbgrader"] = {"schema_version": 3, **nbgrader}
    return cell


def _tiny_assignment() -> dict:
    return {"cells": [
        _cell("markdown", "# Task"),
        _cell("code", "def f(x):\n    '''Doc.'''\n    ### BEGIN SOLUTION\n    y = x + 1\n    return y\n"
                      "    ### END SOLUTION\n\nprint('defined')", grade_id="f", solution=True, grade=False),
        _cell("code", "assert f(1) == 2\n### BEGIN HIDDEN TESTS\nassert f(-1) == 0\n### END HIDDEN TESTS\n"
                      "print('ok')", grade_id="test_f", grade=True, points=2, solution=False),
        _cell("markdown", "Why?\n\n### BEGIN SOLUTION\nBecause.\n### END SOLUTION",
              grade_id="why", solution=True, grade=True, points=1),
    ], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def test_student_version_replaces_solutions_and_hides_tests():
    nb = _tiny_assignment()
    student = sv.student_version(nb, Path("tiny.ipynb"))
    sources = ["".join(c["source"]) for c in student["cells"]]
    assert sources[1] == ("def f(x):\n    '''Doc.'''\n    # YOUR CODE HERE\n    raise NotImplementedError()\n"
                          "\nprint('defined')")
    assert sources[2] == "assert f(1) == 2\nprint('ok')"
    assert sources[3] == "Why?\n\nYOUR ANSWER HERE"
    assert all(c["outputs"] == [] and c["execution_count"] is None
               for c in student["cells"] if c["cell_type"] == "code")
    assert student["cells"][2]["metadata"]["nbgrader"]["points"] == 2   # nbgrader can still grade it
    assert "y = x + 1" in "".join(nb["cells"][1]["source"]), "the teacher's notebook is left as it was"


@pytest.mark.parametrize("breakage, message", [
    (lambda nb: nb["cells"][1]["source"].pop(5), "never closed"),
    (lambda nb: nb["cells"][1]["metadata"].pop("nbgrader"), "without nbgrader solution"),
    (lambda nb: nb["cells"][2]["metadata"]["nbgrader"].update(grade_id="f"), "used twice"),
    (lambda nb: nb["cells"][2]["metadata"]["nbgrader"].pop("points"), "has no points"),
    (lambda nb: nb["cells"][0]["source"].append("\n### BEGIN HIDDEN TESTS\n### END HIDDEN TESTS"),
     "hidden tests outside"),
])
def test_broken_conventions_are_reported_with_file_and_cell(breakage, message):
    nb = _tiny_assignment()
    breakage(nb)
    with pytest.raises(sv.AssignmentError, match=message) as info:
        sv.student_version(nb, Path("classroom/source/tiny/tiny.ipynb"))
    assert "tiny.ipynb" in str(info.value)


def test_committed_student_versions_are_up_to_date():
    assert sv.out_of_date() == [], "run: python tools/student_versions.py release"


LIBRARY_CALL = re.compile(r"\b(modalities|losses|dna|knn|results|splits)\.\w+\(")


def _own_work_checked(test_source: str) -> set[str]:
    """Names of the functions a test cell hands to ``grading.own_work``."""
    calls = [node for node in ast.walk(ast.parse(test_source)) if isinstance(node, ast.Call)
             and isinstance(node.func, ast.Attribute) and node.func.attr == "own_work"]
    return {call.args[0].id for call in calls if call.args and isinstance(call.args[0], ast.Name)}


def _defined_functions(source: str) -> set[str]:
    return {node.name for node in ast.parse(source).body if isinstance(node, ast.FunctionDef)}


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_assignment_has_graded_tests_that_compare_with_the_library(name: str):
    nb = sv.read_notebook(sv.SOURCE_ROOT / name / f"{name}.ipynb")
    tests = [c for c in nb["cells"] if sv.is_test_cell(c)]
    solutions = [c for c in nb["cells"] if sv.is_solution_cell(c) and c["cell_type"] == "code"]
    assert len(solutions) >= 2 and len(tests) >= 2
    assert all(sv.nbgrader_meta(c)["points"] > 0 for c in tests)
    assert all(LIBRARY_CALL.search(sv.cell_source(c)) for c in tests), "each test compares with the library"
    written = {f for c in solutions for f in _defined_functions(sv.cell_source(c))}
    checked = {f for c in tests for f in _own_work_checked(sv.cell_source(c))}
    assert written and written <= checked, \
        f"every function students write must go through grading.own_work; unchecked: {written - checked}"


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_assignment_states_objectives_time_and_a_written_question(name: str):
    nb = sv.read_notebook(sv.SOURCE_ROOT / name / f"{name}.ipynb")
    intro = sv.cell_source(nb["cells"][0])
    assert "**Learning objectives.**" in intro, "the introduction lists learning objectives"
    objectives = re.findall(r"^\* ", intro.split("**Learning objectives.**")[1].split("**Time.**")[0], re.M)
    assert len(objectives) >= 2, "at least two learning objectives"
    assert re.search(r"\*\*Time\.\*\* About \d+ minutes", intro), "the introduction states a time estimate"
    written = [c for c in nb["cells"] if sv.is_written_answer(c) and c["cell_type"] == "markdown"]
    assert len(written) == 1, "one written question, graded by hand"
    assert sv.nbgrader_meta(written[0])["points"] > 0
    assert sv.BEGIN_SOLUTION in sv.cell_source(written[0]), "the written question has a model answer"


# -- running them (one kernel for all notebooks: each starts from an empty namespace) ----------------
@pytest.fixture(scope="module")
def runner():
    with sv.NotebookRunner(ROOT / "classroom") as kernel:
        yield kernel


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_solution_passes_student_version_fails_and_wrong_answers_fail(runner, name: str):
    teacher = sv.read_notebook(sv.SOURCE_ROOT / name / f"{name}.ipynb")
    student = sv.read_notebook(sv.RELEASE_ROOT / name / f"{name}.ipynb")
    test_ids = {sv.nbgrader_meta(c)["grade_id"] for c in teacher["cells"] if sv.is_test_cell(c)}

    solved = runner.run(copy.deepcopy(teacher))
    assert [(o.grade_id, o.error, o.message) for o in solved if o.error] == []
    assert {o.grade_id for o in solved} >= test_ids

    unsolved = runner.run(student)
    assert [o.grade_id for o in unsolved if o.error and o.grade_id not in test_ids] == [], \
        "the student version must run up to the tests"
    assert {o.grade_id: o.error for o in unsolved if o.grade_id in test_ids} == \
        dict.fromkeys(test_ids, "NotImplementedError")

    wrong = sv.with_teacher_tests(samples.submission(teacher, student, "wrong"), teacher, Path(f"{name}.ipynb"))
    failed = {o.grade_id: o.error for o in runner.run(wrong) if o.grade_id in test_ids}
    assert failed == dict.fromkeys(test_ids, "AssertionError"), "a wrong answer must fail its test"


def test_grading_restores_hidden_tests_and_counts_points(runner, tmp_path: Path):
    """A submission that passes the visible tests but not a hidden one loses those points."""
    student = sv.read_notebook(sv.RELEASE_ROOT / "bone_modality" / "bone_modality.ipynb")
    teacher = sv.read_notebook(sv.SOURCE_ROOT / "bone_modality" / "bone_modality.ipynb")
    right = samples.teacher_answers(teacher)["bones"]
    float32_only = ("def bones_torch(x):\n    parents = torch.tensor(skeleton.PARENTS.tolist())\n"
                    "    y = x.float()\n    return y - y[..., parents, :]")
    submission = samples.fill(student, {"bones": right, "bones_torch": float32_only})
    for cell in submission["cells"]:           # a student who "fixes" a test to pass does not gain
        if sv.nbgrader_meta(cell).get("grade_id") == "test_bones_torch":
            cell["source"] = "print('all good')"
    path = tmp_path / "alice" / "bone_modality.ipynb"
    path.parent.mkdir()
    path.write_text(sv.dumps(submission))
    report = sv.grade(path, runner=runner)   # the command line starts a fresh kernel per submission
    assert report.points == {"test_bones": (2.0, 2.0), "test_bones_torch": (0.0, 2.0)}
    assert report.total == (2.0, 4.0)
    assert report.failures["test_bones_torch"].startswith("AssertionError")
    assert report.by_hand == {"written_bones": 2.0}, "the written answer is left to the teacher"


@pytest.mark.parametrize("kind", samples.KINDS)
@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_sample_submissions_earn_exactly_their_points(runner, tmp_path: Path, name: str, kind: str):
    """Full marks for the solution (comments saying "for" included), the first test's points for a
    partly solved notebook, nothing for delegating to the library or for the empty notebook."""
    teacher = sv.read_notebook(sv.SOURCE_ROOT / name / f"{name}.ipynb")
    student = sv.read_notebook(sv.RELEASE_ROOT / name / f"{name}.ipynb")
    path = tmp_path / kind / f"{name}.ipynb"
    path.parent.mkdir()
    path.write_text(sv.dumps(samples.submission(teacher, student, kind)))
    report = sv.grade(path, runner=runner)
    earned = {grade_id: got for grade_id, (got, _) in report.points.items()}
    assert earned == samples.expected_points(teacher, kind), report.failures
    if kind == "delegation":
        assert all(why.startswith("DelegationError") for why in report.failures.values()), report.failures


def test_the_recorded_nbgrader_run_passed_and_is_for_the_current_notebooks():
    record = json.loads(nbgrader_roundtrip.RECORD.read_text())
    assert record["inputs_sha256"] == nbgrader_roundtrip.input_hashes(), \
        "the notebooks, samples or checker changed since the recorded run: make nbgrader NBGRADER_ARGS=--record"
    assert record["ok"] and record["problems"] == [] and record["release_differences"] == []
    assert sorted(record["assignments"]) == ASSIGNMENTS
    for name, kinds in record["assignments"].items():
        teacher = sv.read_notebook(sv.SOURCE_ROOT / name / f"{name}.ipynb")
        assert sorted(kinds) == sorted(samples.KINDS)
        for kind, scores in kinds.items():
            assert scores["tests"] == samples.expected_points(teacher, kind), f"{name}/{kind}"
