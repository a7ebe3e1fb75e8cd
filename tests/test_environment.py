"""The set-up files agree with each other: pyproject, environment.yml, Makefile, CI."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from i2md_lib.utils import check_safe_torch_load

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_environment_yml_matches_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert set(env) >= {"name", "channels", "dependencies"}
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    assert any(d.startswith("python=3.11") for d in conda) and "pip" in conda
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    pinned = {Requirement(p).name: Requirement(p) for p in pip if not p.startswith("-")}
    declared = {Requirement(r).name: Requirement(r) for r in _pyproject()["dependencies"]}
    # the pinned torch must satisfy the range the package declares
    assert str(pinned["torch"].specifier) == "==2.13.0"
    assert declared["torch"].specifier.contains("2.13.0")
    # the editable install pulls the same extras the Makefile installs
    editable = [p for p in pip if p.startswith("-e")]
    assert editable == ["-e .[book,dev]"]
    assert '-e ".[book,dev]"' in (ROOT / "Makefile").read_text()
    extras = set(_pyproject()["optional-dependencies"])
    assert {"book", "dev"} <= extras


def test_torch_is_pinned_in_the_install_step_and_ranged_in_pyproject():
    makefile = (ROOT / "Makefile").read_text()
    assert "TORCH  ?= torch==2.13.0" in makefile
    torch_req = next(Requirement(r) for r in _pyproject()["dependencies"] if r.startswith("torch"))
    assert not str(torch_req.specifier).startswith("=="), "pyproject keeps a range, the install step pins"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and "make book" in readme
    assert "make test" in ci


def test_book_toc_lists_existing_files():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [c["file"] for c in part["chapters"]]
    for f in files:
        assert any((ROOT / f"{f}{ext}").exists() for ext in (".md", ".ipynb")), f


def test_torch_versions_that_load_checkpoints_unsafely_are_excluded():
    """torch < 2.6 lets a crafted checkpoint run code despite weights_only=True (CVE-2025-32434)."""
    torch_req = next(Requirement(r) for r in _pyproject()["dependencies"] if r.startswith("torch"))
    assert not torch_req.specifier.contains("2.5.1") and torch_req.specifier.contains("2.6.0")
    suggested = re.findall(r'TORCH="torch==([^"]+)"', (ROOT / "README.md").read_text())
    assert suggested and all(torch_req.specifier.contains(v) for v in suggested)
    with pytest.raises(RuntimeError, match="CVE-2025-32434"):
        check_safe_torch_load("2.5.1+cu121")
    check_safe_torch_load("2.6.0")
    check_safe_torch_load()   # the installed torch
