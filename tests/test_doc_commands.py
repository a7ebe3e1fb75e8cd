"""Every command line that README.md and the chapters show runs, at smoke scale.

The commands are read from the fenced code blocks of ``README.md``, ``book/*.md`` and the
markdown cells of ``book/*.ipynb``: every ``python -m i2md_lib ...`` line and every
``torchrun ... -m i2md_lib ...`` line (backslash continuations joined, comments dropped).
Each runs as written with three changes: ``--profile`` becomes ``smoke``; every path
(``/data/...``, ``data/...``, ``runs/...``) moves under a temporary folder, where the raw
datasets they name are created as small synthetic copies (NTU ``.skeleton`` files, a
PKU-MMD folder, MSR Action3D skeleton files); and a ``torchrun`` command checks its launcher options with torchrun's
own parser and runs what each of its processes runs, ``python -m i2md_lib ...``, once.
"""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from i2md_lib.cli import main
from i2md_lib.data.msr import write_msr_corpus
from i2md_lib.data.synthetic import write_skeleton_corpus

REPO = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
PATH_PREFIXES = ("/", "data/", "runs/")


def documents() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "book").glob("*.md")), *sorted((REPO / "book").glob("*.ipynb"))]


def markdown_of(path: Path) -> str:
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text())["cells"]
        return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    return path.read_text()


def shown_commands(path: Path) -> list[list[str]]:
    """The ``python -m i2md_lib`` and ``torchrun`` command lines of ``path``'s code blocks, as tokens."""
    commands = []
    for block in FENCE.findall(markdown_of(path)):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            if not re.search(r"(-m|--module)\s+i2md_lib\b", line):
                continue          # not a command line (blocks also hold Python and YAML)
            tokens = shlex.split(line, comments=True)
            if "i2md_lib" in tokens and tokens[tokens.index("i2md_lib") - 1] in ("-m", "--module"):
                commands.append(tokens)
    return commands


def test_the_documents_show_commands():
    counts = {p.name: len(shown_commands(p)) for p in documents()}
    assert counts["README.md"] >= 3 and counts["ch08_scaling.ipynb"] >= 6 and counts["ch01_skeletons.ipynb"] >= 2


class SmokeWorld:
    """Moves the paths of the shown commands under ``root`` and creates the raw data they read."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, text: str) -> str:
        return str(self.root / text.lstrip("/")) if text.startswith(PATH_PREFIXES) else text

    def rewrite(self, argv: list[str]) -> list[str]:
        out = []
        for i, token in enumerate(argv):
            if i and argv[i - 1] == "--profile":
                token = "smoke"
            elif "=" in token and i and argv[i - 1] == "--set":
                key, value = token.split("=", 1)
                token = f"{key}={self.path(value)}"
            else:
                token = self.path(token)
            out.append(token)
        return out

    def create_inputs(self, argv: list[str]) -> None:
        """The raw folder a ``prepare-*`` command reads (its first positional argument)."""
        raw = Path(argv[1]) if len(argv) > 1 else None
        if raw is None or self.root not in raw.parents or raw.exists():
            return                # not a path of the shown command (an option, say): nothing to create
        if argv[0] == "prepare-ntu":
            write_skeleton_corpus(raw, 48, seed=0)
        elif argv[0] == "prepare-pku":
            write_pku(raw)
        elif argv[0] == "prepare-msr":
            write_msr_corpus(raw, subjects=10, max_frames=30)


def write_pku(root: Path, videos: int = 6) -> None:
    """A tiny PKU-MMD part II folder: skeleton/, label/ and both split files."""
    rng = np.random.default_rng(0)
    (root / "skeleton").mkdir(parents=True)
    (root / "label").mkdir()
    names = [f"{i:04d}-L" for i in range(2, 2 + videos)]
    for k, name in enumerate(names):
        frames = rng.normal(0, 0.3, (90, 150)) + 2.0
        (root / "skeleton" / f"{name}.txt").write_text(
            "".join(" ".join(f"{v:.5f}" for v in row) + "\n" for row in frames))
        (root / "label" / f"{name}.txt").write_text(f"{k + 1},0,40,1\n{k + 2},45,85,1\n")
    for split in ("cross_subject_v2.txt", "cross_view_v2.txt"):
        (root / split).write_text(f"Training videos:\n{', '.join(names[::2])}\n")


@pytest.mark.parametrize("document", [p.name for p in documents() if shown_commands(p)])
def test_shown_commands_run(document, tmp_path, capsys):
    import torch.distributed.run as torchrun

    world = SmokeWorld(tmp_path)
    for tokens in shown_commands(next(p for p in documents() if p.name == document)):
        at = tokens.index("i2md_lib")
        if tokens[0] == "torchrun":      # the launcher's options, then what each process runs
            args = torchrun.get_args_parser().parse_args(tokens[1:])
            assert args.module and args.training_script == "i2md_lib", tokens
        argv = world.rewrite(tokens[at + 1:])
        world.create_inputs(argv)
        code = main(argv)
        assert code == 0, (shlex.join(tokens), capsys.readouterr().err)
