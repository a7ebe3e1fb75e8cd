"""The library's shape: module layers without cycles or upward imports, short classes,
one module per book concept, and chapters that use the library's public face."""
from __future__ import annotations

import ast
import fnmatch
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "i2md_lib"

#: Lowest first. A module may import modules of its own layer or of lower ones, never of a
#: higher one, and the import graph (imports inside functions included) has no cycle.
LAYERS: list[tuple[str, list[str]]] = [
    ("settings", ["skeleton", "config", ""]),
    ("basics", ["utils", "exchange", "progress"]),
    ("data", ["data", "data.*"]),
    ("losses, encoders, files", ["losses", "losses.*", "dna", "imd", "models", "models.encoders",
                                 "models.gru_recurrence", "models.cpu_kernels", "models.fused_gru",
                                 "models.cmd_checkpoint", "checkpoint"]),
    ("MoCo mechanism", ["models.moco"]),
    ("methods, diagnostics, evaluation", ["methods", "diagnostics", "models.pretrained", "distributed",
                                          "eval", "eval.*", "evaluate"]),
    ("training loop", ["train"]),
    ("pipelines", ["launch", "pipeline"]),
    ("experiments and the book", ["experiments", "studies", "reproduce", "scaling", "report", "stats", "booktools",
                                  "plotting", "grading", "hpsearch"]),
    ("command line", ["cli", "__main__"]),
]

#: Each concept of the book and the one module that holds it.
CONCEPT_MODULES = {
    "modalities": "data/modalities.py", "augmentations": "data/augment.py", "encoder": "models/encoders.py",
    "InfoNCE": "losses/infonce.py", "MoCo queue": "models/moco.py", "CMD": "losses/cmd.py",
    "positive mining": "losses/posmining.py", "DNA": "dna.py", "IMD": "imd.py", "each method": "methods.py",
    "evaluation protocols": "eval/suite.py", "diagnostics": "diagnostics.py", "headline metrics": "report.py",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str) -> set[str]:
    """Library modules ``name`` imports anywhere in its file (functions included)."""
    path = MODULES[name]
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("i2md_lib"):
                target = node.module.removeprefix("i2md_lib").lstrip(".")
            else:
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}".lstrip(".")
                found.add(sub if sub in MODULES else target)
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("i2md_lib").lstrip(".") for a in node.names
                      if a.name.startswith("i2md_lib")}
    return {m for m in found if m in MODULES and m != name}


def layer_of(name: str) -> int:
    for level, (_, patterns) in enumerate(LAYERS):
        if any(fnmatch.fnmatchcase(name, p) for p in patterns):
            return level
    raise AssertionError(f"i2md_lib.{name} is in no layer of tests/test_layout.py: place it")


def test_every_module_has_a_layer_and_imports_nothing_above_it():
    upward = [f"i2md_lib.{m} ({LAYERS[layer_of(m)][0]}) imports i2md_lib.{d} ({LAYERS[layer_of(d)][0]})"
              for m in MODULES for d in imports_of(m) if layer_of(d) > layer_of(m)]
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_the_import_graph_has_no_cycle():
    graph = {m: imports_of(m) for m in MODULES}
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        if state.get(m) == 1:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(m):] + [m]))
        if state.get(m) == 2:
            return
        state[m] = 1
        for d in sorted(graph[m]):
            visit(d, path + [m])
        state[m] = 2

    for m in graph:
        visit(m, [])


def test_the_checker_sees_imports_inside_functions(tmp_path):
    assert "models.moco" in imports_of("pipeline") and "train" in imports_of("launch")


def test_no_class_is_longer_than_200_lines():
    long = [f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines"
            for name, path in MODULES.items() for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > 200]
    assert not long, long


@pytest.mark.parametrize("concept", CONCEPT_MODULES)
def test_each_concept_has_a_module_whose_name_says_so(concept):
    path = PACKAGE / CONCEPT_MODULES[concept]
    assert path.is_file(), f"{concept}: {path} is missing"
    docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
    assert docstring, f"{path} needs a docstring saying what it holds"


# -- the chapters use the library's public face -----------------------------------------
CHAPTERS = sorted((ROOT / "book").glob("ch*.ipynb"))
#: Model internals a chapter must not touch: MoCo's module attributes, private names,
#: the training-time label lookups of old versions.
INTERNALS = re.compile(r"\.(encoder_q|encoder_k|head_q|head_k|cluster_head_q|cluster_head_k|queue_index"
                       r"|_[a-z]\w*)\b")


def chapter_code(path: Path) -> list[tuple[str, str]]:
    """(where, code) of every code cell and every python block of the solutions."""
    pieces = []
    for i, cell in enumerate(json.loads(path.read_text())["cells"]):
        text = "".join(cell["source"])
        if cell["cell_type"] == "code":
            pieces.append((f"cell {i}", text))
        else:
            pieces += [(f"cell {i} (solution)", block)
                       for block in re.findall(r"~~~python\n(.*?)~~~", text, flags=re.S)]
    return pieces


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapters_do_not_reach_into_model_internals(path):
    hits = [f"{where}: {m.group(0)}" for where, code in chapter_code(path)
            for m in INTERNALS.finditer(code) if m.group(0) not in ("._repr_html_",)]
    assert not hits, hits


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapters_do_not_copy_the_forward_pass_or_the_queue(path):
    for where, code in chapter_code(path):
        copied = "to_modality(" in code and (".encoders(" in code or ".heads(" in code)
        assert not copied, f"{where}: embed with MoCo.embed instead of a copied forward pass"
        assert "% p.queue_size" not in code and "pointer + " not in code, f"{where}: re-simulated queue"
