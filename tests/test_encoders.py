"""Tests of i2md_lib.models.encoders against independently written computations."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from i2md_lib.config import EncoderConfig
from i2md_lib.models import cpu_kernels
from i2md_lib.models.encoders import (
    ENCODER_KINDS,
    RECURRENCES,
    resolve_recurrence,
    BiGRUEncoder,
    CausalTwinGRU,
    ProjectionHead,
    build_encoder,
    encode_streams,
    flatten_frames,
)
from i2md_lib.models.gru_recurrence import grouped_gru_layer, gru_recurrence

N, C, T, V, M = 3, 3, 6, 25, 2
FEATURES = V * C * M


def random_clips(dtype: torch.dtype = torch.float64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, C, T, V, M, generator=g, dtype=dtype)


def reference_bigru(hidden: int, layers: int, dtype: torch.dtype, seed: int = 1) -> nn.GRU:
    """The reference's ``nn.GRU(150, H, L, bidirectional=True)`` with random weights."""
    torch.manual_seed(seed)
    return nn.GRU(FEATURES, hidden, num_layers=layers, bidirectional=True, batch_first=True).to(dtype)


def random_norm(dtype: torch.dtype, seed: int = 2) -> nn.BatchNorm1d:
    """A BatchNorm with non-trivial affine parameters and running statistics."""
    g = torch.Generator().manual_seed(seed)
    norm = nn.BatchNorm1d(FEATURES).to(dtype)
    with torch.no_grad():
        norm.weight.copy_(1 + 0.3 * torch.randn(FEATURES, generator=g, dtype=dtype))
        norm.bias.copy_(0.3 * torch.randn(FEATURES, generator=g, dtype=dtype))
        norm.running_mean.copy_(torch.randn(FEATURES, generator=g, dtype=dtype))
        norm.running_var.copy_(0.5 + torch.rand(FEATURES, generator=g, dtype=dtype))
    return norm


def per_frame_reference(norm: nn.BatchNorm1d, gru: nn.GRU, frames: torch.Tensor) -> torch.Tensor:
    """The CMD reference's way: call the bidirectional GRU on one frame at a time,
    carrying the hidden state, and keep the output of the last frame. ``(N,T,F)->(N,2H)``."""
    seq = norm(frames.transpose(1, 2)).transpose(1, 2)
    hidden = None
    for t in range(seq.shape[1]):
        out, hidden = gru(seq[:, t:t + 1], hidden)
    return out[:, 0]


def reference_state(norm: nn.BatchNorm1d, gru: nn.GRU) -> dict[str, torch.Tensor]:
    """State dict in the reference BIGRU layout (``input_norm.*``, ``encoder.gru.*``)."""
    state = {f"input_norm.{k}": v for k, v in norm.state_dict().items()}
    state.update({f"encoder.gru.{k}": v for k, v in gru.state_dict().items()})
    return state


def gru_cell(x: torch.Tensor, h: torch.Tensor, w_ih, w_hh, b_ih, b_hh) -> torch.Tensor:
    """The GRU equations written out (gate order r, z, n as in PyTorch)."""
    gi = x @ w_ih.T + b_ih
    gh = h @ w_hh.T + b_hh
    hs = h.shape[-1]
    r = torch.sigmoid(gi[:, :hs] + gh[:, :hs])
    z = torch.sigmoid(gi[:, hs:2 * hs] + gh[:, hs:2 * hs])
    n = torch.tanh(gi[:, 2 * hs:] + r * gh[:, 2 * hs:])
    return (1 - z) * n + z * h


def run_cell(seq: torch.Tensor, weights, reverse: bool = False) -> torch.Tensor:
    """Run ``gru_cell`` over ``seq (N,T,F)`` (optionally from the end) -> ``(N,T,H)``."""
    n, t_len, _ = seq.shape
    h = torch.zeros(n, weights[1].shape[1], dtype=seq.dtype)
    outputs = [None] * t_len
    order = range(t_len - 1, -1, -1) if reverse else range(t_len)
    for t in order:
        h = gru_cell(seq[:, t], h, *weights)
        outputs[t] = h
    return torch.stack(outputs, dim=1)


def cell_weights(gru: nn.GRU, layer: int, suffix: str = ""):
    return tuple(getattr(gru, f"{name}_l{layer}{suffix}")
                 for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))


# --------------------------------------------------------------------------------------
def test_flatten_frames_uses_v_c_m_order():
    x = random_clips()
    flat = flatten_frames(x)
    assert flat.shape == (N, T, FEATURES)
    for v, c, m, t in [(0, 0, 0, 0), (3, 1, 1, 2), (24, 2, 1, 5), (10, 2, 0, 4)]:
        assert flat[1, t, v * C * M + c * M + m] == x[1, c, t, v, m]
    with pytest.raises(ValueError, match="N, C, T, V, M"):
        flatten_frames(x[0])


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
@pytest.mark.parametrize("train_mode", [True, False])
@pytest.mark.parametrize("recurrence", ["loop", "nn_gru", "auto", "grouped", "fused", "fused_c"])
def test_causal_twin_gru_equals_per_frame_reference(dtype, tol, train_mode, recurrence):
    hidden, layers = 8, 3
    gru, norm = reference_bigru(hidden, layers, dtype), random_norm(dtype)
    ours = CausalTwinGRU(FEATURES, hidden, layers, recurrence).to(dtype)
    ours.load_reference_state_dict(reference_state(norm, gru))
    norm.train(train_mode)
    ours.train(train_mode)
    x = random_clips(dtype)
    with torch.no_grad():
        expected = per_frame_reference(norm, gru, flatten_frames(x))
        got = ours(x)
    assert got.shape == (N, 2 * hidden)
    assert torch.allclose(got, expected, atol=tol, rtol=0), (got - expected).abs().max()


def test_causal_twin_gru_equals_handwritten_equations():
    """Second oracle: both cells of every layer run forward in time (the GRU written out)."""
    hidden, layers = 5, 2
    gru, norm = reference_bigru(hidden, layers, torch.float64), random_norm(torch.float64)
    norm.eval()
    ours = CausalTwinGRU(FEATURES, hidden, layers).double().eval()
    ours.load_reference_state_dict(reference_state(norm, gru))
    x = random_clips()
    with torch.no_grad():
        seq = norm(flatten_frames(x).transpose(1, 2)).transpose(1, 2)
        for l in range(layers):
            seq = torch.cat([run_cell(seq, cell_weights(gru, l)),
                             run_cell(seq, cell_weights(gru, l, "_reverse"))], dim=-1)
        assert torch.allclose(ours(x), seq[:, -1], atol=1e-12, rtol=0)


def test_loop_fused_auto_and_nn_gru_give_the_same_gradients():
    """The hand-written backwards of the time loops against autograd through ``nn.GRU``."""
    hidden, layers = 6, 3
    grads = {}
    for recurrence in ("loop", "fused", "fused_c", "nn_gru", "auto"):
        torch.manual_seed(3)
        enc = CausalTwinGRU(FEATURES, hidden, layers, recurrence).double()
        x = random_clips().requires_grad_(True)
        weights = torch.randn(N, 2 * hidden, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
        (enc(x) * weights).sum().backward()
        grads[recurrence] = {"input": x.grad, **{k: p.grad for k, p in enc.named_parameters()}}
    assert grads["loop"].keys() == grads["fused"].keys() == grads["nn_gru"].keys() == grads["auto"].keys()
    for name, got in grads["loop"].items():
        assert torch.allclose(got, grads["nn_gru"][name], atol=1e-12, rtol=0), name
        assert torch.allclose(grads["fused"][name], grads["nn_gru"][name], atol=1e-12, rtol=0), name
        assert torch.allclose(grads["fused_c"][name], grads["nn_gru"][name], atol=1e-12, rtol=0), name
        assert torch.equal(grads[resolve_recurrence("auto", hidden)][name], grads["auto"][name]), name


def test_gru_recurrence_gradcheck_and_outputs_of_every_frame():
    """Gradients w.r.t. every input from losses on all frames (not only the last)."""
    g = torch.Generator().manual_seed(5)
    t, n, cells, hidden = 4, 3, 2, 3
    gi = torch.randn(t, n, cells, 3 * hidden, generator=g, dtype=torch.float64, requires_grad=True)
    w_hh = torch.randn(cells, 3 * hidden, hidden, generator=g, dtype=torch.float64, requires_grad=True)
    b_hh = torch.randn(cells, 3 * hidden, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(gru_recurrence, (gi, w_hh, b_hh))
    # every frame's state is the GRU equations' (cell c: w_ih = identity, b_ih = 0, so gi = x)
    out = gru_recurrence(gi, w_hh, b_hh)
    eye = torch.eye(3 * hidden, dtype=torch.float64)
    for c in range(cells):
        expected = run_cell(gi[:, :, c].detach().transpose(0, 1),
                            (eye, w_hh[c].detach(), torch.zeros(3 * hidden, dtype=torch.float64), b_hh[c].detach()))
        assert torch.allclose(out[:, :, c].detach().transpose(0, 1), expected, atol=1e-12, rtol=0)
    with torch.no_grad():  # the path without saved gates computes the same
        assert torch.allclose(gru_recurrence(gi, w_hh, b_hh), out.detach(), atol=1e-14, rtol=0)
    with pytest.raises(ValueError, match="shapes do not fit"):
        gru_recurrence(gi, w_hh[:, :, :2], b_hh)


def test_grouped_streams_give_the_outputs_and_gradients_of_nn_gru():
    """Three encoders stepped as one grouped time loop (what a MoCo side does) against each
    encoder alone on nn.GRU: outputs, input gradients and every parameter's gradient."""
    torch.manual_seed(3)
    encoders = [CausalTwinGRU(FEATURES, 5, 2, "nn_gru").double() for _ in range(3)]
    clips = [random_clips(seed=s).requires_grad_() for s in range(3)]
    weights = [torch.randn(N, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(9 + s))
               for s in range(3)]
    results = {}
    for recurrence in ("nn_gru", "grouped"):
        for enc in encoders:
            enc.recurrence = recurrence
            enc.zero_grad()
        for x in clips:
            x.grad = None
        outs = encode_streams(encoders, clips)
        sum((o * w).sum() for o, w in zip(outs, weights)).backward()
        results[recurrence] = ([o.detach() for o in outs], [x.grad for x in clips],
                               [p.grad for enc in encoders for p in enc.parameters()])
    for got, want in zip(results["grouped"], results["nn_gru"]):
        for a, b in zip(got, want):
            assert torch.allclose(a, b, atol=1e-12, rtol=0)
    with torch.no_grad():   # the path without saved gates computes the same
        for a, b in zip(encode_streams(encoders, clips), results["nn_gru"][0]):
            assert torch.allclose(a, b, atol=1e-12, rtol=0)


def test_grouped_gru_layer_gradcheck_and_shape_errors():
    g = torch.Generator().manual_seed(4)
    s, c, t, n, h, size_in = 2, 2, 3, 2, 3, 4
    args = [torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)
            for shape in [(s, t * n, size_in), (s, c, 3 * h, size_in), (s, c, 3 * h), (s, c, 3 * h, h), (s, c, 3 * h)]]
    assert torch.autograd.gradcheck(lambda *a: grouped_gru_layer(*a, t), args)
    assert grouped_gru_layer(*args, t).shape == (t, s, c, n, h)
    with pytest.raises(ValueError, match="shapes do not fit"):
        grouped_gru_layer(args[0], args[1], args[2], args[3][..., :2], args[4], t)
    with pytest.raises(ValueError, match="shapes do not fit"):
        grouped_gru_layer(*args, 5)


def test_recurrence_choice():
    frames = torch.zeros(2, 3, FEATURES)
    default = CausalTwinGRU(FEATURES, 4, 1)
    fastest = "fused_c" if cpu_kernels.available() else "fused"     # fused_c needs the C kernels built
    assert default.recurrence == EncoderConfig().recurrence == "auto" and default.path(frames) == fastest
    assert not CausalTwinGRU(FEATURES, 4, 1, "nn_gru").uses_loop(frames)
    enc = build_encoder(EncoderConfig(hidden_size=4, num_layers=1, recurrence="loop"))
    assert enc.recurrence == "loop" and enc.uses_loop(frames)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not enc.uses_loop(frames)        # autocast falls back to nn.GRU
    assert set(RECURRENCES) == {"auto", "loop", "nn_gru", "grouped", "fused", "fused_c"}
    grouped = CausalTwinGRU(FEATURES, 4, 1, "grouped")
    assert grouped.path(frames) == "grouped" and not grouped.uses_loop(frames)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert grouped.path(frames) == "nn_gru"
    # auto: the path measured faster per size (benchmarks/results/step.md) and device
    assert resolve_recurrence("auto", 64) == fastest and resolve_recurrence("auto", 1024) == "nn_gru"
    assert resolve_recurrence("fused_c", 64) == fastest and resolve_recurrence("fused_c", 64, "cuda") == "fused"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert default.path(frames) == "nn_gru"
    assert resolve_recurrence("auto", 64, "cuda") == "nn_gru" and resolve_recurrence("nn_gru", 64) == "nn_gru"
    assert not CausalTwinGRU(FEATURES, 1024, 1).uses_loop(frames[..., :FEATURES])
    with pytest.raises(ValueError, match="unknown recurrence 'cudnn'"):
        CausalTwinGRU(FEATURES, 4, 1, "cudnn")


@pytest.mark.parametrize("layers", [1, 3])
def test_whole_sequence_bidirectional_gru_is_not_the_reference(layers):
    """Documents the subtlety: a bidirectional nn.GRU over the whole clip differs from the
    reference's per-frame calls. With one layer the forward halves agree and only the
    backward half differs (it saw only the last frame); deeper, both halves differ."""
    hidden = 8
    gru, norm = reference_bigru(hidden, layers, torch.float64), random_norm(torch.float64)
    norm.eval()
    frames = flatten_frames(random_clips())
    with torch.no_grad():
        reference = per_frame_reference(norm, gru, frames)
        whole, _ = gru(norm(frames.transpose(1, 2)).transpose(1, 2))
    last = whole[:, -1]
    gap_fwd = (last[:, :hidden] - reference[:, :hidden]).abs().max().item()
    gap_bwd = (last[:, hidden:] - reference[:, hidden:]).abs().max().item()
    assert gap_bwd > 1e-2
    if layers == 1:
        assert gap_fwd < 1e-12
    else:
        assert gap_fwd > 1e-2


def test_bigru_encoder_equals_explicit_bidirectional_computation():
    hidden, layers = 6, 2
    enc = BiGRUEncoder(FEATURES, hidden, layers).double()
    norm = random_norm(torch.float64)
    enc.input_norm.load_state_dict(norm.state_dict())
    enc.eval()
    norm.eval()
    x = random_clips()
    with torch.no_grad():
        seq = norm(flatten_frames(x).transpose(1, 2)).transpose(1, 2)
        for l in range(layers):
            fwd = run_cell(seq, cell_weights(enc.gru, l))
            bwd = run_cell(seq, cell_weights(enc.gru, l, "_reverse"), reverse=True)
            seq = torch.cat([fwd, bwd], dim=-1)
        expected = torch.cat([fwd[:, -1], bwd[:, 0]], dim=-1)
        got = enc(x)
    assert got.shape == (N, 2 * hidden)
    assert torch.allclose(got, expected, atol=1e-12, rtol=0)
    # and it is a different function from the reference-exact encoder with equal weights
    twin = CausalTwinGRU(FEATURES, hidden, layers).double().eval()
    twin.load_reference_state_dict(enc.reference_state_dict())
    with torch.no_grad():
        assert (twin(x) - got).abs().max() > 1e-2


@pytest.mark.parametrize("kind", sorted(ENCODER_KINDS))
def test_gradients_reach_every_parameter(kind):
    enc = build_encoder(EncoderConfig(kind=kind, hidden_size=7, num_layers=2))
    x = random_clips(torch.float32).requires_grad_(True)
    enc(x).pow(2).sum().backward()
    for name, param in enc.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("kind, cls", [("bigru_cmd", CausalTwinGRU), ("bigru", BiGRUEncoder)])
def test_build_encoder_shapes_and_errors(kind, cls):
    cfg = EncoderConfig(kind=kind, hidden_size=9, num_layers=2)
    enc = build_encoder(cfg)
    assert isinstance(enc, cls)
    assert enc.feature_dim == cfg.feature_dim == 18
    assert enc(random_clips(torch.float32)).shape == (N, 18)
    with pytest.raises(ValueError, match="150 features per frame"):
        enc(torch.zeros(N, C, T, V, 1))
    with pytest.raises(ValueError, match="N, C, T, V, M"):
        enc(torch.zeros(N, T, FEATURES))


def test_unknown_kind_is_a_clear_error():
    with pytest.raises(ValueError, match="encoder.kind must be one of bigru_cmd, bigru, got .stgcn."):
        build_encoder(EncoderConfig(kind="stgcn"))


def test_gru_init_is_xavier_with_default_biases():
    hidden = 16                         # default bound 1/sqrt(16) = 0.25
    enc = CausalTwinGRU(FEATURES, hidden, 2)
    cell = enc.layers[0].cell_a
    xavier_ih = math.sqrt(6 / (3 * hidden + FEATURES))     # 0.174
    xavier_hh = math.sqrt(6 / (3 * hidden + hidden))       # 0.306
    assert 0.9 * xavier_ih < cell.weight_ih_l0.abs().max() <= xavier_ih
    assert 0.9 * xavier_hh < cell.weight_hh_l0.abs().max() <= xavier_hh
    assert 0.2 < cell.bias_ih_l0.abs().max() <= 0.25
    bi = BiGRUEncoder(FEATURES, hidden, 2)
    assert 0.9 * xavier_hh < bi.gru.weight_hh_l1_reverse.abs().max() <= xavier_hh
    assert 0.9 * xavier_ih < bi.gru.weight_ih_l0.abs().max() <= xavier_ih


def test_projection_head_layout_and_init():
    torch.manual_seed(0)
    head = ProjectionHead(64, 64, 16)
    assert [type(m) for m in head] == [nn.Linear, nn.ReLU, nn.Linear]
    assert set(head.state_dict()) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert 0.9 * 0.125 < head[0].weight.abs().max() <= 0.125                 # default 1/sqrt(64)
    assert 0.9 * math.sqrt(6 / 80) < head[2].weight.abs().max() <= math.sqrt(6 / 80)  # xavier
    x = torch.randn(5, 64)
    expected = torch.relu(x @ head[0].weight.T + head[0].bias) @ head[2].weight.T + head[2].bias
    assert torch.allclose(head(x), expected, atol=1e-6)
    head_cfg = ProjectionHead.from_config(EncoderConfig(hidden_size=8, proj_hidden=12, out_dim=4))
    assert (head_cfg[0].in_features, head_cfg[0].out_features, head_cfg[2].out_features) == (16, 12, 4)


def test_reference_state_dict_round_trip_and_load_errors():
    enc = CausalTwinGRU(FEATURES, 4, 2)
    state = enc.reference_state_dict()
    assert "encoder.gru.weight_ih_l1_reverse" in state and "input_norm.running_var" in state
    assert state["encoder.gru.weight_ih_l1"].shape == (12, 8)
    other = CausalTwinGRU(FEATURES, 4, 2)
    other.load_reference_state_dict(state)
    for key, value in other.state_dict().items():
        assert torch.equal(value, enc.state_dict()[key]), key
    bad = dict(state)
    bad.pop("encoder.gru.bias_hh_l1_reverse")
    with pytest.raises(KeyError, match="bias_hh_l1_reverse"):
        other.load_reference_state_dict(bad)
    with pytest.raises(ValueError, match="shape mismatch"):
        CausalTwinGRU(FEATURES, 5, 2).load_reference_state_dict(state)
