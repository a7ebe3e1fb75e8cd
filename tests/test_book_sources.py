"""The book's text as a reader meets it: sources, cross-references and stated settings.

* nothing tracked points at the team's private reference notes (``shared/`` + ``reference``),
  which readers never get;
* the bibliography: every entry has a DOI, an arXiv id or a URL, every citation key exists,
  every entry is cited, and the introduction and every chapter cite at least one entry;
* cross-references between sections are MyST labels (``{ref}``), never typed section
  numbers, and every ``{ref}`` target exists;
* the README's and the introduction's profile tables agree with ``ExperimentConfig``.
"""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from i2md_lib.config import ExperimentConfig

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
CHAPTERS = sorted(BOOK.glob("ch*.ipynb"))
#: Pages of notebooks beside the chapters (teaching, running on a GPU): prose checked like a chapter's.
GUIDES = sorted(p for p in BOOK.glob("*.ipynb") if not p.name.startswith("ch"))
BIB = BOOK / "references.bib"


def tracked_files() -> list[Path]:
    """Files git tracks or would track (not ignored); every file but .git without git."""
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others",
                              "--exclude-standard"], capture_output=True, check=True, timeout=60).stdout
        return [ROOT / p for p in out.decode().split("\0") if p and (ROOT / p).is_file()]
    except (OSError, subprocess.SubprocessError):
        return [p for p in ROOT.rglob("*") if p.is_file() and ".git" not in p.parts]


def markdown_of(path: Path) -> str:
    """The prose of a page: a .md file, or the markdown cells of a notebook."""
    if path.suffix == ".md":
        return path.read_text()
    return "\n\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"]
                       if c["cell_type"] == "markdown")


def pages() -> list[Path]:
    return [BOOK / "intro.md", *CHAPTERS, *GUIDES]


# -- no pointers to notes readers do not have --------------------------------------------------
@pytest.mark.parametrize("needle", ["shared" + "/reference", "shared" + "/data"])   # split: no self-match
def test_no_tracked_file_points_at_shared_reference(needle):
    """Neither the notes for developers nor the development copies of datasets (MSR Action3D's
    recordings) are part of the project: no chapter, test or tool may point at them."""
    found = []
    for path in tracked_files():
        try:
            text = path.read_text(errors="strict")
        except (UnicodeDecodeError, OSError):
            continue   # binary files
        found += [f"{path.relative_to(ROOT)}:{n}" for n, line in enumerate(text.splitlines(), 1)
                  if needle in line]
    assert not found, f"files that send readers to {needle}/ (not in the repository): {found}"


# -- the bibliography ---------------------------------------------------------------------------
def bib_entries() -> dict[str, str]:
    """key -> the entry's text, for every entry of references.bib."""
    text = BIB.read_text()
    starts = [(m.start(), m.group(1)) for m in re.finditer(r"^@\w+\{([^,\s]+),", text, re.M)]
    return {key: text[start:(starts[i + 1][0] if i + 1 < len(starts) else len(text))]
            for i, (start, key) in enumerate(starts)}


CITE = re.compile(r"\{cite(?::[pt])?\}`([^`]+)`")


def cited_keys(path: Path) -> set[str]:
    return {key.strip() for group in CITE.findall(markdown_of(path)) for key in group.split(",")}


def test_every_bibliography_entry_can_be_found_by_a_reader():
    entries = bib_entries()
    assert len(entries) >= 14, sorted(entries)
    for key, entry in entries.items():
        has = {f: re.search(rf"^\s*{f}\s*=\s*\{{([^}}]+)\}}", entry, re.M) for f in ("doi", "eprint", "url")}
        assert any(has.values()), f"{key}: no doi, eprint (arXiv id) or url"
        if has["doi"]:
            assert re.fullmatch(r"10\.\d{4,9}/\S+", has["doi"].group(1)), f"{key}: malformed DOI"
        if has["eprint"]:
            assert re.fullmatch(r"\d{4}\.\d{4,5}", has["eprint"].group(1)), f"{key}: malformed arXiv id"
            assert re.search(r"archiveprefix\s*=\s*\{arXiv\}", entry, re.I), f"{key}: eprint without arXiv"


def test_citations_exist_and_every_page_cites():
    entries = set(bib_entries())
    cited = {path.name: cited_keys(path) for path in pages()}
    unknown = {name: sorted(keys - entries) for name, keys in cited.items() if keys - entries}
    assert not unknown, f"citations of keys that references.bib lacks: {unknown}"
    silent = [name for name, keys in cited.items() if not keys]
    assert not silent, f"pages that cite nothing: {silent}"
    uncited = entries - set().union(*cited.values())
    assert not uncited, f"entries no page cites: {sorted(uncited)}"


def test_the_references_page_is_in_the_table_of_contents():
    toc = (ROOT / "_toc.yml").read_text()
    assert "book/references" in toc and "{bibliography}" in (BOOK / "references.md").read_text()
    assert "book/references.bib" in (ROOT / "_config.yml").read_text()


# -- cross-references ---------------------------------------------------------------------------
LABEL = re.compile(r"^\((?P<label>[\w-]+)\)=\s*$", re.M)
REF = re.compile(r"\{ref\}`(?:[^`<]*<)?(?P<label>[\w-]+)>?`")
# A typed section number: "§2.3", "Section 2.4", "Chapter 4, 4.1", "(3.5)", "in 6.4", "of 5.3" ...
TYPED_SECTION = re.compile(r"§\s*\d|\b[Ss]ection\s+\d|\b[Cc]hapter\s+\d+,?\s+\d+\.\d+"
                           r"|(?:\(|(?<=\.\s)|\b(?:in|of|see|and|table|from)\s+)[1-7]\.[1-9]\b(?!\.?\d)")


def prose_without_code_and_math(text: str) -> str:
    text = re.sub(r"~~~.*?~~~|```.*?```", "", text, flags=re.S)     # code blocks (solutions, shell)
    text = re.sub(r"\$\$.*?\$\$|\$[^$\n]*\$", "", text, flags=re.S)  # math
    return re.sub(r"`[^`\n]*`", "", text)                           # inline code


def test_sections_are_cross_referenced_by_label_not_by_number():
    typed = {}
    for path in pages():
        prose = prose_without_code_and_math(markdown_of(path))
        hits = [prose[max(0, m.start() - 30):m.end() + 10].replace("\n", " ")
                for m in TYPED_SECTION.finditer(prose)]
        if hits:
            typed[path.name] = hits
    assert not typed, "typed section numbers (use a (label)= target and {ref}`label`):\n" + \
        json.dumps(typed, indent=1, ensure_ascii=False)


def test_every_ref_has_a_target_and_labels_are_unique():
    labels: list[str] = []
    refs: dict[str, set[str]] = {}
    for path in pages():
        text = markdown_of(path)
        labels += LABEL.findall(text)
        refs[path.name] = {m.group("label") for m in REF.finditer(text)}
    assert len(labels) == len(set(labels)), sorted({x for x in labels if labels.count(x) > 1})
    missing = {name: sorted(r - set(labels)) for name, r in refs.items() if r - set(labels)}
    assert not missing, f"{{ref}} targets that no page defines: {missing}"
    assert sum(map(len, refs.values())) > 0


def test_every_chapter_section_has_a_label():
    unlabelled = []
    for path in CHAPTERS:
        for cell in json.loads(path.read_text())["cells"]:
            lines = "".join(cell["source"]).splitlines() if cell["cell_type"] == "markdown" else []
            for i, line in enumerate(lines):
                if re.match(r"#{1,2} \d", line) and not (i and LABEL.match(lines[i - 1])):
                    unlabelled.append(f"{path.name}: {line}")
    assert not unlabelled, unlabelled


# -- stated settings agree with the configuration ------------------------------------------------
def readme_profile_table() -> dict[str, dict[str, str]]:
    """The README's "Scale profiles" table: profile -> {column header: cell}."""
    text = (ROOT / "README.md").read_text()
    lines = text[text.index("## Scale profiles"):].splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = [[c.strip() for c in line.strip().strip("|").split("|")]
             for line in lines[first:] if line.startswith("|")][:5]
    header, rows = table[0], table[2:]
    return {re.fullmatch(r"`(\w+)`.*", row[0]).group(1): dict(zip(header, row)) for row in rows}


@pytest.mark.parametrize("profile", ["smoke", "book", "full"])
def test_readme_profile_table_matches_the_config(profile):
    row = readme_profile_table()[profile]
    cfg = ExperimentConfig.for_profile(profile)
    assert row["encoder"] == f"BiGRU {cfg.encoder.num_layers}×{cfg.encoder.hidden_size}", row
    assert row["queue / top-k"] == f"{cfg.pretrain.queue_size} / {cfg.pretrain.cmd_topk}", row
    assert row["epochs"] == str(cfg.pretrain.epochs), row


def test_intro_states_the_full_profile_as_configured():
    cfg = ExperimentConfig.for_profile("full")
    intro = (BOOK / "intro.md").read_text()
    row = next(line for line in intro.splitlines() if line.startswith("| `full`"))
    stated = (f"{cfg.data.window} frames, BiGRU {cfg.encoder.num_layers}×{cfg.encoder.hidden_size}, "
              f"batch {cfg.pretrain.batch_size}, queue {cfg.pretrain.queue_size}, {cfg.pretrain.epochs} epochs")
    assert stated in row, row
