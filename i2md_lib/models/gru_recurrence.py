"""The time loop of several GRU cells at once, with a hand-written backward (opt-in CPU path).

:class:`~i2md_lib.models.encoders.CausalTwinGRU` runs two GRU cells per layer that read
the same input forward in time, by default with one whole-sequence ``nn.GRU`` call per
cell. With ``encoder.recurrence = "loop"`` it uses this module instead (and with
``"grouped"`` :func:`grouped_gru_layer` below, several encoders' cells in one loop). On a CPU,
``nn.GRU`` steps through time in C++ and its autograd graph holds a dozen small nodes
per frame; the backward then adds one weight gradient per frame. Here both cells of a
layer step together and the backward is written out by hand:

* forward, per frame: one batched matrix product ``h @ W_hh^T`` for all cells, then
  the gates (PyTorch's gate order r, z, n)::

      r = sigmoid(gi_r + gh_r)        z = sigmoid(gi_z + gh_z)
      n = tanh(gi_n + r * gh_n)       h' = (1 - z) * n + z * h

  where ``gi = W_ih x + b_ih`` was computed for all frames in one product beforehand
  and ``gh = W_hh h + b_hh``;
* backward, per frame, only what the recurrence needs (the gradient flowing to the
  previous state); the weight gradient ``dW_hh`` is *one* product over all frames at
  the end instead of one per frame.

The result equals ``nn.GRU`` (float64 agreement to 1e-12 in ``tests/test_encoders.py``).
On a CPU this is faster at small sizes and uses less memory; at the paper's size the two
paths are level (``benchmarks/results/step.md``). On a GPU keep ``nn_gru`` (cuDNN).
"""
from __future__ import annotations

import torch
from torch import Tensor


def gru_recurrence(gi: Tensor, w_hh: Tensor, b_hh: Tensor) -> Tensor:
    """Run ``G`` GRU cells over ``T`` frames from zero states.

    Args:
        gi: input pre-activations ``W_ih x_t + b_ih``, ``(T, N, G, 3H)``.
        w_hh: recurrent weights, ``(G, 3H, H)``.
        b_hh: recurrent biases, ``(G, 3H)``.

    Returns:
        The states after every frame, ``(T, N, G, H)`` (cell ``g`` in ``[..., g, :]``),
        so ``out.view(T, N, G * H)`` is the cells' states concatenated per frame.
    """
    t, n, g, h3 = gi.shape
    if h3 % 3 or w_hh.shape != (g, h3, h3 // 3) or b_hh.shape != (g, h3):
        raise ValueError(f"GRU recurrence shapes do not fit: gi {tuple(gi.shape)} (T, N, G, 3H), "
                         f"w_hh {tuple(w_hh.shape)} (G, 3H, H), b_hh {tuple(b_hh.shape)} (G, 3H)")
    if t == 0:
        raise ValueError("GRU recurrence over 0 frames")
    if torch.is_grad_enabled() and (gi.requires_grad or w_hh.requires_grad or b_hh.requires_grad):
        return _GRURecurrence.apply(gi, w_hh, b_hh)
    return _forward(gi, w_hh, b_hh, saved=None)


def _forward(gi: Tensor, w_hh: Tensor, b_hh: Tensor, saved: dict[str, Tensor] | None) -> Tensor:
    """The time loop; fills ``saved`` (gates per frame) for the backward when given."""
    t_len, n, g, h3 = gi.shape
    h = h3 // 3
    gi_by_cell = gi.permute(0, 2, 1, 3)          # (T, G, N, 3H) view
    w_hh_t = w_hh.transpose(1, 2)                # (G, H, 3H) view
    bias = b_hh.unsqueeze(1)                     # (G, 1, 3H)
    out = gi.new_empty(t_len, n, g, h)
    if saved is not None:
        saved["rz"] = gi.new_empty(t_len, g, n, 2 * h)   # reset and update gates
        saved["n"] = gi.new_empty(t_len, g, n, h)        # candidate state
        saved["gh_n"] = gi.new_empty(t_len, g, n, h)     # W_hn h + b_hn (needed for dr)
    state = gi.new_zeros(g, n, h)                # (G, N, H)
    for t in range(t_len):
        gh = torch.baddbmm(bias, state, w_hh_t)  # (G, N, 3H)
        gi_t = gi_by_cell[t]
        rz = torch.sigmoid(gi_t[..., :2 * h] + gh[..., :2 * h],
                           out=None if saved is None else saved["rz"][t])
        cand = torch.tanh(torch.addcmul(gi_t[..., 2 * h:], rz[..., :h], gh[..., 2 * h:]),
                          out=None if saved is None else saved["n"][t])
        state = torch.lerp(cand, state, rz[..., h:])     # (1 - z) * n + z * h
        out[t].copy_(state.transpose(0, 1))
        if saved is not None:
            saved["gh_n"][t].copy_(gh[..., 2 * h:])
    return out


class _GRURecurrence(torch.autograd.Function):
    """Autograd wrapper of :func:`_forward` with the backward written out."""

    @staticmethod
    def forward(ctx, gi: Tensor, w_hh: Tensor, b_hh: Tensor) -> Tensor:  # type: ignore[override]
        saved: dict[str, Tensor] = {}
        out = _forward(gi, w_hh, b_hh, saved)
        ctx.save_for_backward(w_hh, out, saved["rz"], saved["n"], saved["gh_n"])
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, d_out: Tensor) -> tuple[Tensor, Tensor, Tensor]:  # type: ignore[override]
        w_hh, out, rz_all, n_all, gh_n_all = ctx.saved_tensors
        t_len, n, g, h = out.shape
        d_gi = out.new_empty(t_len, n, g, 3 * h)
        d_gi_by_cell = d_gi.permute(0, 2, 1, 3)   # (T, G, N, 3H) view
        d_gh = out.new_empty(g, t_len, n, 3 * h)  # gradient of W_hh h + b_hh, per frame
        d_state = out.new_zeros(g, n, h)          # dL/dh_t flowing back through time
        zeros = out.new_zeros(g, n, h)
        for t in range(t_len - 1, -1, -1):
            d_state = d_state + d_out[t].transpose(0, 1)
            prev = out[t - 1].transpose(0, 1) if t > 0 else zeros
            r, z, cand = rz_all[t, ..., :h], rz_all[t, ..., h:], n_all[t]
            d_n = d_state * (1 - z) * (1 - cand * cand)      # through tanh
            d_z = d_state * (prev - cand) * z * (1 - z)      # through sigmoid
            d_r = d_n * gh_n_all[t] * r * (1 - r)
            d_gh_t = d_gh[:, t]
            d_gh_t[..., :h] = d_r
            d_gh_t[..., h:2 * h] = d_z
            torch.mul(d_n, r, out=d_gh_t[..., 2 * h:])
            d_gi_t = d_gi_by_cell[t]
            d_gi_t[..., :2 * h] = d_gh_t[..., :2 * h]
            d_gi_t[..., 2 * h:] = d_n
            d_state = torch.baddbmm(d_state * z, d_gh_t, w_hh)   # (G, N, H)
        # weight gradients: one product over all frames
        prev_all = torch.cat([out.new_zeros(1, n, g, h), out[:-1]]).permute(2, 0, 1, 3).reshape(g, t_len * n, h)
        d_gh_flat = d_gh.view(g, t_len * n, 3 * h)
        d_w_hh = torch.bmm(d_gh_flat.transpose(1, 2), prev_all)   # (G, 3H, H)
        return d_gi, d_w_hh, d_gh_flat.sum(1)


# -- several streams' layers at once (``encoder.recurrence = "grouped"``) -----------------------
def grouped_gru_layer(x: Tensor, w_ih: Tensor, b_ih: Tensor, w_hh: Tensor, b_hh: Tensor,
                      frames: int) -> Tensor:
    """One GRU layer of ``S`` streams with ``C`` cells each, from zero states, in one time loop.

    Stream ``s`` feeds its input to its ``C`` cells (the two causal cells of a
    :class:`~i2md_lib.models.encoders.CausalTwinGRULayer`); the streams' inputs differ.

    Args:
        x: the streams' inputs, time-major, ``(S, T*N, in)`` (row ``t*N + i``: clip ``i``, frame ``t``).
        w_ih, b_ih: input weights ``(S, C, 3H, in)`` and biases ``(S, C, 3H)``.
        w_hh, b_hh: recurrent weights ``(S, C, 3H, H)`` and biases ``(S, C, 3H)``.
        frames: ``T``.

    Returns:
        The cells' states after every frame, ``(T, S, C, N, H)``.

    The input products of a stream's cells are one matrix product over all frames; the
    time loop then steps all ``G = S*C`` cells together, and the backward
    (:class:`_GroupedGRULayer`) is written out: the gate derivatives that do not depend on
    the incoming gradient are computed for all frames at once, and ``dW_hh`` accumulates
    frame by frame. ``tanh(a)`` is computed as ``2 sigmoid(2a) - 1``, the same value up to
    rounding (on this CPU ``tanh`` measured several times slower than ``sigmoid``). At the
    book's size this was not clearly faster than :func:`gru_recurrence` per encoder
    (``benchmarks/results/book_steps_grouped.md``): the input and weight products, not the
    per-frame operations, take most of a step there.
    """
    s, c, h3, size_in = w_ih.shape
    if x.dim() != 3 or x.shape[0] != s or x.shape[2] != size_in or frames < 1 or x.shape[1] % frames:
        raise ValueError(f"grouped GRU layer shapes do not fit: x {tuple(x.shape)} (S, T*N, in) with T = {frames}, "
                         f"w_ih {tuple(w_ih.shape)} (S, C, 3H, in)")
    if h3 % 3 or w_hh.shape != (s, c, h3, h3 // 3) or b_ih.shape != (s, c, h3) or b_hh.shape != (s, c, h3):
        raise ValueError(f"grouped GRU layer shapes do not fit: w_hh {tuple(w_hh.shape)} (S, C, 3H, H), b_ih "
                         f"{tuple(b_ih.shape)}, b_hh {tuple(b_hh.shape)} (S, C, 3H) for w_ih {tuple(w_ih.shape)}")
    if torch.is_grad_enabled() and any(t.requires_grad for t in (x, w_ih, b_ih, w_hh, b_hh)):
        return _GroupedGRULayer.apply(x, w_ih, b_ih, w_hh, b_hh, frames)
    return _grouped_forward(x, w_ih, b_ih, w_hh, b_hh, frames)[0]


def _grouped_forward(x: Tensor, w_ih: Tensor, b_ih: Tensor, w_hh: Tensor, b_hh: Tensor, frames: int,
                     save: bool = False) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """The time loop of :func:`grouped_gru_layer` over ``G = S*C`` cells (index ``s*C + c``).

    Returns ``(out (T, S, C, N, H), gates, cand)``; with ``save`` also ``gates (T, G, N, 3H)``
    = ``[r, z, W_hn h + b_hn]`` per frame and the candidate states ``cand (T, G, N, H)``,
    which the backward needs (else ``None``). Per-frame results are fresh contiguous
    tensors (writes into strided slices are slow on a CPU), stacked once at the end.
    """
    s, c, h3, size_in = w_ih.shape
    h, g, tn = h3 // 3, s * c, x.shape[1]
    n = tn // frames
    # input products of every frame and cell: [W_ir x + b_ir, W_iz x + b_iz, 2 (W_in x + b_in)]
    # (a broadcast bias inside the product would be copied slowly: added afterwards instead)
    gi = _stream_products(x, w_ih.reshape(s, c * h3, size_in), transpose_b=True).add_(b_ih.reshape(s, 1, c * h3))
    gi = gi.view(s, frames, n, c, h3)
    gi[..., 2 * h:] *= 2
    gi_t = gi.permute(1, 0, 3, 2, 4)                                           # (T, S, C, N, 3H) view
    bias = b_hh.reshape(g, 1, h3)
    w_hh_t = w_hh.reshape(g, h3, h).transpose(1, 2)                            # (G, H, 3H)
    states: list[Tensor] = []
    gates: list[Tensor] = []
    cands: list[Tensor] = []
    for t in range(frames):
        if t:
            gh = torch.baddbmm(bias, states[-1], w_hh_t)                       # (G, N, 3H): W_hh h + b_hh
        else:
            gh = bias.expand(g, n, h3).clone()
        gh4 = gh.view(s, c, n, h3)
        rz = gh4[..., :2 * h].add_(gi_t[t, ..., :2 * h]).sigmoid_().view(g, n, 2 * h)
        cand = torch.addcmul(gi_t[t, ..., 2 * h:], rz.view(s, c, n, 2 * h)[..., :h], gh4[..., 2 * h:], value=2)
        cand = cand.reshape(g, n, h).sigmoid_().mul_(2).sub_(1)               # tanh of the candidate
        states.append(torch.lerp(cand, states[-1], rz[..., h:]) if t else cand - rz[..., h:] * cand)
        if save:
            gates.append(gh)
            cands.append(cand)
    out = torch.stack(states).view(frames, s, c, n, h)
    if not save:
        return out, None, None
    return out, torch.stack(gates), torch.stack(cands)


class _GroupedGRULayer(torch.autograd.Function):
    """Autograd of :func:`grouped_gru_layer` with the backward written out."""

    @staticmethod
    def forward(ctx, x: Tensor, w_ih: Tensor, b_ih: Tensor, w_hh: Tensor, b_hh: Tensor,  # type: ignore[override]
                frames: int) -> Tensor:
        out, gates, cand = _grouped_forward(x, w_ih, b_ih, w_hh, b_hh, frames, save=True)
        ctx.save_for_backward(x, w_ih, w_hh, out, gates, cand)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, d_out: Tensor):  # type: ignore[override]
        x, w_ih, w_hh, out, gates, cand = ctx.saved_tensors
        t_len, s, c, n, h = out.shape
        g, tn, size_in = s * c, t_len * n, w_ih.shape[-1]
        out, d_out = out.view(t_len, g, n, h), d_out.reshape(t_len, g, n, h)
        r, z, gh_n = gates[..., :h], gates[..., h:2 * h], gates[..., 2 * h:]
        # gate derivatives that do not depend on the incoming gradient, all frames at once
        dn_coef = (1 - z) * (1 - cand * cand)             # dh'/d(candidate pre-activation)
        dz_coef = -cand
        dz_coef[1:] += out[:-1]
        dz_coef *= z * (1 - z)                            # dh'/d(update pre-activation) = (h - n) z (1 - z)
        dr_coef = gh_n * r * (1 - r)                      # d(candidate pre-act.)/d(reset pre-act.)
        w_hh_g = w_hh.reshape(g, 3 * h, h)
        d_w_hh = out.new_zeros(g, 3 * h, h)
        d_state = d_out[-1]
        d_ghs: list[Tensor] = []                          # gradient of W_hh h + b_hh, per frame (G, N, 3H)
        d_cands: list[Tensor] = []                        # gradient of the candidate's pre-activation
        for t in range(t_len - 1, -1, -1):
            if t < t_len - 1:
                d_state = d_state + d_out[t]
            d_n = d_state * dn_coef[t]
            d_gh = d_state.new_empty(g, n, 3 * h)
            torch.mul(d_n, dr_coef[t], out=d_gh[..., :h])
            torch.mul(d_state, dz_coef[t], out=d_gh[..., h:2 * h])
            torch.mul(d_n, r[t], out=d_gh[..., 2 * h:])
            d_ghs.append(d_gh)
            d_cands.append(d_n)
            if t:
                d_w_hh.baddbmm_(d_gh.transpose(1, 2), out[t - 1])
                d_state = torch.baddbmm(d_state * z[t], d_gh, w_hh_g)
        d_gh_all = torch.stack(d_ghs[::-1])                                     # (T, G, N, 3H)
        d_gi = torch.cat([d_gh_all[..., :2 * h], torch.stack(d_cands[::-1])], dim=-1)
        d_gi = d_gi.view(t_len, s, c, n, 3 * h).permute(1, 0, 3, 2, 4).reshape(s, tn, c * 3 * h)
        d_w_ih = _stream_products(d_gi, x, transpose_a=True)                    # (S, C*3H, in)
        d_x = _stream_products(d_gi, w_ih.reshape(s, c * 3 * h, size_in)) if ctx.needs_input_grad[0] else None
        return (d_x, d_w_ih.view(s, c, 3 * h, size_in), d_gi.sum(1).view(s, c, 3 * h),
                d_w_hh.view(s, c, 3 * h, h), d_gh_all.sum(2).sum(0).view(s, c, 3 * h), None)


def _stream_products(a: Tensor, b: Tensor, transpose_a: bool = False, transpose_b: bool = False) -> Tensor:
    """``a[s] @ b[s]`` for every stream ``s`` (either side transposed first) as one matrix product
    per stream: on a CPU ``torch.mm`` runs these sizes faster than one ``torch.bmm``."""
    out = []
    for a_s, b_s in zip(a, b):
        out.append(torch.mm(a_s.t() if transpose_a else a_s, b_s.t() if transpose_b else b_s))
    return torch.stack(out) if len(out) > 1 else out[0].unsqueeze(0)
