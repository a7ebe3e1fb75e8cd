"""The nbgrader round trip over ``classroom/``: generate_assignment, autograde, check the gradebook.

``make nbgrader`` runs this with the Python of ``.venv-nbgrader`` (nbgrader and this
repository installed, nothing else of the book). For every assignment it

1. copies ``classroom/source/`` into a fresh nbgrader course folder (a temporary directory,
   or ``--course DIR``) and runs ``nbgrader generate_assignment``; nbgrader's student version
   must have the same cells as the committed ``classroom/release/`` one;
2. writes the hand-made submissions of ``tools/classroom_samples.py`` (``solution``,
   ``comment_for``, ``partial``, ``delegation``, ``empty``) as the submissions of five students
   named after them, and runs ``nbgrader autograde``;
3. reads nbgrader's gradebook: every autograded test cell must carry the points
   ``classroom_samples.expected_points`` gives; the written answer must wait for a teacher
   (``needs_manual_grade``) in the solution and score 0 where it was left unanswered.

It prints a table, writes a JSON record with ``--record PATH`` (``classroom/nbgrader_run.json``
is the committed one; ``tests/test_classroom.py`` checks it is for the current notebooks) and
exits 1 when any check fails.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import classroom_samples as samples  # noqa: E402
import student_versions as sv  # noqa: E402

REPO = sv.REPO
RECORD = REPO / "classroom" / "nbgrader_run.json"
#: Files whose content decides the outcome; the record keeps their hashes.
INPUTS = ("tools/classroom_samples.py", "i2md_lib/grading.py")


def input_hashes() -> dict[str, str]:
    """sha256 of every source notebook and of the files in :data:`INPUTS` (paths relative to the repo)."""
    paths = [sv.SOURCE_ROOT / n / f"{n}.ipynb" for n in sv.assignments()] + [REPO / p for p in INPUTS]
    return {str(p.relative_to(REPO)): hashlib.sha256(p.read_bytes().replace(b"\r\n", b"\n")).hexdigest()
            for p in paths}


def nbgrader(course: Path, *args: str) -> float:
    """Run ``nbgrader ARGS`` in the course folder; return its wall time (s); exit on failure."""
    bin_dir = Path(sys.executable).parent           # nbgrader runs `alembic` from the PATH
    command = [str(bin_dir / "nbgrader"), *args]
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    start = time.perf_counter()
    done = subprocess.run(command, cwd=course, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"`{' '.join(command[1:])}` failed (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")
    return time.perf_counter() - start


def write_config(course: Path) -> None:
    (course / "nbgrader_config.py").write_text(
        "c = get_config()\n"
        "c.CourseDirectory.course_id = 'i2md'\n"
        f"c.CourseDirectory.root = {str(course)!r}\n"
        "c.Execute.timeout = 300\n")


def release_differences(course: Path, name: str) -> list[str]:
    """Cells where nbgrader's student version differs from the committed one."""
    ours = sv.read_notebook(sv.RELEASE_ROOT / name / f"{name}.ipynb")["cells"]
    theirs = sv.read_notebook(course / "release" / name / f"{name}.ipynb")["cells"]
    if len(ours) != len(theirs):
        return [f"{name}: {len(theirs)} cells from nbgrader, {len(ours)} committed"]
    return [f"{name}: cell {i} differs" for i, (a, b) in enumerate(zip(ours, theirs))
            if (a["cell_type"], sv.cell_source(a).rstrip()) != (b["cell_type"], sv.cell_source(b).rstrip())]


def gradebook_scores(course: Path, name: str, student: str) -> dict:
    """Autograded points per test cell and the state of each written answer, from the gradebook."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        notebook = gb.find_submission_notebook(name, name, student)
        tests, written = {}, {}
        for grade in notebook.grades:
            if grade.cell_type == "code":
                tests[grade.name] = float(grade.score)
            else:
                written[grade.name] = {"score": grade.score, "max_score": grade.max_score,
                                       "needs_manual_grade": bool(grade.needs_manual_grade)}
        return {"tests": tests, "written": written,
                "autograded": [float(notebook.code_score), float(notebook.max_code_score)]}


def problems_of(teacher: dict, kind: str, scores: dict) -> list[str]:
    """What differs from the expected outcome of a ``kind`` submission."""
    found = []
    expected = samples.expected_points(teacher, kind)
    if scores["tests"] != expected:
        found.append(f"test points {scores['tests']}, expected {expected}")
    for grade_id, state in scores["written"].items():
        if kind == "solution" and not state["needs_manual_grade"]:
            found.append(f"{grade_id}: an answered written question must wait for the teacher")
        if kind != "solution" and (state["needs_manual_grade"] or state["score"] != 0):
            found.append(f"{grade_id}: an unanswered written question must score 0, got {state}")
    return found


def round_trip(course: Path) -> dict:
    shutil.copytree(sv.SOURCE_ROOT, course / "source")
    write_config(course)
    names = sv.assignments()
    seconds = {"generate_assignment": 0.0, "autograde": 0.0}
    result: dict = {"assignments": {}, "release_differences": [], "problems": []}
    for name in names:
        seconds["generate_assignment"] += nbgrader(course, "generate_assignment", name, "--force")
        result["release_differences"] += release_differences(course, name)
        teacher = sv.read_notebook(sv.SOURCE_ROOT / name / f"{name}.ipynb")
        student = sv.read_notebook(course / "release" / name / f"{name}.ipynb")
        for kind in samples.KINDS:
            path = course / "submitted" / kind / name / f"{name}.ipynb"
            path.parent.mkdir(parents=True)
            path.write_text(sv.dumps(samples.submission(teacher, student, kind)))
        seconds["autograde"] += nbgrader(course, "autograde", name, "--force")
        result["assignments"][name] = {}
        for kind in samples.KINDS:
            scores = gradebook_scores(course, name, kind)
            result["assignments"][name][kind] = scores
            result["problems"] += [f"{name}/{kind}: {p}" for p in problems_of(teacher, kind, scores)]
    result["seconds"] = {k: round(v, 1) for k, v in seconds.items()}
    return result


def versions() -> dict[str, str]:
    import nbgrader as nbg
    import numpy
    import torch

    return {"python": platform.python_version(), "nbgrader": nbg.__version__,
            "torch": torch.__version__, "numpy": numpy.__version__}


def git_commit() -> str:
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "classroom/source", *INPUTS],
                           cwd=REPO, capture_output=True, text=True)
    return head.stdout.strip() + (" (with uncommitted changes to the inputs)" if dirty.stdout.strip() else "")


def print_table(result: dict) -> None:
    print(f"{'assignment':<18}" + "".join(f"{k:>13}" for k in samples.KINDS))
    for name, kinds in result["assignments"].items():
        cells = [f"{s['autograded'][0]:g}/{s['autograded'][1]:g}" for s in kinds.values()]
        print(f"{name:<18}" + "".join(f"{c:>13}" for c in cells))
    print("autograded points; each notebook's written answer (2 points) waits for the teacher")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--course", type=Path, help="course folder to use (must not exist; default: a temporary one)")
    parser.add_argument("--record", type=Path, nargs="?", const=RECORD,
                        help=f"write the JSON record here (default {RECORD.relative_to(REPO)})")
    args = parser.parse_args(argv)
    try:
        import nbgrader  # noqa: F401
    except ImportError:
        print("error: nbgrader is not installed in this Python; run `make nbgrader`", file=sys.stderr)
        return 2
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="i2md-nbgrader-") as tmp:
        course = args.course or Path(tmp) / "course"
        if course.exists():
            print(f"error: {course} exists; nbgrader needs a fresh course folder", file=sys.stderr)
            return 2
        course.mkdir(parents=True)
        result = round_trip(course.resolve())
    result["seconds"]["total"] = round(time.perf_counter() - start, 1)
    print_table(result)
    ok = not result["problems"] and not result["release_differences"]
    for line in result["release_differences"] + result["problems"]:
        print(f"FAILED {line}", file=sys.stderr)
    print(f"nbgrader round trip {'passed' if ok else 'FAILED'} in {result['seconds']['total']:g} s "
          f"(generate_assignment {result['seconds']['generate_assignment']:g} s, "
          f"autograde {result['seconds']['autograde']:g} s)")
    if args.record:
        record = {"command": "make nbgrader NBGRADER_ARGS=--record", "ok": ok,
                  "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "commit": git_commit(), "versions": versions(), "machine": platform.machine(),
                  "cpus": os.cpu_count(), "inputs_sha256": input_hashes(), **result}
        args.record.write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {args.record}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
