"""Sequence encoders for skeleton clips, and the projection head.

Every encoder maps a clip batch ``x (N, C, T, V, M)`` to one representation per clip
``(N, feature_dim)``. Each frame is first flattened to a ``V*C*M = 150`` vector in the
reference's ``(V, C, M)`` order (:func:`flatten_frames`). Two recurrent encoders:

``bigru_cmd`` -- :class:`CausalTwinGRU`
    What the CMD reference code (``moco/GRU.py``) really computes. The reference calls a
    bidirectional ``nn.GRU`` on *one frame at a time* and carries the hidden state
    forward. For a length-1 sequence the "reverse" direction also just steps from the
    state it is handed, so *both* directions run forward in time: each layer holds two
    causal GRU cells with separate weights, their states are concatenated and fed to the
    next layer, and the representation is the top layer's ``[h_a; h_b]`` at the last
    frame. We compute the same thing cell by cell over the whole clip: by default two
    whole-sequence ``nn.GRU`` calls per layer (on a GPU one cuDNN call per cell instead
    of one call per frame). Two CPU paths with a hand-written backward
    (:mod:`.gru_recurrence`): ``loop`` steps both cells of a layer together, and
    ``grouped`` (opt-in) steps the cells of *all streams* of a MoCo side together
    (:func:`encode_streams`), with fewer operations per frame; ``fused`` (:mod:`.fused_gru`)
    runs each layer's input product, time loop and backward as one operation; and ``fused_c``
    (what ``auto`` takes on a CPU at small sizes where a C compiler is found) is ``fused`` with
    each frame's gate arithmetic in a small C kernel (:mod:`.cpu_kernels`). What each saves
    per pretraining step is measured in ``benchmarks/results/step.md``, ``book_steps.md``,
    ``book_steps_fused.md`` and ``book_steps_fused_c.md``.

``bigru`` -- :class:`BiGRUEncoder`
    A true bidirectional GRU over the whole clip: the forward direction reads frames
    ``0..T-1``, the backward direction reads ``T-1..0``. The representation joins the
    forward state after the last frame with the backward state after the first frame,
    so both halves have seen the whole clip. With the same weights it is *not* the
    same function as ``bigru_cmd``: load CMD checkpoints into ``bigru_cmd``.

New encoder kinds (an ST-GCN, say) subclass :class:`SequenceEncoder` and are added to
:data:`ENCODER_KINDS`; :func:`build_encoder` picks one from ``EncoderConfig.kind``.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..config import EncoderConfig
from ..skeleton import LAYOUTS
from . import cpu_kernels
from .fused_gru import fused_gru_layer
from .gru_recurrence import grouped_gru_layer, gru_recurrence

#: Prefixes of the reference ``BIGRU`` module's state dict (``moco/GRU.py``).
REFERENCE_NORM_PREFIX = "input_norm."
REFERENCE_GRU_PREFIX = "encoder.gru."
#: The four tensors ``nn.GRU`` keeps per layer and direction (gate order r, z, n).
GRU_TENSOR_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
#: How :class:`CausalTwinGRU` steps through time. ``nn_gru``: one whole-sequence
#: ``nn.GRU`` call per cell (cuDNN on a GPU). ``loop``: a Python loop over frames that
#: steps both cells of a layer together with a hand-written backward
#: (:func:`~.gru_recurrence.gru_recurrence`). ``grouped``: one loop over frames for the
#: cells of every stream encoded together (:func:`encode_streams`; alone, its two cells),
#: with the gate arithmetic cut to five operations per frame forward and seven backward
#: (:func:`~.gru_recurrence.grouped_gru_layer`). ``fused``: each layer's input product, time
#: loop and backward as one operation writing into buffers laid out as the next step reads
#: them, with the input BatchNorm's scale and shift folded into the first layer
#: (:func:`~.fused_gru.fused_gru_layer`). ``fused_c``: ``fused`` with each frame's gate
#: arithmetic, forward and backward, in one call of a C kernel built on first use
#: (:mod:`.cpu_kernels`; where none can be built, ``fused_c`` runs as ``fused``). ``loop``,
#: ``grouped``, ``fused`` and ``fused_c`` are not used under autocast (they fall back to ``nn_gru``). ``auto`` (the default): per size and
#: device, the path the benchmarks measured as faster (:func:`resolve_recurrence`). All
#: compute the same function; they differ in the rounding of float sums.
RECURRENCES = ("auto", "nn_gru", "loop", "grouped", "fused", "fused_c")
#: ``auto`` takes a time loop on a CPU up to this hidden size: at the book's 2 x 64 ``loop``
#: measured 1.56x the per-frame reference against 1.26x for ``nn_gru``, at the paper's
#: 3 x 1024 the two were level within the noise (``benchmarks/results/step.md``), and
#: ``fused`` trains 1.28x to 1.34x faster per book step than ``loop``
#: (``benchmarks/results/book_steps_fused.md``), ``fused_c`` 1.17x to 1.19x faster than ``fused``
#: (``book_steps_fused_c.md``); with the losses of today, a book step is 1.58x to 1.60x faster
#: than at commit 4356ec8, where ``auto`` took ``loop`` (``book_steps_vs_4356ec8.md``). ``grouped``
#: is opt-in: at the book's size it was not clearly faster than ``loop``
#: (``benchmarks/results/book_steps_grouped.md``).
AUTO_LOOP_MAX_HIDDEN = 256


def resolve_recurrence(recurrence: str, hidden_size: int, device_type: str = "cpu") -> str:
    """The path ``recurrence`` takes for a ``hidden_size`` encoder on ``device_type``: ``auto``
    becomes ``fused_c`` on a CPU up to :data:`AUTO_LOOP_MAX_HIDDEN` (``fused`` where the C
    kernels cannot be built), else ``nn_gru``; ``fused_c`` without the kernels is ``fused``."""
    if recurrence not in RECURRENCES:
        raise ValueError(f"unknown recurrence {recurrence!r}; choose one of {', '.join(RECURRENCES)}")
    if recurrence == "auto":
        if device_type != "cpu" or hidden_size > AUTO_LOOP_MAX_HIDDEN:
            return "nn_gru"
        recurrence = "fused_c"
    if recurrence == "fused_c" and (device_type != "cpu" or not cpu_kernels.available()):
        return "fused"
    return recurrence
#: The paths that run :meth:`CausalTwinGRU.encode_rows` (one fused operation per layer).
FUSED_PATHS = ("fused", "fused_c")
#: Buffers and parameters of ``nn.BatchNorm1d``.
NORM_TENSOR_NAMES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def flatten_frames(x: torch.Tensor) -> torch.Tensor:
    """``(N, C, T, V, M) -> (N, T, V*C*M)``; feature index ``v*C*M + c*M + m`` (CMD order)."""
    if x.dim() != 5:
        raise ValueError(f"expected a clip batch (N, C, T, V, M), got shape {tuple(x.shape)}")
    n, _, t, _, _ = x.shape
    return x.permute(0, 2, 3, 1, 4).reshape(n, t, -1)


def _autocast_enabled(device_type: str) -> bool:
    """``torch.is_autocast_enabled(device_type)``, also on torch versions before 2.4."""
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()


def xavier_init_gru(gru: nn.GRU) -> None:
    """The reference init: ``xavier_uniform_`` on every 2-D GRU weight, biases untouched."""
    with torch.no_grad():
        for param in gru.parameters():
            if param.dim() == 2:
                nn.init.xavier_uniform_(param)


class SequenceEncoder(nn.Module):
    """Base of all encoders: ``forward(x (N, C, T, V, M)) -> (N, feature_dim)``.

    Subclasses implement :meth:`encode_frames` on already flattened frames and
    :meth:`reference_key_map` (names of the reference ``BIGRU`` state dict -> ours).
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int) -> None:
        """Check the sizes and create the input BatchNorm over the per-frame features;
        the representation is ``2 * hidden_size`` wide (two GRU halves)."""
        super().__init__()
        if num_layers < 1 or hidden_size < 1 or input_size < 1:
            raise ValueError(
                f"need positive sizes, got input {input_size}, hidden {hidden_size}, layers {num_layers}"
            )
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.feature_dim = 2 * hidden_size
        self.input_norm = nn.BatchNorm1d(input_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (N, C, T, V, M)`` float -> representation ``(N, feature_dim)``."""
        frames = flatten_frames(x)  # (N, T, V*C*M)
        if frames.shape[-1] != self.input_size:
            layouts = [l.describe() for l in LAYOUTS.values() if l.frame_values == self.input_size]
            raise ValueError(
                f"{type(self).__name__} expects V*C*M = {self.input_size} features per frame"
                f"{' (layout ' + layouts[0] + ')' if layouts else ''}, got {frames.shape[-1]} from input "
                f"shape {tuple(x.shape)}: an encoder runs only on the skeleton layout it was built for"
            )
        if frames.shape[1] == 0:
            raise ValueError(f"{type(self).__name__} got a clip with 0 frames: {tuple(x.shape)}")
        return self.encode_frames(frames)

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """``frames (N, T, input_size)`` -> ``(N, feature_dim)``."""
        raise NotImplementedError

    # -- reference weights ---------------------------------------------------
    def reference_key_map(self) -> dict[str, str]:
        """``{reference BIGRU key: our state-dict key}`` for every tensor we hold."""
        raise NotImplementedError

    def load_reference_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Copy weights from a reference ``BIGRU`` state dict (``fc.*`` keys left out).

        ``state`` has the keys ``input_norm.*`` and ``encoder.gru.weight_ih_l0`` ...
        ``encoder.gru.bias_hh_l{L-1}_reverse``. Raises ``KeyError`` for missing or
        unexpected keys and ``ValueError`` for a shape mismatch.
        """
        key_map = self.reference_key_map()
        optional = {REFERENCE_NORM_PREFIX + "num_batches_tracked"}
        missing = sorted(set(key_map) - set(state) - optional)
        unexpected = sorted(set(state) - set(key_map))
        if missing or unexpected:
            raise KeyError(
                f"reference state dict does not fit {type(self).__name__}: "
                f"missing {missing or 'nothing'}, unexpected {unexpected or 'nothing'}"
            )
        ours = self.state_dict()
        mapped: dict[str, torch.Tensor] = {}
        for ref_key, our_key in key_map.items():
            if ref_key not in state:
                mapped[our_key] = ours[our_key]  # an old checkpoint without the BN counter
                continue
            value = state[ref_key]
            if tuple(value.shape) != tuple(ours[our_key].shape):
                raise ValueError(
                    f"shape mismatch for {ref_key!r}: checkpoint has {tuple(value.shape)}, "
                    f"{type(self).__name__} expects {tuple(ours[our_key].shape)}"
                )
            mapped[our_key] = value
        self.load_state_dict(mapped, strict=True)

    def reference_state_dict(self) -> dict[str, torch.Tensor]:
        """Our weights renamed to the reference ``BIGRU`` layout (inverse of loading)."""
        ours = self.state_dict()
        return {ref_key: ours[our_key] for ref_key, our_key in self.reference_key_map().items()}


def _norm_key_map() -> dict[str, str]:
    return {REFERENCE_NORM_PREFIX + name: "input_norm." + name for name in NORM_TENSOR_NAMES}


class CausalTwinGRULayer(nn.Module):
    """One layer of :class:`CausalTwinGRU`: two GRU cells, both reading forward in time.

    ``cell_a`` takes the reference's forward-direction weights (``*_l{l}``), ``cell_b``
    its "reverse" weights (``*_l{l}_reverse``); ``(N, T, in) -> (N, T, 2*hidden)``.
    """

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.cell_a = nn.GRU(input_size, hidden_size, batch_first=True)
        self.cell_b = nn.GRU(input_size, hidden_size, batch_first=True)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """``(N, T, in) -> (N, T, 2H)`` with two whole-sequence ``nn.GRU`` calls."""
        out_a, _ = self.cell_a(seq)              # (N, T, H)
        out_b, _ = self.cell_b(seq)              # (N, T, H)
        return torch.cat([out_a, out_b], dim=-1)  # (N, T, 2H)

    def forward_time_major(self, seq: torch.Tensor) -> torch.Tensor:
        """``(T, N, in) -> (T, N, 2H)``, the same function as :meth:`forward`, computed
        by :func:`~i2md_lib.models.gru_recurrence.gru_recurrence`: the input products of
        both cells and all frames in one matrix product, then both cells step together."""
        t, n, _ = seq.shape
        a, b = self.cell_a, self.cell_b
        w_ih = torch.cat([a.weight_ih_l0, b.weight_ih_l0])                  # (2*3H, in)
        b_ih = torch.cat([a.bias_ih_l0, b.bias_ih_l0])                      # (2*3H,)
        gi = torch.addmm(b_ih, seq.reshape(t * n, -1), w_ih.t())            # (T*N, 2*3H)
        out = gru_recurrence(gi.view(t, n, 2, -1),
                             torch.stack([a.weight_hh_l0, b.weight_hh_l0]),  # (2, 3H, H)
                             torch.stack([a.bias_hh_l0, b.bias_hh_l0]))      # (2, 3H)
        return out.view(t, n, -1)                                           # (T, N, 2H)


class CausalTwinGRU(SequenceEncoder):
    """The CMD reference encoder, exactly (config kind ``bigru_cmd``).

    BatchNorm over the ``input_size`` frame features (statistics over batch and time),
    then ``num_layers`` :class:`CausalTwinGRULayer`; the representation is the top
    layer's output at the last frame, ``(N, 2*hidden_size)``.

    Per layer ``l`` and frame ``t`` (``GRU_a``/``GRU_b``: separate weights)::

        h_a[l](t) = GRU_a[l](in[l](t), h_a[l](t-1))
        h_b[l](t) = GRU_b[l](in[l](t), h_b[l](t-1))
        in[l+1](t) = [h_a[l](t); h_b[l](t)]

    which is what the reference's per-frame calls of a bidirectional ``nn.GRU``
    compute (there the "reverse" direction only ever sees one frame per call, so it
    too steps forward in time). ``recurrence`` picks how each layer steps through time
    (:data:`RECURRENCES`); the weights live in ``nn.GRU`` modules either way.
    """

    def __init__(self, input_size: int = 150, hidden_size: int = 1024, num_layers: int = 3,
                 recurrence: str = "auto") -> None:
        super().__init__(input_size, hidden_size, num_layers)
        resolve_recurrence(recurrence, hidden_size)   # checks the name
        self.recurrence = recurrence
        self.layers = nn.ModuleList(
            CausalTwinGRULayer(input_size if l == 0 else 2 * hidden_size, hidden_size)
            for l in range(num_layers)
        )
        for layer in self.layers:
            xavier_init_gru(layer.cell_a)
            xavier_init_gru(layer.cell_b)

    @classmethod
    def from_config(cls, cfg: EncoderConfig) -> "CausalTwinGRU":
        return cls(cfg.input_size, cfg.hidden_size, cfg.num_layers, cfg.recurrence)

    def path(self, frames: torch.Tensor) -> str:
        """The path (one of :data:`RECURRENCES` but ``auto``) :meth:`encode_frames` takes for ``frames``."""
        path = resolve_recurrence(self.recurrence, self.hidden_size, frames.device.type)
        return "nn_gru" if _autocast_enabled(frames.device.type) else path

    def uses_loop(self, frames: torch.Tensor) -> bool:
        """Whether :meth:`encode_frames` takes the ``loop`` path for ``frames``."""
        return self.path(frames) == "loop"

    def normed_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """The input BatchNorm over batch and time: ``(N, T, F) -> (N, F, T)``."""
        return self.input_norm(frames.transpose(1, 2))

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """``frames (N, T, input_size)`` -> ``(N, 2*hidden_size)``."""
        path = self.path(frames)
        if path == "grouped":
            return encode_grouped([self], [self.normed_frames(frames)])[0]
        if path in FUSED_PATHS:
            n, t, _ = frames.shape
            return self.encode_rows(frames.transpose(0, 1).reshape(t * n, -1), t)   # (T*N, F), time-major
        seq = self.normed_frames(frames).transpose(1, 2)  # BN over (N, T)
        if path == "loop":
            seq = seq.transpose(0, 1)      # (T, N, F): frames outermost for the time loop
            for layer in self.layers:
                seq = layer.forward_time_major(seq)    # (T, N, 2H)
            return seq[-1]                 # (N, 2H): both cells after the last frame
        for layer in self.layers:
            seq = layer(seq)    # (N, T, 2H)
        return seq[:, -1]       # (N, 2H): both cells after the last frame

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (N, C, T, V, M)`` -> ``(N, 2*hidden_size)``. On the ``fused`` path the clips go
        straight to time-major rows in ``(C, V, M)`` order (:func:`time_major_rows`, one block
        copy, where :func:`flatten_frames` interleaves the channels), and the first layer reads
        its columns in that order; every other case goes through :meth:`SequenceEncoder.forward`."""
        if (x.dim() == 5 and x.shape[2] > 0 and x.shape[1] * x.shape[3] * x.shape[4] == self.input_size
                and self.path(x) in FUSED_PATHS and _foldable(self.input_norm)):
            rows, features = time_major_rows(x)
            return self.encode_rows(rows, x.shape[2], features)
        return super().forward(x)

    def encode_rows(self, rows: torch.Tensor, frames: int, features: torch.Tensor | None = None) -> torch.Tensor:
        """The ``fused`` and ``fused_c`` paths: time-major rows ``(T*N, input_size)`` of ``frames``
        frames -> ``(N, 2*hidden_size)``, every layer one :func:`~.fused_gru.fused_gru_layer`
        (with the C kernels on ``fused_c``).

        ``features[j]`` is the feature (in :func:`flatten_frames` order, the order of the
        weights and the BatchNorm) that column ``j`` holds; ``None``: that order itself. The
        input BatchNorm's scale and shift are folded into the first layer's input weights
        (:func:`normed_input_weights`), so the backward never forms the gradient of the frames.
        """
        norm, t = self.input_norm, frames
        n = rows.shape[0] // t
        native = self.path(rows) == "fused_c"
        folded = _foldable(norm)
        if folded:
            seq = normalise_rows(norm, rows, features)                # BatchNorm without scale and shift
        elif features is None:                                        # e.g. the global BatchNorm of torchrun
            seq = norm(rows.view(t, n, -1).permute(1, 2, 0)).permute(2, 0, 1).reshape(t * n, -1)
        else:
            raise ValueError("rows in another feature order need a plain nn.BatchNorm1d to fold")
        for l, layer in enumerate(self.layers):
            a, b = layer.cell_a, layer.cell_b
            w_ih = torch.cat([a.weight_ih_l0, b.weight_ih_l0])               # (2*3H, in)
            b_ih = torch.cat([a.bias_ih_l0, b.bias_ih_l0])                   # (2*3H,)
            if l == 0 and folded:
                scale, shift = norm.weight, norm.bias
                if features is not None:                                     # the columns' order
                    w_ih, scale, shift = w_ih[:, features], scale[features], shift[features]
                w_ih, b_ih = normed_input_weights(w_ih, b_ih, scale, shift)
            seq = fused_gru_layer(seq, w_ih, b_ih, torch.stack([a.weight_hh_l0, b.weight_hh_l0]),
                                  torch.stack([a.bias_hh_l0, b.bias_hh_l0]), t,
                                  last_only=l == self.num_layers - 1, native=native)
            seq = seq.view(-1, seq.shape[-1])                       # (T*N, 2H), or (N, 2H) at the top
        return seq

    def reference_key_map(self) -> dict[str, str]:
        key_map = _norm_key_map()
        for l in range(self.num_layers):
            for name in GRU_TENSOR_NAMES:
                key_map[f"{REFERENCE_GRU_PREFIX}{name}_l{l}"] = f"layers.{l}.cell_a.{name}_l0"
                key_map[f"{REFERENCE_GRU_PREFIX}{name}_l{l}_reverse"] = f"layers.{l}.cell_b.{name}_l0"
        return key_map


def _foldable(norm: nn.Module) -> bool:
    """Whether the ``fused`` path can fold ``norm`` into the first layer: a plain affine
    ``nn.BatchNorm1d`` (a subclass, such as torchrun's global BatchNorm, is called instead)."""
    return type(norm) is nn.BatchNorm1d and norm.affine


def time_major_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Clips ``x (N, C, T, V, M)`` -> ``(rows (T*N, C*V*M), features (C*V*M,))``.

    Row ``t*N + i`` holds clip ``i`` at frame ``t`` in ``(C, V, M)`` order, a copy of whole
    ``V*M`` blocks; ``features[j]`` is the index in :func:`flatten_frames`' ``(V, C, M)`` order
    of what column ``j`` holds.
    """
    n, c, t, v, m = x.shape
    rows = x.permute(2, 0, 1, 3, 4).reshape(t * n, c * v * m)
    features = torch.arange(v * c * m, device=x.device).view(v, c, m).transpose(0, 1).reshape(-1)
    return rows, features


def normalise_rows(norm: nn.BatchNorm1d, rows: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
    """What ``norm`` does to ``rows (T*N, F)`` without its scale and shift: ``(x - mean) / std``.

    Statistics over all rows in training mode (those of the ``(N, F, T)`` input, frames and
    clips together), the running ones in eval mode; the running statistics and the batch
    counter move exactly as a call of ``norm`` would move them. ``features[j]``: the feature of
    ``norm`` that column ``j`` holds (``None``: column ``j`` is feature ``j``).
    """
    factor = 0.0 if norm.momentum is None else norm.momentum
    if norm.training and norm.track_running_stats and norm.num_batches_tracked is not None:
        norm.num_batches_tracked.add_(1)
        factor = 1.0 / float(norm.num_batches_tracked) if norm.momentum is None else norm.momentum
    use_batch = norm.training or (norm.running_mean is None and norm.running_var is None)
    keep = not norm.training or norm.track_running_stats
    mean, var = (norm.running_mean, norm.running_var) if keep else (None, None)
    reordered = features is not None and mean is not None
    if reordered:
        mean, var = mean[features], var[features]                   # copies in the columns' order
    out = F.batch_norm(rows, mean, var, None, None, use_batch, factor, norm.eps)
    if reordered and norm.training:                                 # the copies moved: so do the buffers
        norm.running_mean.index_copy_(0, features, mean)
        norm.running_var.index_copy_(0, features, var)
    return out


def normed_input_weights(w_ih: torch.Tensor, b_ih: torch.Tensor, scale: torch.Tensor,
                         shift: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold a BatchNorm's ``scale`` and ``shift`` ``(F,)`` into the input weights ``(3H', F)``
    and biases ``(3H',)`` of the layer that reads it: ``W (scale * x + shift) + b =
    (W scale) x + (W shift + b)``. Gradients reach all four through these small products."""
    return w_ih * scale, torch.addmv(b_ih, w_ih, shift)


def encode_grouped(encoders: Sequence[CausalTwinGRU], normed: Sequence[torch.Tensor]) -> torch.Tensor:
    """``S`` encoders of equal sizes on their BatchNormed frames ``(N, F, T)`` (one per encoder)
    -> ``(S, N, 2*hidden_size)``, every layer one :func:`~.gru_recurrence.grouped_gru_layer`.

    The weights stay in each layer's ``nn.GRU`` cells (checkpoint names unchanged); they are
    stacked for the call, and the stacking passes the gradients back to them.
    """
    s, (n, f, t) = len(encoders), normed[0].shape
    x = torch.stack([z.permute(2, 0, 1) for z in normed]).reshape(s, t * n, f)  # (S, T*N, F), time-major
    for l in range(encoders[0].num_layers):
        cells = [cell for e in encoders for cell in (e.layers[l].cell_a, e.layers[l].cell_b)]

        def stacked(name: str) -> torch.Tensor:
            weights = torch.stack([getattr(cell, name) for cell in cells])      # (S*2, 3H, ...)
            return weights.view(s, 2, *weights.shape[1:])

        out = grouped_gru_layer(x, stacked("weight_ih_l0"), stacked("bias_ih_l0"),
                                stacked("weight_hh_l0"), stacked("bias_hh_l0"), t)   # (T, S, 2, N, H)
        if l == encoders[0].num_layers - 1:
            return out[-1].permute(0, 2, 1, 3).reshape(s, n, -1)                # (S, N, 2H): last frame
        x = out.permute(1, 0, 3, 2, 4).reshape(s, t * n, -1)                   # (S, T*N, 2H)
    raise AssertionError("unreachable: encoders have at least one layer")


def encode_streams(encoders: Sequence[SequenceEncoder], clips: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """``[encoders[i](clips[i]) ...]``, each ``(N, C, T, V, M) -> (N, feature_dim)``.

    :class:`CausalTwinGRU` encoders on the ``grouped`` path with equal sizes and clip shapes
    (the streams of one MoCo side) run together: one time loop for all their cells.
    """
    if len(encoders) != len(clips):
        raise ValueError(f"{len(encoders)} encoders for {len(clips)} clip batches")
    if len(encoders) > 1 and _groupable(encoders, clips):
        frames = [flatten_frames(x) for x in clips]
        if frames[0].shape[-1] == encoders[0].input_size and frames[0].shape[1] > 0:
            return list(encode_grouped(encoders, [e.normed_frames(z) for e, z in zip(encoders, frames)]))
    return [encoder(x) for encoder, x in zip(encoders, clips)]


def _groupable(encoders: Sequence[SequenceEncoder], clips: Sequence[torch.Tensor]) -> bool:
    """Whether :func:`encode_streams` can run ``encoders`` as one grouped time loop."""
    first, x0 = encoders[0], clips[0]
    return (all(isinstance(e, CausalTwinGRU) and e.path(x0) == "grouped" for e in encoders)
            and all((e.input_size, e.hidden_size, e.num_layers) == (first.input_size, first.hidden_size,
                                                                     first.num_layers) for e in encoders)
            and all(x.dim() == 5 and x.shape == x0.shape and x.dtype == x0.dtype and x.device == x0.device
                    for x in clips))


class BiGRUEncoder(SequenceEncoder):
    """A true bidirectional GRU over the whole clip (config kind ``bigru``).

    Same BatchNorm and weight layout as the reference; the representation is
    ``[forward state after frame T-1; backward state after frame 0]``,
    ``(N, 2*hidden_size)``. Unlike :class:`CausalTwinGRU` the backward half reads the
    clip from its end, so both halves summarise the whole clip.
    """

    def __init__(self, input_size: int = 150, hidden_size: int = 1024, num_layers: int = 3) -> None:
        super().__init__(input_size, hidden_size, num_layers)
        self.gru = nn.GRU(input_size, hidden_size, num_layers=num_layers,
                          bidirectional=True, batch_first=True)
        xavier_init_gru(self.gru)

    @classmethod
    def from_config(cls, cfg: EncoderConfig) -> "BiGRUEncoder":
        return cls(cfg.input_size, cfg.hidden_size, cfg.num_layers)

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """``frames (N, T, input_size)`` -> ``(N, 2*hidden_size)``."""
        seq = self.input_norm(frames.transpose(1, 2)).transpose(1, 2)
        out, _ = self.gru(seq)                  # (N, T, 2H): [forward; backward] per frame
        h = self.hidden_size
        return torch.cat([out[:, -1, :h], out[:, 0, h:]], dim=-1)  # (N, 2H)

    def reference_key_map(self) -> dict[str, str]:
        key_map = _norm_key_map()
        for name, _ in self.gru.named_parameters():
            key_map[REFERENCE_GRU_PREFIX + name] = "gru." + name
        return key_map


class ProjectionHead(nn.Sequential):
    """``Linear(in, hidden) -> ReLU -> Linear(hidden, out)``: ``(N, in) -> (N, out)``.

    Initialised as the reference's MLP head: the first ``Linear`` keeps PyTorch's
    default init, the last one gets ``xavier_uniform_`` on its weight. State-dict keys
    are ``0.*`` and ``2.*``, as the reference's ``fc.0.*`` / ``fc.2.*``.
    """

    def __init__(self, in_dim: int = 2048, hidden_dim: int = 2048, out_dim: int = 128) -> None:
        super().__init__(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim))
        with torch.no_grad():
            nn.init.xavier_uniform_(self[2].weight)

    @classmethod
    def from_config(cls, cfg: EncoderConfig) -> "ProjectionHead":
        return cls(cfg.feature_dim, cfg.proj_hidden, cfg.out_dim)


#: Encoder kinds (``EncoderConfig.kind``) -> constructor from the config.
ENCODER_KINDS: dict[str, Callable[[EncoderConfig], SequenceEncoder]] = {
    "bigru_cmd": CausalTwinGRU.from_config,
    "bigru": BiGRUEncoder.from_config,
}


def build_encoder(enc_cfg: EncoderConfig) -> SequenceEncoder:
    """The encoder named by ``enc_cfg.kind``, with ``feature_dim == enc_cfg.feature_dim``."""
    try:
        make = ENCODER_KINDS[enc_cfg.kind]
    except KeyError:
        raise ValueError(
            f"unknown encoder kind {enc_cfg.kind!r}; choose one of {', '.join(ENCODER_KINDS)}"
        ) from None
    return make(enc_cfg)
