"""Small helpers: seeding, device choice, atomic writes, finiteness of tensors."""
from __future__ import annotations

import glob
import os
import random
import re
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from .config import DEVICE_ENV


#: The first torch whose ``torch.load(weights_only=True)`` a crafted file cannot bypass
#: (CVE-2025-32434); checkpoints are loaded only under it or later.
SAFE_TORCH_LOAD = (2, 6)


def check_safe_torch_load(version: str | None = None) -> None:
    """Raise ``RuntimeError`` if the installed torch (or ``version``) predates :data:`SAFE_TORCH_LOAD`."""
    version = torch.__version__ if version is None else version
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None or tuple(int(g) for g in match.groups()) < SAFE_TORCH_LOAD:
        raise RuntimeError(f"torch {version} cannot load checkpoints safely (CVE-2025-32434: a crafted file "
                           f"runs code despite weights_only=True); install torch>=2.6")


def load_failure(error: BaseException) -> str:
    """One line saying why ``torch.load(weights_only=True)`` refused a file (torch's own message
    spans many lines)."""
    text = str(error)
    if "Unsupported global" in text or "unsupported GLOBAL" in text:
        return ("holds Python objects besides tensors, which we do not unpickle; if you trust "
                "the file, load it with torch.load(path, weights_only=False) and pass the dict")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    detail = next((line for line in lines if line.startswith("Unsupported")), lines[0] if lines else "")
    return f"not a readable PyTorch checkpoint ({type(error).__name__}: {detail})"


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) in one call."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def get_device(preferred: str | None = None, setting: str = "device") -> torch.device:
    """Pick ``preferred`` if given, else CUDA when available, else CPU.

    The environment variable ``I2MD_DEVICE`` overrides the automatic choice. A device this
    machine does not have (``cuda`` without a GPU or without a CUDA build of torch, ``cuda:3``
    on a machine with two) raises one ``ValueError`` line naming ``setting`` (the config key or
    flag it came from) and what to do.
    """
    source = setting if preferred else f"${DEVICE_ENV}"
    choice = preferred or os.environ.get(DEVICE_ENV)
    if not choice:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(choice)
    except RuntimeError as e:
        raise ValueError(f"{source} {choice!r} is not a device name (cpu, cuda, cuda:1, ...): "
                         f"{' '.join(str(e).split())}") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            why = "this torch was built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ValueError(f"{source} {choice!r}: {why}; use cpu, or leave the device unset to take CUDA "
                             f"only where it is available")
        if device.index is not None and device.index >= count:
            raise ValueError(f"{source} {choice!r}: this machine has {count} CUDA device(s), "
                             f"cuda:0 to cuda:{count - 1}")
    return device


#: Temporary files of :func:`atomic_write` are named ``.<name>.<pid>.<random>.tmp``.
TEMP_SUFFIX = ".tmp"


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Write a file atomically: ``write(tmp)`` fills a temporary file in the same
    folder, which then replaces ``path`` in one rename. A crash never leaves a
    half-written ``path`` behind; the temporary file a killed writer left is removed
    by the next write of ``path``. The file gets the mode the umask allows (as ``open``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=TEMP_SUFFIX,
                                    dir=path.parent)
    try:
        os.chmod(tmp_name, 0o666 & ~current_umask())   # mkstemp makes 0600 whatever the umask
    finally:
        os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    remove_stale_temp_files(path)
    return path


def current_umask() -> int:
    """The process's file-mode creation mask (e.g. ``0o022``)."""
    try:   # Linux: read it without changing it (another thread may be creating files)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_stale_temp_files(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that interrupted :func:`atomic_write` calls of ``path``
    left behind (their writing process is gone); returns the removed paths."""
    path = Path(path)
    pattern = re.compile(re.escape(f".{path.name}.") + r"(?:(\d+)\.)?[A-Za-z0-9_]+" + re.escape(TEMP_SUFFIX))
    removed = []
    for candidate in path.parent.glob(glob.escape(f".{path.name}.") + "*" + TEMP_SUFFIX):
        match = pattern.fullmatch(candidate.name)
        if match is None or (match.group(1) and process_alive(int(match.group(1)))):
            continue
        try:
            candidate.unlink()
            removed.append(candidate)
        except FileNotFoundError:
            pass
    return removed


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (this process counts as alive)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:   # e.g. another user's process
        return True
    return True


def non_finite_tensors(obj: Any, prefix: str = "") -> Iterator[tuple[str, int, int]]:
    """``(dotted key, NaN/inf count, size)`` of every floating tensor in ``obj`` (a state
    dict, possibly nested in dicts, lists and tuples) that holds a non-finite value."""
    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point() or obj.is_complex():
            bad = int((~torch.isfinite(obj)).sum())
            if bad:
                yield prefix, bad, obj.numel()
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from non_finite_tensors(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from non_finite_tensors(value, f"{prefix}.{i}" if prefix else str(i))


def describe_non_finite(obj: Any) -> str | None:
    """One line naming the tensors of ``obj`` with NaN/inf values (``None`` when all are finite)."""
    found = list(non_finite_tensors(obj))
    if not found:
        return None
    listed = ", ".join(f"{key} ({bad} of {size})" for key, bad, size in found[:3])
    more = f" and {len(found) - 3} more" if len(found) > 3 else ""
    return f"NaN/inf values in {len(found)} tensor(s): {listed}{more}"
