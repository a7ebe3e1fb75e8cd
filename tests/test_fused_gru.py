"""The ``fused`` recurrence: one GRU layer as one operation, and the BatchNorm folded into it."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from i2md_lib.models.encoders import (
    CausalTwinGRU,
    flatten_frames,
    normalise_rows,
    normed_input_weights,
    time_major_rows,
)
from i2md_lib.models.fused_gru import fused_gru_layer

T, N, F, G, H = 5, 4, 7, 2, 3


def layer_args(dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    shapes = [(T * N, F), (G * 3 * H, F), (G * 3 * H,), (G, 3 * H, H), (G, 3 * H)]
    return [torch.randn(*s, generator=gen, dtype=dtype).requires_grad_() for s in shapes]


def gru_cells(x, w_ih, b_ih, w_hh, b_hh):
    """The same layer with one ``nn.GRU`` per cell: ``(T, N, G*H)``."""
    outs = []
    for g in range(G):
        cell = nn.GRU(F, H).to(x.dtype)
        rows = slice(g * 3 * H, (g + 1) * 3 * H)
        with torch.no_grad():
            cell.weight_ih_l0.copy_(w_ih[rows]), cell.bias_ih_l0.copy_(b_ih[rows])
            cell.weight_hh_l0.copy_(w_hh[g]), cell.bias_hh_l0.copy_(b_hh[g])
        outs.append(cell(x.detach().view(T, N, F))[0])
    return torch.cat(outs, -1)


def test_fused_layer_equals_nn_gru_and_passes_gradcheck():
    args = layer_args()
    out = fused_gru_layer(*args, T)
    assert out.shape == (T, N, G * H)
    assert torch.allclose(out, gru_cells(*args), atol=1e-12, rtol=0)
    last = fused_gru_layer(*args, T, last_only=True)
    assert torch.equal(last, out[-1])
    with torch.no_grad():                                   # the path without saved gates
        assert torch.equal(fused_gru_layer(*args, T), out)
        assert torch.equal(fused_gru_layer(*args, T, last_only=True), last)
    small = [a.detach()[: 3 * N].clone().requires_grad_() if i == 0 else a for i, a in enumerate(args)]
    assert torch.autograd.gradcheck(lambda *a: fused_gru_layer(*a, 3), small)
    assert torch.autograd.gradcheck(lambda *a: fused_gru_layer(*a, 3, last_only=True), small)


def test_fused_layer_skips_the_input_gradient_when_not_needed():
    x, *weights = layer_args()
    x = x.detach()
    fused_gru_layer(x, *weights, T).square().sum().backward()
    assert x.grad is None and all(w.grad is not None and torch.isfinite(w.grad).all() for w in weights)


def test_fused_layer_rejects_shapes_that_do_not_fit():
    x, w_ih, b_ih, w_hh, b_hh = layer_args()
    with pytest.raises(ValueError, match=r"shapes do not fit.*T = 3"):
        fused_gru_layer(x, w_ih, b_ih, w_hh, b_hh, 3)             # 20 rows are not 3 frames of clips
    with pytest.raises(ValueError, match="shapes do not fit"):
        fused_gru_layer(x, w_ih, b_ih, w_hh[:, :, :2], b_hh, T)
    with pytest.raises(ValueError, match="shapes do not fit"):
        fused_gru_layer(x[:, :4], w_ih, b_ih, w_hh, b_hh, T)


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("training", [True, False])
def test_normalise_rows_moves_the_statistics_as_batchnorm_does(momentum, training):
    gen = torch.Generator().manual_seed(1)
    norm = nn.BatchNorm1d(F, momentum=momentum).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5, generator=gen), norm.bias.normal_(generator=gen)
        norm.running_mean.normal_(generator=gen), norm.running_var.uniform_(0.5, 2.0, generator=gen)
    twin = copy.deepcopy(norm)
    norm.train(training), twin.train(training)
    frames = torch.randn(N, T, F, generator=gen, dtype=torch.float64) * 3 + 1
    rows = frames.transpose(0, 1).reshape(T * N, F)
    for _ in range(2):
        expected = norm(frames.transpose(1, 2)).transpose(1, 2)          # (N, T, F)
        got = normalise_rows(twin, rows) * twin.weight + twin.bias       # (T*N, F)
        assert torch.allclose(got.view(T, N, F).transpose(0, 1), expected, atol=1e-12, rtol=0)
    for name, buffer in norm.named_buffers():
        assert torch.allclose(buffer, dict(twin.named_buffers())[name], atol=1e-14, rtol=0), name


def test_time_major_rows_hold_the_flattened_frames_in_another_column_order():
    x = torch.randn(4, 3, 5, 6, 2)                                  # (N, C, T, V, M)
    rows, features = time_major_rows(x)
    assert rows.shape == (5 * 4, 36) and sorted(features.tolist()) == list(range(36))
    flat = flatten_frames(x).transpose(0, 1).reshape(20, 36)       # (T*N, V*C*M)
    assert torch.equal(rows, flat[:, features])


@pytest.mark.parametrize("training", [True, False])
def test_normalise_rows_in_another_column_order_moves_the_same_statistics(training):
    gen = torch.Generator().manual_seed(3)
    norm = nn.BatchNorm1d(F).double()
    with torch.no_grad():
        norm.running_mean.normal_(generator=gen), norm.running_var.uniform_(0.5, 2.0, generator=gen)
    twin = copy.deepcopy(norm)
    norm.train(training), twin.train(training)
    rows = torch.randn(T * N, F, generator=gen, dtype=torch.float64) * 2 + 1
    features = torch.randperm(F, generator=gen)
    expected = normalise_rows(norm, rows)
    got = normalise_rows(twin, rows[:, features], features)
    assert torch.allclose(got, expected[:, features], atol=1e-12, rtol=0)
    for name, buffer in norm.named_buffers():
        assert torch.allclose(buffer, dict(twin.named_buffers())[name], atol=1e-14, rtol=0), name


def test_folding_the_scale_and_shift_into_the_first_layer_is_the_same_product():
    gen = torch.Generator().manual_seed(2)
    w, b = torch.randn(6, F, generator=gen, dtype=torch.float64), torch.randn(6, generator=gen, dtype=torch.float64)
    scale, shift = torch.rand(F, generator=gen, dtype=torch.float64), torch.randn(F, generator=gen, dtype=torch.float64)
    x = torch.randn(9, F, generator=gen, dtype=torch.float64)
    w_folded, b_folded = normed_input_weights(w, b, scale, shift)
    assert torch.allclose(x @ w_folded.t() + b_folded, (x * scale + shift) @ w.t() + b, atol=1e-12, rtol=0)


class ScaledNorm(nn.BatchNorm1d):
    """A BatchNorm subclass (as torchrun's global BatchNorm is): the fused path calls it, not folds it."""

    calls = 0

    def forward(self, x):
        ScaledNorm.calls += 1
        return super().forward(x)


def test_fused_encoder_calls_a_norm_it_cannot_fold():
    torch.manual_seed(5)
    fused = CausalTwinGRU(F, H, 2, "fused").double()
    plain = copy.deepcopy(fused)
    plain.recurrence = "nn_gru"
    for enc in (fused, plain):
        state = enc.input_norm.state_dict()
        enc.input_norm = ScaledNorm(F).double()
        enc.input_norm.load_state_dict(state)
    x = torch.randn(N, 1, T, F, 1, dtype=torch.float64)       # (N, C, T, V, M) with V*C*M = F
    ScaledNorm.calls = 0
    (fused(x) ** 2).sum().backward()
    assert ScaledNorm.calls == 1
    (plain(x) ** 2).sum().backward()
    for (name, p), q in zip(fused.named_parameters(), plain.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-12, rtol=0), name
    assert torch.allclose(fused.input_norm.running_mean, plain.input_norm.running_mean, atol=1e-14, rtol=0)
