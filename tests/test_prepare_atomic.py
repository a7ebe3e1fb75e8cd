"""Output folders change as a whole, files honour the umask, leftovers of killed runs go away."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from i2md_lib.data import output_folder
from i2md_lib.data.ntu import REPORT_NAME, prepare_ntu
from i2md_lib.data.synthetic import write_skeleton_corpus
from i2md_lib.utils import atomic_write

REPO = Path(__file__).resolve().parents[1]

#: Run prepare_ntu(raw, out) in a fresh process that SIGKILLs itself at ``point``.
KILL_SCRIPT = r"""
import os, signal, sys
from i2md_lib.data import ntu, output_folder

raw, out, point = sys.argv[1:4]
die = lambda: os.kill(os.getpid(), signal.SIGKILL)
if point == "after the first split is saved":
    real_save = ntu.save_split
    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        die()
    ntu.save_split = save_then_die
elif point == "before the swap":
    output_folder.carry_over = lambda old, new: die()
elif point == "after the swap, before the old dataset is removed":
    output_folder.shutil.rmtree = lambda *args, **kwargs: die()
elif point == "between the two renames of the fallback swap":
    output_folder.exchange = lambda a, b: False
    real_rename = os.rename
    def rename(src, dst):
        if os.path.basename(dst) == os.path.basename(out):
            die()
        real_rename(src, dst)
    output_folder.os.rename = rename
ntu.prepare_ntu(raw, out, "ntu60")
"""
KILL_POINTS = ("after the first split is saved", "before the swap",
               "after the swap, before the old dataset is removed", "between the two renames of the fallback swap")


def dataset_files(folder: Path) -> dict[str, bytes]:
    """Every file of a prepared folder but the report (it names the folders), by relative path."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != REPORT_NAME}


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> dict[str, Path]:
    """Two raw corpora (old and new content, same sample names) and their conversions."""
    root = tmp_path_factory.mktemp("corpora")
    paths = {}
    for version, seed in (("old", 0), ("new", 1)):
        write_skeleton_corpus(root / f"raw_{version}", 8, seed=seed)
        prepare_ntu(root / f"raw_{version}", root / f"ref_{version}", "ntu60")
        paths[version] = root / f"raw_{version}"
        paths[f"ref_{version}"] = root / f"ref_{version}"
    return paths


def which(folder: Path, corpora: dict[str, Path]) -> str:
    files = dataset_files(folder)
    for version in ("old", "new"):
        if files == dataset_files(corpora[f"ref_{version}"]):
            return version
    return "a mix"


@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_kill_leaves_the_old_dataset_or_the_new_one(tmp_path, corpora, point):
    out = tmp_path / "ntu60"
    prepare_ntu(corpora["old"], out, "ntu60")
    assert which(out, corpora) == "old"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(corpora["new"]), str(out), point],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == -9, result.stderr
    if point == "between the two renames of the fallback swap":
        assert not out.exists()                           # the old dataset waits beside it ...
        assert output_folder.recover(out)                 # ... and goes back (the next run does this)
    state = which(out, corpora)
    assert state == ("new" if point.startswith("after the swap") else "old")
    prepare_ntu(corpora["new"], out, "ntu60")             # the next run cleans up and converts
    assert which(out, corpora) == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["ntu60"]   # no staging or previous folder left
    report = json.loads((out / REPORT_NAME).read_text())
    assert report["raw_dir"] == str(corpora["new"])


def test_benchmarks_a_run_does_not_write_are_kept(tmp_path, corpora):
    out = tmp_path / "ntu60"
    prepare_ntu(corpora["old"], out, "ntu60")
    (out / "README.txt").write_text("my notes")
    prepare_ntu(corpora["new"], out, "ntu60", benchmarks=["xsub"])
    files, old, new = dataset_files(out), dataset_files(corpora["ref_old"]), dataset_files(corpora["ref_new"])
    assert {k: v for k, v in files.items() if k.startswith("xsub/")} == {k: v for k, v in new.items()
                                                                          if k.startswith("xsub/")}
    assert {k: v for k, v in files.items() if k.startswith("xview/")} == {k: v for k, v in old.items()
                                                                           if k.startswith("xview/")}
    assert files["README.txt"] == b"my notes"


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_leftovers_of_killed_runs_are_removed(tmp_path, corpora):
    out = tmp_path / "ntu60"
    prepare_ntu(corpora["old"], out, "ntu60")
    pid = dead_pid()
    stale_stage = tmp_path / f".ntu60.staging-{pid}"
    (stale_stage / "xsub").mkdir(parents=True)
    (stale_stage / "xsub" / "train_data_joint.npy").write_bytes(b"half written")
    stale_temp = out / "xsub" / f".train_label.pkl.{pid}.abcd1234.tmp"
    stale_temp.write_bytes(b"half written")
    old_style_temp = out / "xview" / ".val_num_frame.npy.k2j4h5g6.tmp"
    old_style_temp.write_bytes(b"half written")
    prepare_ntu(corpora["new"], out, "ntu60")
    assert not stale_stage.exists() and not stale_temp.exists() and not old_style_temp.exists()
    assert which(out, corpora) == "new"


def test_atomic_write_removes_temp_files_of_dead_writers_only(tmp_path):
    target = tmp_path / "checkpoint.pt"
    dead = tmp_path / f".checkpoint.pt.{dead_pid()}.abcd1234.tmp"
    alive = tmp_path / f".checkpoint.pt.{os.getppid()}.abcd1234.tmp"   # a running writer (our parent)
    for path in (dead, alive):
        path.write_bytes(b"partial")
    atomic_write(target, lambda p: p.write_bytes(b"done"))
    assert target.read_bytes() == b"done" and not dead.exists() and alive.exists()


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750),
                                                        (0o077, 0o600, 0o700)])
def test_files_honour_the_umask(tmp_path, corpora, umask, file_mode, dir_mode):
    before = os.umask(umask)
    try:
        atomic_write(tmp_path / "file.txt", lambda p: p.write_text("x"))
        prepare_ntu(corpora["old"], tmp_path / "ntu60", "ntu60")
    finally:
        os.umask(before)
    assert stat.S_IMODE((tmp_path / "file.txt").stat().st_mode) == file_mode
    prepared = [tmp_path / "ntu60", *(tmp_path / "ntu60").rglob("*")]
    assert {stat.S_IMODE(p.stat().st_mode) for p in prepared if p.is_file()} == {file_mode}
    assert {stat.S_IMODE(p.stat().st_mode) for p in prepared if p.is_dir()} == {dir_mode}
