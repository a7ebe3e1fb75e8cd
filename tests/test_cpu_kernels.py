"""The ``fused_c`` recurrence: the C kernels of the fused GRU layer, their build and their fallback."""
from __future__ import annotations

import copy
import os

import pytest
import torch

from i2md_lib.models import cpu_kernels
from i2md_lib.models.encoders import CausalTwinGRU, resolve_recurrence
from i2md_lib.models.fused_gru import fused_gru_layer

from test_fused_gru import N, T, gru_cells, layer_args

needs_kernels = pytest.mark.skipif(not cpu_kernels.available(), reason="no C compiler builds the kernels here")


@pytest.fixture
def no_kernels(monkeypatch):
    """A machine without the kernels (``$I2MD_CPU_KERNELS=0``): :func:`cpu_kernels.load` gives ``None``."""
    monkeypatch.setenv("I2MD_CPU_KERNELS", "0")
    cpu_kernels.load.cache_clear()
    yield
    cpu_kernels.load.cache_clear()


def test_build_is_cached_by_source_compiler_and_cpu(tmp_path):
    if cpu_kernels.build() is None:
        pytest.skip("no C compiler here")
    first = cpu_kernels.build(directory=tmp_path)
    assert first is not None and first.parent == tmp_path and first.name.startswith("gru_kernels_")
    stamp = first.stat().st_mtime_ns
    assert cpu_kernels.build(directory=tmp_path) == first and first.stat().st_mtime_ns == stamp   # not rebuilt
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".build_")]                     # no leftovers
    kernels = cpu_kernels.Kernels(first)
    assert set(kernels.forward) == set(kernels.backward) == {torch.float32, torch.float64}


def test_no_compiler_or_a_failing_build_gives_none(tmp_path):
    assert cpu_kernels.build(compiler="no-such-compiler-i2md", directory=tmp_path) is None
    if os.path.exists("/bin/false"):
        assert cpu_kernels.build(compiler="/bin/false", directory=tmp_path) is None   # exits 1: no library
    assert not list(tmp_path.iterdir())


def test_without_kernels_fused_c_runs_as_fused(no_kernels):
    assert cpu_kernels.load() is None and not cpu_kernels.available()
    assert resolve_recurrence("auto", 64) == "fused" and resolve_recurrence("fused_c", 64) == "fused"
    torch.manual_seed(0)
    fused = CausalTwinGRU(150, 6, 2, "fused").double()
    fused_c = copy.deepcopy(fused)
    fused_c.recurrence = "fused_c"
    x = torch.randn(4, 3, 7, 25, 2, dtype=torch.float64)
    assert fused_c.path(x) == "fused" and torch.equal(fused_c(x), fused(x))


@needs_kernels
def test_native_layer_equals_nn_gru_and_passes_gradcheck():
    args = layer_args()
    out = fused_gru_layer(*args, T, native=True)
    assert torch.allclose(out, gru_cells(*args), atol=1e-12, rtol=0)
    assert torch.equal(fused_gru_layer(*args, T, last_only=True, native=True), out[-1])
    with torch.no_grad():                                   # the path without saved gates
        assert torch.equal(fused_gru_layer(*args, T, native=True), out)
    small = [a.detach()[: 3 * N].clone().requires_grad_() if i == 0 else a for i, a in enumerate(args)]
    assert torch.autograd.gradcheck(lambda *a: fused_gru_layer(*a, 3, native=True), small)
    assert torch.autograd.gradcheck(lambda *a: fused_gru_layer(*a, 3, last_only=True, native=True), small)


@needs_kernels
@pytest.mark.parametrize("last_only", [False, True])
def test_native_float32_matches_the_pytorch_operations(last_only):
    """float32: the kernels' exp (a polynomial, about 1e-7 relative) against PyTorch's."""
    args = [a.detach().float().requires_grad_() for a in layer_args(seed=1)]
    grads = {}
    for native in (False, True):
        out = fused_gru_layer(*args, T, last_only=last_only, native=native)
        weights = torch.linspace(-1, 1, out.numel()).view_as(out)
        grads[native] = [out, *torch.autograd.grad((out * weights).sum(), args)]
    for eager, native in zip(grads[False], grads[True]):
        assert torch.allclose(native, eager, atol=2e-6, rtol=1e-5), (native - eager).abs().max()


@needs_kernels
def test_native_layer_takes_only_the_gradients_asked_for():
    x, *weights = layer_args()
    fused_gru_layer(x.detach(), *weights, T, native=True).square().sum().backward()
    assert all(w.grad is not None and torch.isfinite(w.grad).all() for w in weights)


def test_other_dtypes_and_devices_use_the_pytorch_operations():
    args = [a.detach().to(torch.bfloat16) for a in layer_args()]
    out = fused_gru_layer(*args, T, native=True)            # no bfloat16 kernel: the PyTorch path
    assert out.dtype == torch.bfloat16 and torch.equal(out, fused_gru_layer(*args, T))
    from i2md_lib.models.fused_gru import _kernels_for

    x, w = torch.zeros(2, dtype=torch.float32), torch.zeros(2, dtype=torch.float64)
    assert _kernels_for(x, w) is None                       # mixed dtypes never reach the kernels
    assert _kernels_for(x, x) is cpu_kernels.load()


@needs_kernels
def test_layer_loops_in_c_and_frame_by_frame_compute_the_same(monkeypatch):
    """Where PyTorch's BLAS is found the whole time loop runs in C; without it, frame by frame from
    Python. Both against ``nn.GRU``, values and gradients."""
    built = cpu_kernels.load()
    results = {}
    for name, kernels in (("layer", built), ("frames", cpu_kernels.Kernels(built.path, gemm={}))):
        assert bool(kernels.forward_layer) == (name == "layer" and bool(built.gemm))
        monkeypatch.setattr(cpu_kernels, "load", lambda kernels=kernels: kernels)
        args = layer_args(seed=2)
        out = fused_gru_layer(*args, T, native=True)
        with torch.no_grad():
            assert torch.equal(fused_gru_layer(*args, T, native=True), out)
        weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
        results[name] = [out, *torch.autograd.grad((out * weights).sum(), args)]
        assert torch.allclose(out, gru_cells(*args), atol=1e-12, rtol=0)
    for a, b in zip(results["layer"], results["frames"]):
        assert torch.allclose(a, b, atol=1e-12, rtol=0)
