"""Classroom assignments: student versions from the teacher's notebooks, and grading.

The teacher's notebooks live in ``classroom/source/<name>/<name>.ipynb`` and follow the
cell conventions of nbgrader (so nbgrader can use them as they are):

* a cell whose metadata has ``nbgrader.solution: true`` holds the answer between
  ``### BEGIN SOLUTION`` and ``### END SOLUTION``;
* an autograded test cell has ``nbgrader.grade: true``, a ``grade_id`` and ``points``;
  lines between ``### BEGIN HIDDEN TESTS`` and ``### END HIDDEN TESTS`` are graded
  but not shown to students;
* a written answer (nbgrader's "manually graded answer") is a markdown cell with both
  ``solution: true`` and ``grade: true`` and ``points``; a teacher grades it by hand.

Commands (run from the repository root)::

    python tools/student_versions.py release            # every assignment -> classroom/release/<name>/
    python tools/student_versions.py release cmd_loss   # one assignment
    python tools/student_versions.py check              # exit 1 if classroom/release is out of date
    python tools/student_versions.py grade classroom/submitted/alice/cmd_loss/cmd_loss.ipynb ...

``release`` replaces each solution region by ``# YOUR CODE HERE`` and
``raise NotImplementedError()`` (markdown: ``YOUR ANSWER HERE``), removes hidden tests
and all outputs, and keeps the visible tests. ``grade`` puts the teacher's test cells
(hidden tests included) back into a submitted notebook, runs it in a fresh kernel and
gives each test cell its points when it runs without an error; it lists the written answers,
which it leaves to the teacher. The test cells also pass each function to
``i2md_lib.grading.own_work``, so a function that calls the library it should replace earns
nothing (``tools/classroom_samples.py`` holds hand-made submissions that check this, and
``tools/nbgrader_roundtrip.py`` runs the same round trip in nbgrader itself).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

REPO = Path(__file__).resolve().parents[1]
SOURCE_ROOT = REPO / "classroom" / "source"
RELEASE_ROOT = REPO / "classroom" / "release"

BEGIN_SOLUTION = "### BEGIN SOLUTION"
END_SOLUTION = "### END SOLUTION"
BEGIN_HIDDEN = "### BEGIN HIDDEN TESTS"
END_HIDDEN = "### END HIDDEN TESTS"
CODE_STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")
MARKDOWN_STUB = ("YOUR ANSWER HERE",)


class AssignmentError(ValueError):
    """A teacher's notebook that breaks the cell conventions (names the file and cell)."""


# -- reading the conventions ----------------------------------------------------------
def nbgrader_meta(cell: dict) -> dict:
    """The cell's ``nbgrader`` metadata (empty for an ordinary cell)."""
    return cell.get("metadata", {}).get("nbgrader", {})


def is_solution_cell(cell: dict) -> bool:
    return bool(nbgrader_meta(cell).get("solution"))


def is_test_cell(cell: dict) -> bool:
    """An autograded test: ``grade: true`` on a code cell that is not itself a solution."""
    meta = nbgrader_meta(cell)
    return cell["cell_type"] == "code" and bool(meta.get("grade")) and not meta.get("solution")


def is_written_answer(cell: dict) -> bool:
    """A manually graded answer: ``solution`` and ``grade`` both true (nbgrader's "manually graded answer")."""
    meta = nbgrader_meta(cell)
    return bool(meta.get("solution")) and bool(meta.get("grade"))


def cell_source(cell: dict) -> str:
    source = cell.get("source", "")
    return source if isinstance(source, str) else "".join(source)


def _regions(lines: list[str], begin: str, end: str, where: str) -> Iterator[tuple[int, int]]:
    """(first, last) line numbers of each ``begin`` ... ``end`` block, markers included."""
    start = None
    for i, line in enumerate(lines):
        marker = line.strip()
        if marker == begin:
            if start is not None:
                raise AssignmentError(f"{where}: line {i + 1}: {begin!r} inside another region")
            start = i
        elif marker == end:
            if start is None:
                raise AssignmentError(f"{where}: line {i + 1}: {end!r} without {begin!r}")
            yield start, i
            start = None
    if start is not None:
        raise AssignmentError(f"{where}: line {start + 1}: {begin!r} is never closed by {end!r}")


def replace_solutions(source: str, stub: Iterable[str], where: str) -> str:
    """``source`` with every solution region replaced by ``stub``, at the region's indentation."""
    lines = source.split("\n")
    out: list[str] = []
    done = 0
    for first, last in _regions(lines, BEGIN_SOLUTION, END_SOLUTION, where):
        indent = lines[first][: len(lines[first]) - len(lines[first].lstrip())]
        out += lines[done:first] + [indent + s for s in stub]
        done = last + 1
    return "\n".join(out + lines[done:])


def remove_hidden_tests(source: str, where: str) -> str:
    """``source`` without its hidden-test regions (markers included)."""
    lines = source.split("\n")
    keep = [True] * len(lines)
    for first, last in _regions(lines, BEGIN_HIDDEN, END_HIDDEN, where):
        keep[first:last + 1] = [False] * (last + 1 - first)
    return "\n".join(line for line, k in zip(lines, keep) if k)


def validate(nb: dict, path: Path) -> None:
    """Check the nbgrader conventions of a teacher's notebook; raise :class:`AssignmentError`."""
    seen: set[str] = set()
    solutions = tests = 0
    for i, cell in enumerate(nb["cells"]):
        where = f"{path}: cell {i}"
        meta = nbgrader_meta(cell)
        text = cell_source(cell)
        has_solution = BEGIN_SOLUTION in text
        if meta:
            grade_id = meta.get("grade_id")
            if not grade_id or not re.fullmatch(r"[A-Za-z0-9_-]+", grade_id):
                raise AssignmentError(f"{where}: nbgrader cells need a grade_id of letters, digits, - or _")
            if grade_id in seen:
                raise AssignmentError(f"{where}: grade_id {grade_id!r} is used twice")
            seen.add(grade_id)
            if meta.get("grade") and not isinstance(meta.get("points"), (int, float)):
                raise AssignmentError(f"{where}: graded cell {grade_id!r} has no points")
        if has_solution and not meta.get("solution"):
            raise AssignmentError(f"{where}: {BEGIN_SOLUTION!r} in a cell without nbgrader solution: true")
        if meta.get("solution") and cell["cell_type"] == "code" and not has_solution:
            raise AssignmentError(f"{where}: solution cell without a {BEGIN_SOLUTION!r} region")
        list(_regions(text.split("\n"), BEGIN_SOLUTION, END_SOLUTION, where))
        list(_regions(text.split("\n"), BEGIN_HIDDEN, END_HIDDEN, where))
        if BEGIN_HIDDEN in text and not is_test_cell(cell):
            raise AssignmentError(f"{where}: hidden tests outside an autograded test cell")
        solutions += is_solution_cell(cell)
        tests += is_test_cell(cell)
    if not solutions or not tests:
        raise AssignmentError(f"{path}: an assignment needs at least one solution cell and one test cell")


# -- student versions ---------------------------------------------------------------------
def student_version(nb: dict, path: Path) -> dict:
    """The student's notebook made from the teacher's ``nb`` (read from ``path``)."""
    validate(nb, path)
    out = copy.deepcopy(nb)
    for i, cell in enumerate(out["cells"]):
        where = f"{path}: cell {i}"
        text = cell_source(cell)
        if is_solution_cell(cell):
            stub = CODE_STUB if cell["cell_type"] == "code" else MARKDOWN_STUB
            text = replace_solutions(text, stub, where)
        if is_test_cell(cell):
            text = remove_hidden_tests(text, where)
        cell["source"] = text.splitlines(keepends=True)
        cell["id"] = f"cell-{i}"
        if cell["cell_type"] == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    return out


def read_notebook(path: Path) -> dict:
    if not path.is_file():
        raise AssignmentError(f"{path}: no such notebook")
    try:
        nb = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise AssignmentError(f"{path}: line {e.lineno}: not a notebook (invalid JSON: {e.msg})") from e
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise AssignmentError(f"{path}: not a notebook (no list of cells)")
    return nb


def dumps(nb: dict) -> str:
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def assignments(source_root: Path = SOURCE_ROOT) -> list[str]:
    """Names of the assignments: folders ``source_root/<name>/`` holding ``<name>.ipynb``."""
    return sorted(p.parent.name for p in source_root.glob("*/*.ipynb") if p.stem == p.parent.name)


def release(names: Iterable[str] | None = None, source_root: Path = SOURCE_ROOT,
            release_root: Path = RELEASE_ROOT) -> list[Path]:
    """Write the student version of each assignment to ``release_root/<name>/<name>.ipynb``."""
    written = []
    for name in names or assignments(source_root):
        source = source_root / name / f"{name}.ipynb"
        if not source.is_file():
            raise AssignmentError(f"{source}: no such assignment notebook")
        target = release_root / name / f"{name}.ipynb"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(dumps(student_version(read_notebook(source), source)))
        written.append(target)
    return written


def out_of_date(source_root: Path = SOURCE_ROOT, release_root: Path = RELEASE_ROOT) -> list[Path]:
    """Released notebooks that differ from what :func:`release` would write now."""
    stale = []
    for name in assignments(source_root):
        source = source_root / name / f"{name}.ipynb"
        target = release_root / name / f"{name}.ipynb"
        expected = dumps(student_version(read_notebook(source), source))
        if not target.is_file() or target.read_text() != expected:
            stale.append(target)
    return stale


# -- running and grading ---------------------------------------------------------------------
@dataclass(frozen=True)
class CellOutcome:
    """One executed code cell: its index, nbgrader id (or None) and error name (or None)."""

    index: int
    grade_id: str | None
    error: str | None
    message: str = ""


class NotebookRunner:
    """One Jupyter kernel (nbclient) that runs notebooks one after another.

    Each notebook starts from an empty namespace (``%reset -f``); imported modules
    stay loaded, which keeps several short notebooks fast. Use one runner per
    submission when grading, so that students never share a kernel.
    """

    def __init__(self, cwd: Path, timeout: int = 120) -> None:
        import nbformat
        from nbclient import NotebookClient

        self._nbformat = nbformat
        self._client = NotebookClient(nbformat.v4.new_notebook(), timeout=timeout,
                                      kernel_name="python3", allow_errors=True,
                                      shutdown_kernel="immediate",
                                      resources={"metadata": {"path": str(cwd)}})
        self._context = None

    def __enter__(self) -> "NotebookRunner":
        self._context = self._client.setup_kernel()
        self._context.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._context.__exit__(*exc)

    def run(self, nb: dict) -> list[CellOutcome]:
        """Execute the code cells of ``nb`` in order (outputs are written into ``nb``)."""
        notebook = self._nbformat.reads(json.dumps(nb), as_version=4)   # joins source lines
        self._client.nb = notebook
        reset = self._nbformat.v4.new_code_cell("%reset -f")
        self._client.execute_cell(reset, -1, store_history=False)
        outcomes = []
        for i, cell in enumerate(notebook.cells):
            if cell.cell_type != "code":
                continue
            self._client.execute_cell(cell, i)
            errors = [o for o in cell.outputs if o.output_type == "error"]
            outcomes.append(CellOutcome(
                i, nbgrader_meta(cell).get("grade_id"),
                errors[0].ename if errors else None, errors[0].evalue if errors else ""))
        nb["cells"] = [dict(c) for c in notebook.cells]
        return outcomes


@dataclass(frozen=True)
class GradeReport:
    """Points per autograded test cell of one submission."""

    submission: Path
    points: dict[str, tuple[float, float]]   # grade_id -> (earned, possible)
    failures: dict[str, str]                 # grade_id -> "ErrorName: message"
    by_hand: dict[str, float] = field(default_factory=dict)   # written answers: grade_id -> points

    @property
    def total(self) -> tuple[float, float]:
        return (sum(e for e, _ in self.points.values()), sum(p for _, p in self.points.values()))


def with_teacher_tests(submitted: dict, teacher: dict, path: Path) -> dict:
    """``submitted`` with every autograded test cell replaced by the teacher's (hidden tests too).

    A test cell the student deleted is put back after the cell that precedes it in
    the teacher's notebook, so deleting a test never avoids it.
    """
    tests = {nbgrader_meta(c)["grade_id"]: c for c in teacher["cells"] if is_test_cell(c)}
    out = copy.deepcopy(submitted)
    present = set()
    for cell in out["cells"]:
        grade_id = nbgrader_meta(cell).get("grade_id")
        if grade_id in tests:
            cell["source"] = copy.deepcopy(tests[grade_id]["source"])
            cell["metadata"] = copy.deepcopy(tests[grade_id]["metadata"])
            present.add(grade_id)
    for grade_id in tests.keys() - present:
        print(f"{path}: test cell {grade_id!r} was missing; the teacher's copy is appended",
              file=sys.stderr)
        out["cells"].append(copy.deepcopy(tests[grade_id]))
    return out


def grade(submission: Path, source_root: Path = SOURCE_ROOT,
          runner: NotebookRunner | None = None) -> GradeReport:
    """Grade one submitted notebook named like its assignment (``<name>.ipynb``).

    It runs in a fresh kernel of its own unless ``runner`` is given.
    """
    name = submission.stem
    source = source_root / name / f"{name}.ipynb"
    if not source.is_file():
        raise AssignmentError(f"{submission}: no assignment {name!r} in {source_root}")
    teacher = read_notebook(source)
    validate(teacher, source)
    nb = with_teacher_tests(read_notebook(submission), teacher, submission)
    if runner is None:
        with NotebookRunner(submission.parent) as fresh:
            outcomes = {o.grade_id: o for o in fresh.run(nb) if o.grade_id}
    else:
        outcomes = {o.grade_id: o for o in runner.run(nb) if o.grade_id}
    points, failures, by_hand = {}, {}, {}
    for cell in teacher["cells"]:
        meta = nbgrader_meta(cell)
        if is_written_answer(cell):
            by_hand[meta["grade_id"]] = float(meta["points"])
        if not is_test_cell(cell):
            continue
        outcome = outcomes.get(meta["grade_id"])
        passed = outcome is not None and outcome.error is None
        points[meta["grade_id"]] = (float(meta["points"]) if passed else 0.0, float(meta["points"]))
        if not passed:
            failures[meta["grade_id"]] = f"{outcome.error}: {outcome.message}" if outcome else "not run"
    return GradeReport(submission, points, failures, by_hand)


# -- command line ---------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    rel = commands.add_parser("release", help="write the student versions")
    rel.add_argument("names", nargs="*", help="assignments (default: all)")
    commands.add_parser("check", help="exit 1 if the committed student versions are out of date")
    gra = commands.add_parser("grade", help="grade submitted notebooks with the teacher's test cells")
    gra.add_argument("submissions", nargs="+", type=Path)
    parser.add_argument("--source", type=Path, default=SOURCE_ROOT, help="teacher's notebooks")
    parser.add_argument("--release-dir", type=Path, default=RELEASE_ROOT, help="student versions")
    args = parser.parse_args(argv)
    try:
        if args.command == "release":
            for path in release(args.names, args.source, args.release_dir):
                print(f"wrote {os.path.relpath(path)}")
        elif args.command == "check":
            stale = out_of_date(args.source, args.release_dir)
            if stale:
                print("out of date (run: python tools/student_versions.py release):",
                      *map(os.path.relpath, stale), file=sys.stderr)
                return 1
        else:
            os.environ.setdefault("I2MD_PROFILE", "smoke")
            for submission in args.submissions:
                report = grade(submission, args.source)
                earned, possible = report.total
                print(f"{submission}: {earned:g} / {possible:g} points")
                for grade_id, (got, of) in report.points.items():
                    why = f"  ({report.failures[grade_id]})" if grade_id in report.failures else ""
                    print(f"  {grade_id}: {got:g}/{of:g}{why}")
                for grade_id, of in report.by_hand.items():
                    print(f"  {grade_id}: ?/{of:g}  (a written answer: grade it by hand)")
    except AssignmentError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
