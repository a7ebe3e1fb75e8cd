"""The C kernels of the ``fused_c`` recurrence: compiled on first use, loaded with ``ctypes``.

``gru_kernels.c`` (beside this file) holds the per-frame gate arithmetic of a fused GRU layer,
forward and backward, as one pass over memory each, and the loops over a layer's frames that
call it; those loops take the matrix products from the BLAS inside PyTorch's CPU library
(:func:`blas_products`, MKL's ``sgemm_``/``dgemm_`` in the x86 wheels), so a layer is one call
from Python. Where that BLAS is not exported, the layer steps through its frames from Python,
one product and one kernel call per frame. The file has no dependency but the C library: the
machine's C compiler (``$CC``, else ``cc``) builds it into a shared library in a cache directory
(``$I2MD_KERNEL_CACHE``, else ``~/.cache/i2md/kernels``), named by a hash of the source, the
compiler's version and the CPU, so a changed source or another machine builds afresh. The
library is written atomically (built under a temporary name, then renamed). :func:`load` returns
``None`` when there is no compiler or the build fails, or when ``$I2MD_CPU_KERNELS`` is ``0``;
the ``auto`` recurrence then takes the ``fused`` path, the same arithmetic as PyTorch
operations.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("gru_kernels.c")
#: Compiler flags: tuned to the CPU that builds (the cache name holds the CPU), no errno from
#: math functions (lets the compiler vectorise); tried without ``-march=native`` if that fails.
FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-shared", "-fPIC")
#: ``torch.dtype`` -> suffix of the kernel names.
SUFFIXES = {torch.float32: "f32", torch.float64: "f64"}


def cache_dir() -> Path:
    """Where built kernels are kept: ``$I2MD_KERNEL_CACHE`` or ``~/.cache/i2md/kernels``."""
    return Path(os.environ.get("I2MD_KERNEL_CACHE") or Path.home() / ".cache" / "i2md" / "kernels")


def _cpu_signature() -> str:
    """The CPU's model and flags (Linux), or the platform's name: part of the cache name."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return "\n".join(sorted({l for l in lines if l.startswith(("model name", "flags"))}))
    except OSError:
        return platform.processor() + platform.machine()


def build(compiler: str | None = None, directory: Path | None = None) -> Path | None:
    """Build ``gru_kernels.c`` into ``directory`` (default :func:`cache_dir`) unless it is there;
    the path of the shared library, or ``None`` if no compiler is found or none builds it."""
    compiler = compiler or os.environ.get("CC") or "cc"
    exe = shutil.which(compiler)
    if exe is None:
        return None
    try:
        version = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    source = SOURCE.read_bytes()
    digest = hashlib.sha256(source + version.encode() + _cpu_signature().encode()
                            + " ".join(FLAGS).encode()).hexdigest()[:16]
    directory = directory or cache_dir()
    target = directory / f"gru_kernels_{digest}{'.dll' if os.name == 'nt' else '.so'}"
    if target.is_file():
        return target
    directory.mkdir(parents=True, exist_ok=True)
    for flags in (FLAGS, tuple(f for f in FLAGS if f != "-march=native")):
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".build_", suffix=target.suffix)
        os.close(fd)
        try:
            done = subprocess.run([exe, *flags, str(SOURCE), "-o", tmp, "-lm"],
                                  capture_output=True, timeout=300)
            if done.returncode == 0:
                os.replace(tmp, target)
                return target
        except (OSError, subprocess.SubprocessError):
            pass
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return None


#: The BLAS products the layer loops call, by dtype: the Fortran symbols of the BLAS inside
#: PyTorch's CPU library (MKL in the x86 wheels).
GEMM_SYMBOLS = {torch.float32: "sgemm_", torch.float64: "dgemm_"}


def blas_products() -> dict[torch.dtype, int]:
    """Addresses of PyTorch's own BLAS products (:data:`GEMM_SYMBOLS`) where its CPU library
    exports them; a dtype without one is left out (its layers then step frame by frame from
    Python, calling the kernels once per frame)."""
    found: dict[torch.dtype, int] = {}
    libraries = sorted((Path(torch.__file__).parent / "lib").glob("libtorch_cpu.*"))
    if not libraries:
        return found
    try:
        lib = ctypes.CDLL(str(libraries[0]))
    except OSError:
        return found
    for dtype, symbol in GEMM_SYMBOLS.items():
        try:
            found[dtype] = ctypes.cast(getattr(lib, symbol), ctypes.c_void_p).value
        except AttributeError:
            pass
    return found


class Kernels:
    """The loaded library: per dtype the frame kernels ``forward`` and ``backward`` and, where
    PyTorch's BLAS is found (``gemm``), the whole-layer loops ``forward_layer`` and
    ``backward_layer`` (ctypes functions)."""

    def __init__(self, path: Path, gemm: dict[torch.dtype, int] | None = None) -> None:
        self.path = path
        lib = ctypes.CDLL(str(path))
        i64, ptr = ctypes.c_int64, ctypes.c_void_p
        self.forward, self.backward, self.forward_layer, self.backward_layer = {}, {}, {}, {}
        self.gemm = blas_products() if gemm is None else gemm
        for dtype, suffix in SUFFIXES.items():
            fwd = getattr(lib, f"gru_forward_frame_{suffix}")
            fwd.argtypes = [i64, i64, i64, ptr, ptr, i64, ptr, ptr, ptr, ptr, i64, ptr, ptr]
            fwd.restype = None
            bwd = getattr(lib, f"gru_backward_frame_{suffix}")
            bwd.argtypes = [i64, i64, i64, ptr, ptr, ptr, ptr, ptr, i64, ptr, i64, ptr, ptr]
            bwd.restype = None
            self.forward[dtype], self.backward[dtype] = fwd, bwd
            if self.gemm.get(dtype):
                fwd_layer = getattr(lib, f"gru_forward_layer_{suffix}")
                fwd_layer.argtypes = [ptr, i64, i64, i64, i64, ptr, i64, ptr, i64, ptr, ptr, ptr, ptr, i64,
                                      ptr, i64, ptr]
                fwd_layer.restype = None
                bwd_layer = getattr(lib, f"gru_backward_layer_{suffix}")
                bwd_layer.argtypes = [ptr, i64, i64, i64, i64, ptr, ptr, ptr, ptr, ptr, i64, ptr, i64, ptr, ptr]
                bwd_layer.restype = None
                self.forward_layer[dtype], self.backward_layer[dtype] = fwd_layer, bwd_layer


@functools.lru_cache(maxsize=None)
def load() -> Kernels | None:
    """The kernels, built on first use; ``None`` if ``$I2MD_CPU_KERNELS`` is ``0`` or they cannot
    be built or loaded (the caller then computes the same arithmetic with PyTorch)."""
    if os.environ.get("I2MD_CPU_KERNELS", "1").strip() == "0":
        return None
    try:
        path = build()
        return Kernels(path) if path is not None else None
    except OSError:
        return None


def available() -> bool:
    """Whether :func:`load` gives kernels on this machine."""
    return load() is not None
