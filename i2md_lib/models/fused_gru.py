"""One GRU layer of several cells -- input product, time loop and backward -- as one operation.

This is the ``fused`` CPU path of :class:`~i2md_lib.models.encoders.CausalTwinGRU`
(``encoder.recurrence = "fused"``, what ``auto`` takes on a CPU at small sizes). It computes
the same function as ``nn.GRU`` (PyTorch's gate order r, z, n)::

    r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)      z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn))   h' = (1 - z) * n + z * h

for ``G`` cells that read the same input (the two causal cells of a layer), but arranges the
work so that a small step spends its time in arithmetic rather than in moving memory:

* **one input product** for all cells and frames, ``(T*N, F) @ (F, G*3H)``, with the recurrent
  biases of r and z folded into its bias, so that a frame's r and z pre-activations are the
  recurrent product plus one addition;
* every frame's results are **written in place** into buffers laid out as the next step
  reads them: the states straight into ``(T, N, G*H)``, which is the next layer's input
  matrix, and the gates into ``(T, G, N, 3H)``, so no layout copy follows the loop;
* ``tanh(a)`` is computed as ``2 sigmoid(2 a) - 1`` (the same value up to rounding; on this
  CPU ``tanh`` measured about four times slower per element than ``sigmoid``), the factor 2
  applied to the input weights, where it is exact;
* the **backward is written out**: every gradient of a frame is the state's gradient times a
  factor that does not depend on it, so the factors are computed for all frames at once and
  the loop over frames does three operations (one product of the state's gradient with the
  factors, one with the update gate, one matrix product); the weight gradients are a few
  products over all frames at the end;
* the gradient with respect to the layer's input is computed only when asked for. The
  encoder feeds the first layer the *normalised* frames and folds BatchNorm's scale and shift
  into that layer's weights (:func:`~i2md_lib.models.encoders.normed_input_weights`), so the
  largest product of the backward, the gradient for the raw frames, is never needed; and it
  hands the frames over as time-major rows in the clips' own ``(C, V, M)`` order
  (:func:`~i2md_lib.models.encoders.time_major_rows`, a copy of whole blocks, where the
  reference's ``(V, C, M)`` order interleaves the channels and measured more than 20 times slower),
  the first layer's weight columns gathered into the same order.

With ``native`` (the ``fused_c`` recurrence) each frame's gate arithmetic, forward and backward, is
one call of a C function (:mod:`.cpu_kernels`, ``gru_kernels.c``) instead of a handful of PyTorch
operations, and the biases are added there too, so the products run without them; where PyTorch's
BLAS can be called from C, the loop over the frames runs in C as well, one call per layer. The
matrix products stay PyTorch's. Where the kernels cannot be built, ``native`` computes as without it.

Float64 agreement with ``nn.GRU`` to 1e-12 is tested in ``tests/test_fused_gru.py`` and
``tests/test_cpu_kernels.py``; the speed is measured in ``benchmarks/results/book_steps_fused.md``
and ``book_steps_vs_4356ec8.md``.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from . import cpu_kernels


def fused_gru_layer(x: Tensor, w_ih: Tensor, b_ih: Tensor, w_hh: Tensor, b_hh: Tensor,
                    frames: int, last_only: bool = False, native: bool = False) -> Tensor:
    """``G`` GRU cells over ``T`` frames of a time-major input, from zero states.

    Args:
        x: the input, time-major, ``(T*N, F)`` (row ``t*N + i``: clip ``i``, frame ``t``).
        w_ih, b_ih: the cells' input weights ``(G*3H, F)`` and biases ``(G*3H,)``, cell after cell.
        w_hh, b_hh: recurrent weights ``(G, 3H, H)`` and biases ``(G, 3H)``.
        frames: ``T``.
        last_only: return only the states after the last frame.
        native: do each frame's gate arithmetic in the C kernels of :mod:`.cpu_kernels` (one
            pass over memory instead of a handful of operations; the ``fused_c`` recurrence)
            when they are built and the tensors are float32 or float64 on the CPU.

    Returns:
        The cells' states after every frame, ``(T, N, G*H)`` (cell ``g`` in columns
        ``g*H:(g+1)*H``), or with ``last_only`` after the last frame, ``(N, G*H)``.
    """
    g, h3, h = w_hh.shape if w_hh.dim() == 3 else (0, 0, 0)
    tn = x.shape[0] if x.dim() == 2 else -1
    if (w_hh.dim() != 3 or h3 != 3 * h or b_hh.shape != (g, h3) or w_ih.dim() != 2
            or w_ih.shape[0] != g * h3 or b_ih.shape != (g * h3,) or x.dim() != 2
            or x.shape[1] != w_ih.shape[1] or frames < 1 or tn % frames):
        raise ValueError(f"fused GRU layer shapes do not fit: x {tuple(x.shape)} (T*N, F) with T = {frames}, "
                         f"w_ih {tuple(w_ih.shape)} (G*3H, F), b_ih {tuple(b_ih.shape)}, "
                         f"w_hh {tuple(w_hh.shape)} (G, 3H, H), b_hh {tuple(b_hh.shape)} (G, 3H)")
    kernels = _kernels_for(x, w_ih, b_ih, w_hh, b_hh) if native else None
    if torch.is_grad_enabled() and any(t.requires_grad for t in (x, w_ih, b_ih, w_hh, b_hh)):
        out = _FusedGRULayer.apply(x, w_ih, b_ih, w_hh, b_hh, frames, last_only, kernels)
    elif kernels is not None:
        out = _forward_native(kernels, x, w_ih, b_ih, w_hh, b_hh, frames, save=False)[0]
        out = out[-1] if last_only else out
    else:
        out = _forward(x, w_ih, b_ih, w_hh, b_hh, frames, save=False)[0]
        out = out[-1] if last_only else out
    return out


def _input_pre_activations(x: Tensor, w_ih: Tensor, b_ih: Tensor, b_hh: Tensor) -> Tensor:
    """``[W_ir x + b_ir + b_hr, W_iz x + b_iz + b_hz, 2 (W_in x + b_in)]`` for every row of
    ``x (T*N, F)`` and cell: ``(T*N, G*3H)``."""
    weight, bias = _input_weights(w_ih, b_ih, b_hh)
    return torch.addmm(bias, x, weight.t())


def _input_weights(w_ih: Tensor, b_ih: Tensor, b_hh: Tensor) -> tuple[Tensor, Tensor]:
    """The weights ``(G*3H, F)`` and biases ``(G*3H,)`` of the input pre-activations: ``W_i`` and
    ``b_i`` with the recurrent biases of r and z added and the rows of n doubled."""
    g, h3 = b_hh.shape
    h = h3 // 3
    scale = w_ih.new_ones(1, 3, 1)
    scale[0, 2] = 2
    weight = (w_ih.view(g, 3, h, -1) * scale.unsqueeze(-1)).view(g * h3, -1)
    bias = b_ih.view(g, 3, h) + torch.cat([b_hh[:, :2 * h], torch.zeros_like(b_hh[:, :h])], 1).view(g, 3, h)
    return weight, (bias * scale).view(-1)


def _forward(x: Tensor, w_ih: Tensor, b_ih: Tensor, w_hh: Tensor, b_hh: Tensor, frames: int,
             save: bool) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """The time loop. Returns the states ``(T, N, G*H)`` and, with ``save``, the gates
    ``(T, G, N, 3H)`` = ``[r, z, W_hn h + b_hn]`` and the candidate states ``(T, G, N, H)``."""
    g, h3, h = w_hh.shape
    n = x.shape[0] // frames
    gi = _input_pre_activations(x, w_ih, b_ih, b_hh).view(frames, n, g, h3).transpose(1, 2)  # (T, G, N, 3H)
    gi_rz, gi_n = gi[..., :2 * h].unbind(0), gi[..., 2 * h:].unbind(0)
    w_hh_t = w_hh.transpose(1, 2)                                       # (G, H, 3H)
    bias_n = torch.cat([torch.zeros_like(b_hh[:, :2 * h]), b_hh[:, 2 * h:]], 1).unsqueeze(1)  # (G, 1, 3H)
    out = x.new_empty(frames, n, g * h)
    news = out.view(frames, n, g, h).transpose(1, 2).unbind(0)          # (G, N, H) views
    gates = x.new_empty(frames if save else 1, g, n, h3)
    cands = x.new_empty(frames if save else 1, g, n, h)
    per_frame = (gates, gates[..., :2 * h], gates[..., :h], gates[..., h:2 * h], gates[..., 2 * h:], cands)
    # per-frame views, made once (without save one buffer serves every frame)
    gate_t, rz_t, r_t, z_t, ghn_t, cand_t = (v.unbind(0) * (1 if save else frames) for v in per_frame)
    two, minus_one = x.new_tensor(2.0), x.new_tensor(-1.0)
    state = None
    for t in range(frames):
        gate, cand = gate_t[t], cand_t[t]
        if state is None:
            gate.copy_(bias_n.expand(g, n, h3))
        else:
            torch.baddbmm(bias_n, state, w_hh_t, out=gate)             # [W_hr h, W_hz h, W_hn h + b_hn]
        rz_t[t].add_(gi_rz[t]).sigmoid_()
        torch.addcmul(gi_n[t], r_t[t], ghn_t[t], value=2, out=cand).sigmoid_()
        torch.addcmul(minus_one, cand, two, out=cand)                   # tanh of the candidate
        if state is None:
            torch.mul(cand, 1 - z_t[t], out=news[t])
        else:
            torch.lerp(cand, state, z_t[t], out=news[t])                # (1 - z) n + z h
        state = news[t]
    return out, (gates if save else None), (cands if save else None)


class _FusedGRULayer(torch.autograd.Function):
    """Autograd of :func:`fused_gru_layer` with the backward written out."""

    @staticmethod
    def forward(ctx, x: Tensor, w_ih: Tensor, b_ih: Tensor, w_hh: Tensor, b_hh: Tensor,  # type: ignore[override]
                frames: int, last_only: bool, kernels: "cpu_kernels.Kernels | None") -> Tensor:
        if kernels is not None:
            out, gates, cands = _forward_native(kernels, x, w_ih, b_ih, w_hh, b_hh, frames, save=True)
        else:
            out, gates, cands = _forward(x, w_ih, b_ih, w_hh, b_hh, frames, save=True)
        ctx.save_for_backward(x, w_ih, w_hh, out, gates, cands)
        ctx.last_only, ctx.kernels = last_only, kernels
        return out[-1] if last_only else out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, d_out: Tensor):  # type: ignore[override]
        x, w_ih, w_hh, out, gates, cands = ctx.saved_tensors
        t_len, g, n, h3 = gates.shape
        h = h3 // 3
        if ctx.kernels is not None:
            d_gh, d_in_n = _backward_native(ctx.kernels, d_out, w_hh, out, gates, cands, ctx.last_only)
            return _input_and_weight_gradients(ctx, d_gh, lambda view: view.copy_(d_in_n), x, w_ih, out)
        out_cells = out.view(t_len, n, g, h).transpose(1, 2)            # (T, G, N, H) view
        r, z, gh_n = gates[..., :h], gates[..., h:2 * h], gates[..., 2 * h:]
        # Every gradient of a frame is the state's gradient d_h times a factor that does not depend
        # on it: d(pre-activation of n) = d_h (1 - z)(1 - n^2), d(pre-act. of z) = d_h (h_prev - n) z (1 - z),
        # and the gradient of W_h h + b_h is d_h * [dn dr, dz, dn r] with dr = (W_hn h + b_hn) r (1 - r).
        # The factors are computed for all frames at once; the loop only multiplies and steps back.
        one = x.new_tensor(1.0)
        dn = torch.addcmul(one, cands, cands, value=-1).mul_(torch.sub(one, z))          # (T, G, N, H)
        factors = x.new_empty(t_len, g, n, 3, h)                        # for [r, z, n] of W_h h + b_h
        torch.mul(torch.addcmul(r, r, r, value=-1).mul_(gh_n), dn, out=factors[..., 0, :])
        torch.neg(cands[0], out=factors[0, ..., 1, :])
        torch.sub(out_cells[:-1], cands[1:], out=factors[1:, ..., 1, :])
        factors[..., 1, :].mul_(torch.addcmul(z, z, z, value=-1))
        torch.mul(dn, r, out=factors[..., 2, :])
        d_gh = x.new_empty(t_len, n, g, h3)        # gradient of [W_hr h + b_hr, W_hz h + b_hz, W_hn h + b_hn]
        d_gh_t = d_gh.view(t_len, n, g, 3, h).transpose(1, 2).unbind(0)   # (G, N, 3, H) views
        d_states = x.new_empty(t_len, g, n, h)                          # the states' gradients
        d_states_t, factors_t, z_t = d_states.unbind(0), factors.unbind(0), z.unbind(0)
        w_hh_c = w_hh.contiguous()
        if ctx.last_only:
            d_states_t[-1].copy_(d_out.view(n, g, h).transpose(0, 1))
            d_frames = None
        else:
            d_frames = d_out.view(t_len, n, g, h).transpose(1, 2).unbind(0)   # (G, N, H) views
            d_states_t[-1].copy_(d_frames[-1])
        for t in range(t_len - 1, -1, -1):
            d_state = d_states_t[t]
            if t < t_len - 1 and d_frames is not None:
                d_state.add_(d_frames[t])
            d_gh_frame = torch.mul(d_state.unsqueeze(2), factors_t[t], out=d_gh_t[t])
            if t:
                torch.baddbmm(d_state * z_t[t], d_gh_frame.view(g, n, h3), w_hh_c, out=d_states_t[t - 1])
        return _input_and_weight_gradients(ctx, d_gh, lambda view: torch.mul(d_states, dn, out=view),
                                           x, w_ih, out)


def _input_and_weight_gradients(ctx, d_gh: Tensor, write_n_part: Callable[[Tensor], object], x: Tensor,
                                w_ih: Tensor, out: Tensor):
    """The weight gradients (a few products over all frames; no state before the first frame)
    and the input's, from ``d_gh (T, N, G, 3H)``, the gradient of ``W_h h + b_h``, whose ``n``
    part ``write_n_part`` then overwrites (through a ``(T, G, N, H)`` view) with the gradient of
    ``W_in x + b_in``: the rows of ``d_gh`` become the gradients of the input pre-activations."""
    t_len, n, g, h3 = d_gh.shape
    h = h3 // 3
    prev = out[:-1].view((t_len - 1) * n, g, h).transpose(0, 1)     # (G, (T-1)N, H)
    d_w_hh = torch.bmm(d_gh[1:].view((t_len - 1) * n, g, h3).permute(1, 2, 0), prev)   # (G, 3H, H)
    d_b_hh = d_gh.view(-1, g, h3).sum(0)
    write_n_part(d_gh[..., 2 * h:].transpose(1, 2))    # now the gradient of the input pre-activations
    d_gi_rows = d_gh.view(t_len * n, g * h3)
    d_w_ih = d_gi_rows.t().mm(x) if ctx.needs_input_grad[1] else None
    d_b_ih = d_gi_rows.sum(0) if ctx.needs_input_grad[2] else None
    d_x = d_gi_rows.mm(w_ih) if ctx.needs_input_grad[0] else None
    return d_x, d_w_ih, d_b_ih, d_w_hh, d_b_hh, None, None, None


def _kernels_for(*tensors: Tensor) -> "cpu_kernels.Kernels | None":
    """The C kernels if they are built and fit ``tensors`` (all float32 or all float64, on the
    CPU), else ``None``."""
    dtype = tensors[0].dtype
    if dtype not in cpu_kernels.SUFFIXES or any(t.dtype != dtype or t.device.type != "cpu" for t in tensors):
        return None
    return cpu_kernels.load()


def _forward_native(kernels: "cpu_kernels.Kernels", x: Tensor, w_ih: Tensor, b_ih: Tensor, w_hh: Tensor,
                    b_hh: Tensor, frames: int, save: bool) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """:func:`_forward` with each frame's gate arithmetic in one C call: one input product without
    biases, then per frame one recurrent product (no bias either) and one kernel call, which adds
    the biases as it reads the products."""
    g, h3, h = w_hh.shape
    n = x.shape[0] // frames
    weight, bias = _input_weights(w_ih.detach(), b_ih.detach(), b_hh.detach())
    gi = torch.mm(x, weight.t())           # (T*N, G*3H), one product; the kernel adds the biases
    bias = bias.contiguous()
    b_hn = b_hh.detach()[:, 2 * h:].contiguous()                       # (G, H)
    out = x.new_empty(frames, n, g * h)
    packed = x.new_empty(2, g, n, h)           # each state once more, contiguous: the products read it faster
    gates = x.new_empty(frames if save else 1, g, n, h3)
    cands = x.new_empty(frames if save else 1, g, n, h)
    gi_ptr, out_ptr, b_ptr, bi_ptr, gate_ptr, cand_ptr = (t.data_ptr() for t in (gi, out, b_hn, bias, gates, cands))
    if x.dtype in kernels.forward_layer:        # the whole loop in C, the products by PyTorch's BLAS
        w_hh_c = w_hh.detach().contiguous()
        kernels.forward_layer[x.dtype](kernels.gemm[x.dtype], g, n, h, frames, gate_ptr, n * g * h3 if save else 0,
                                       gi_ptr, g * h3, bi_ptr, b_ptr, w_hh_c.data_ptr(), out_ptr, g * h,
                                       cand_ptr, n * g * h if save else 0, packed.data_ptr())
        return out, (gates if save else None), (cands if save else None)
    # else frame by frame: pointers by arithmetic and the products' targets as views made once
    forward, size = kernels.forward[x.dtype], x.element_size()
    w_hh_t = w_hh.detach().transpose(1, 2).contiguous()                # (G, H, 3H)
    gi_step, state_step = n * g * h3 * size, n * g * h * size
    gate_step, cand_step = (n * g * h3 * size, n * g * h * size) if save else (0, 0)
    gate_t, packed_t = gates.unbind(0) * (1 if save else frames), packed.unbind(0)
    packed_ptr = [p.data_ptr() for p in packed_t]
    for t in range(frames):
        if t:
            torch.bmm(packed_t[(t - 1) % 2], w_hh_t, out=gate_t[t])    # [W_hr h, W_hz h, W_hn h]
        forward(g, n, h, gate_ptr + t * gate_step, gi_ptr + t * gi_step, g * h3, bi_ptr, b_ptr,
                out_ptr + (t - 1) * state_step if t else None, out_ptr + t * state_step, g * h,
                cand_ptr + t * cand_step, packed_ptr[t % 2])
    return out, (gates if save else None), (cands if save else None)


def _backward_native(kernels: "cpu_kernels.Kernels", d_out: Tensor, w_hh: Tensor, out: Tensor,
                     gates: Tensor, cands: Tensor, last_only: bool) -> tuple[Tensor, Tensor]:
    """The backward's time loop with each frame's gate arithmetic in one C call, then one
    product with ``W_h``. Returns the gradient of ``W_h h + b_h``, ``(T, N, G, 3H)``, and that
    of ``W_in x + b_in``, ``(T, G, N, H)``."""
    t_len, g, n, h3 = gates.shape
    h = h3 // 3
    d_gh = out.new_empty(t_len, n, g, h3)
    d_in_n = out.new_empty(t_len, g, n, h)
    carried = out.new_empty(2, g, n, h)                             # the state's gradient, from t + 1
    if last_only:
        carried[0].copy_(d_out.view(n, g, h).transpose(0, 1))
        d_frames = None
    else:
        carried[0].zero_()
        d_frames = d_out.contiguous()                               # (T, N, G*H)
    backward, size = kernels.backward[out.dtype], out.element_size()
    w_hh_c = w_hh.detach().contiguous()
    state_step, gh_step = n * g * h * size, n * g * h3 * size
    out_ptr, gh_ptr, gate_ptr, cand_ptr, in_ptr = (t.data_ptr() for t in (out, d_gh, gates, cands, d_in_n))
    frames_ptr = None if d_frames is None else d_frames.data_ptr()
    if out.dtype in kernels.backward_layer:     # the whole loop in C, the products by PyTorch's BLAS
        kernels.backward_layer[out.dtype](kernels.gemm[out.dtype], g, n, h, t_len, carried.data_ptr(), frames_ptr,
                                          gate_ptr, cand_ptr, out_ptr, g * h, gh_ptr, g * h3, in_ptr,
                                          w_hh_c.data_ptr())
        return d_gh, d_in_n
    d_gh_t = d_gh.transpose(1, 2).unbind(0)                         # (G, N, 3H) views
    for t in range(t_len - 1, -1, -1):
        now, before = carried[(t_len - 1 - t) % 2], carried[(t_len - t) % 2]
        backward(g, n, h, now.data_ptr(), None if frames_ptr is None else frames_ptr + t * state_step,
                 gate_ptr + t * gh_step, cand_ptr + t * state_step,
                 out_ptr + (t - 1) * state_step if t else None, g * h,
                 gh_ptr + t * gh_step, g * h3, in_ptr + t * state_step, before.data_ptr() if t else None)
        if t:
            before.baddbmm_(d_gh_t[t], w_hh_c)                          # + d_gh W_h, (G, N, H)
    return d_gh, d_in_n
