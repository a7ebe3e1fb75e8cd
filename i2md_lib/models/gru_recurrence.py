"""The time loop of several GRU cells at once, with a hand-written backward (opt-in CPU path).

:class:`~i2md_lib.models.encoders.CausalTwinGRU` runs two GRU cells per layer that read
the same input forward in time, by default with one whole-sequence ``nn.GRU`` call per
cell. With ``encoder.recurrence = "loop"`` it uses this module instead. On a CPU,
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
