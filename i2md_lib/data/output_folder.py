"""An output folder that changes as a whole or not at all (``prepare-ntu``, ``prepare-pku``).

:func:`staged_folder` gives a fresh *staging* folder beside ``out_dir``
(``.<name>.staging-<pid>``). The conversion writes everything there; when it ends
without an error, the staging folder takes the place of ``out_dir`` in one step:

* Linux: ``renameat2(RENAME_EXCHANGE)`` swaps the two folders atomically, then the old
  content (now under the staging name) is removed;
* elsewhere: ``out_dir`` is renamed aside (``.<name>.previous-<pid>``), the staging
  folder renamed into place, and the old content removed.

A conversion that is killed leaves ``out_dir`` as it was (old dataset) or replaced
(new dataset), never a mix. The next :func:`staged_folder` on the same ``out_dir``
calls :func:`recover`, which removes leftover staging folders of dead processes and,
if a kill fell between the two renames of the fallback, puts the old dataset back.
Entries of the old ``out_dir`` that the conversion does not write (another benchmark's
folder, a README) are carried over as hard links (copies where links fail).
"""
from __future__ import annotations

import ctypes
import errno
import os
import re
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..utils import process_alive

_LEFTOVER = re.compile(r"\.(?P<name>.+)\.(?P<kind>staging|previous)-(?P<pid>\d+)")
#: Names of temporary files (atomic writes, the split writer's memory maps): never carried over.
_TEMPORARY = re.compile(r"\..+\.(tmp|building\.npy)")


def staging_path(out_dir: Path, kind: str = "staging", pid: int | None = None) -> Path:
    """``.<name>.<kind>-<pid>`` beside ``out_dir``."""
    return out_dir.parent / f".{out_dir.name}.{kind}-{os.getpid() if pid is None else pid}"


@contextmanager
def staged_folder(out_dir: str | Path) -> Iterator[Path]:
    """Yield an empty staging folder beside ``out_dir``; on a normal exit it replaces
    ``out_dir`` as a whole, on an error it is removed and ``out_dir`` stays as it was.

    Raises:
        NotADirectoryError: ``out_dir`` exists and is not a folder.
        PermissionError: the folder that holds ``out_dir`` is not writable (the staging
            folder is written beside ``out_dir``).
    """
    out_dir = Path(out_dir).expanduser().resolve()
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"{out_dir}: the output path exists and is not a folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    recover(out_dir)
    stage = staging_path(out_dir)
    try:
        stage.mkdir()                      # honours the umask, unlike tempfile.mkdtemp (0700)
    except PermissionError as e:
        raise PermissionError(f"{out_dir.parent}: cannot create the staging folder {stage.name} beside "
                              f"{out_dir.name} (the new dataset is written there, then swapped in): {e}") from e
    try:
        yield stage
        carry_over(out_dir, stage)
        replace_folder(stage, out_dir)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)


def recover(out_dir: Path) -> list[str]:
    """Clean up after conversions into ``out_dir`` that were killed; returns what was done.

    A ``previous`` folder is the old dataset set aside by the fallback swap: it goes back
    to ``out_dir`` if ``out_dir`` is missing (the kill fell between the two renames) and
    is removed otherwise. Staging folders of processes that no longer run are removed.
    """
    done = []
    for path in sorted(out_dir.parent.glob(f".{out_dir.name}.*-*")):
        match = _LEFTOVER.fullmatch(path.name)
        if match is None or match["name"] != out_dir.name or not path.is_dir():
            continue
        if process_alive(int(match["pid"])):
            continue                       # another conversion is running into this folder
        if match["kind"] == "staging":
            shutil.rmtree(path, ignore_errors=True)
            done.append(f"removed the staging folder {path.name} of an interrupted conversion")
        elif not out_dir.exists():
            os.rename(path, out_dir)
            done.append(f"restored {out_dir.name} from {path.name} (a conversion was killed mid-swap)")
        else:
            shutil.rmtree(path, ignore_errors=True)
            done.append(f"removed {path.name}, the old dataset of a finished swap")
    return done


def carry_over(old: Path, new: Path) -> None:
    """Hard-link (else copy) into ``new`` every entry of ``old`` that ``new`` lacks, recursively,
    except temporary files of interrupted writes."""
    if not old.is_dir():
        return
    for entry in old.iterdir():
        target = new / entry.name
        if _TEMPORARY.fullmatch(entry.name):
            continue
        if entry.is_dir() and not entry.is_symlink():
            if target.exists() and not target.is_dir():
                continue                   # the new conversion wrote a file of that name
            target.mkdir(exist_ok=True)
            carry_over(entry, target)
        elif not target.exists() and not target.is_symlink():
            _link_or_copy(entry, target)


def _link_or_copy(source: Path, target: Path) -> None:
    if source.is_symlink():
        os.symlink(os.readlink(source), target)
        return
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def replace_folder(stage: Path, out_dir: Path) -> None:
    """Put ``stage`` in the place of ``out_dir`` (see the module docstring)."""
    if not out_dir.exists():
        os.rename(stage, out_dir)
        return
    if exchange(stage, out_dir):
        shutil.rmtree(stage)               # the old dataset, now under the staging name
        return
    previous = staging_path(out_dir, "previous")
    os.rename(out_dir, previous)
    os.rename(stage, out_dir)
    shutil.rmtree(previous)


def exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2`` with ``RENAME_EXCHANGE``).

    Returns ``False`` where the system or file system cannot (the caller falls back).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(code, f"cannot swap {a} and {b}: {os.strerror(code)}")
