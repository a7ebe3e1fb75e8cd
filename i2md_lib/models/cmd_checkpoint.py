"""Load checkpoints saved by the official CMD code into our encoders.

The reference pretraining script saves ``{"epoch", "state_dict", "optimizer"}`` where
``state_dict`` is the whole MoCo model (keys prefixed with ``module.`` when it was
wrapped in DataParallel/DDP). Each modality has a query and a key encoder, e.g. for the
joint stream ``encoder_q.*`` / ``encoder_k.*`` (motion: ``encoder_q_motion``, bone:
``encoder_q_bone``) with the reference ``BIGRU`` layout::

    encoder_q.input_norm.{weight,bias,running_mean,running_var,num_batches_tracked}
    encoder_q.encoder.gru.{weight_ih,weight_hh,bias_ih,bias_hh}_l{l}[_reverse]
    encoder_q.fc.0.* / encoder_q.fc.2.*     (projection MLP, or encoder_q.fc.* without it)

:func:`load_cmd_checkpoint` returns one :class:`~i2md_lib.models.encoders.CausalTwinGRU`
per modality carrying those weights. The head (``fc``) is dropped, as the reference's
downstream scripts do, so each encoder outputs the ``2*hidden`` feature.

These files carry no digest, so they are checked against what their keys imply: every
GRU layer from 0 to the highest index any key names must be there, and all the encoders
in the file (query and key, every modality: the reference builds them alike) must agree
on input size, hidden size and layer count. A layer removed from one encoder is refused
with one line naming the file. Only a file holding a single encoder cannot show a whole
layer missing; pass ``encoder_cfg`` to check its layer count too.
"""
from __future__ import annotations

import re
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from ..config import EncoderConfig
from ..utils import check_safe_torch_load, describe_non_finite, load_failure
from .encoders import REFERENCE_GRU_PREFIX, SequenceEncoder, build_encoder

#: Modality -> attribute name of its encoder in the reference MoCo model, per branch.
ENCODER_NAMES: dict[str, dict[str, str]] = {
    "query": {"joint": "encoder_q", "motion": "encoder_q_motion", "bone": "encoder_q_bone"},
    "key": {"joint": "encoder_k", "motion": "encoder_k_motion", "bone": "encoder_k_bone"},
}
_GRU_WEIGHT_IH = re.compile(re.escape(REFERENCE_GRU_PREFIX) + r"weight_ih_l(\d+)$")
_GRU_TENSOR = re.compile(re.escape(REFERENCE_GRU_PREFIX) + r"\w+_l(\d+)(_reverse)?$")


class CheckpointError(ValueError):
    """A checkpoint is unreadable or lacks what CMD checkpoints hold (names the source)."""


def load_cmd_checkpoint(
    source: str | Path | Mapping[str, Any],
    modalities: Iterable[str] = ("joint", "motion", "bone"),
    encoder_cfg: EncoderConfig | None = None,
    branch: str = "query",
) -> dict[str, SequenceEncoder]:
    """Our encoders, one per modality, carrying a CMD reference checkpoint's weights.

    Args:
        source: path of a ``.pth.tar`` saved by the reference, or an already loaded
            checkpoint dict / bare state dict (``module.`` prefixes are removed).
        modalities: which streams to load, among ``joint``, ``motion``, ``bone``.
        encoder_cfg: the expected encoder; ``None`` infers input size, hidden size and
            number of layers from the weight shapes (kind ``bigru_cmd``).
        branch: ``"query"`` (the encoders the reference evaluates) or ``"key"``
            (the momentum encoders).

    Returns:
        ``{modality: encoder}``; each maps ``(N, C, T, V, M) -> (N, 2*hidden)`` and is
        in eval mode (BatchNorm uses the stored running statistics).
    """
    if branch not in ENCODER_NAMES:
        raise ValueError(f"branch must be one of {sorted(ENCODER_NAMES)}, got {branch!r}")
    state, where = _read_state_dict(source)
    present = {m: name for m, name in ENCODER_NAMES[branch].items() if _has_prefix(state, name)}
    if not any(_has_prefix(state, name) for names in ENCODER_NAMES.values() for name in names.values()):
        raise CheckpointError(
            f"{where}: not a CMD checkpoint, no encoder_q*/encoder_k* keys; "
            f"first keys are {sorted(state)[:8]}"
        )
    check_same_architecture(state, where)
    encoders: dict[str, SequenceEncoder] = {}
    for modality in modalities:
        if modality not in ENCODER_NAMES[branch]:
            raise ValueError(
                f"unknown modality {modality!r}; choose among {', '.join(ENCODER_NAMES[branch])}"
            )
        if modality not in present:
            raise CheckpointError(
                f"{where}: no {branch} encoder for modality {modality!r} "
                f"(expected keys '{ENCODER_NAMES[branch][modality]}.*'); "
                f"found {branch} encoders for {sorted(present) or 'no modality'}"
            )
        encoders[modality] = _load_one(state, ENCODER_NAMES[branch][modality], encoder_cfg, where)
    return encoders


def infer_encoder_config(encoder_state: Mapping[str, torch.Tensor]) -> EncoderConfig:
    """Input size, hidden size and layers of one reference ``BIGRU`` state dict
    (keys ``input_norm.*``, ``encoder.gru.*``); kind ``bigru_cmd``."""
    layers = sorted(int(m.group(1)) for key in encoder_state if (m := _GRU_WEIGHT_IH.match(key)))
    named = {int(m.group(1)) for key in encoder_state if (m := _GRU_TENSOR.match(key))}
    if not layers or layers != list(range(len(layers))) or max(named) >= len(layers):
        absent = sorted(set(range(max(named | set(layers), default=0) + 1)) - set(layers))
        raise CheckpointError(
            f"no consecutive GRU layers ({REFERENCE_GRU_PREFIX}weight_ih_l0, ...): layer(s) {absent} "
            f"missing among keys {sorted(encoder_state)[:8]}"
        )
    hh = encoder_state.get(f"{REFERENCE_GRU_PREFIX}weight_hh_l0")
    ih = encoder_state[f"{REFERENCE_GRU_PREFIX}weight_ih_l0"]
    if hh is None or hh.dim() != 2 or ih.dim() != 2 or hh.shape[0] != 3 * hh.shape[1]:
        raise CheckpointError(
            f"GRU weights have unexpected shapes: weight_ih_l0 {tuple(ih.shape)}, "
            f"weight_hh_l0 {None if hh is None else tuple(hh.shape)} (expected (3H, in), (3H, H))"
        )
    return EncoderConfig(kind="bigru_cmd", input_size=int(ih.shape[1]),
                         hidden_size=int(hh.shape[1]), num_layers=len(layers))


# ---------------------------------------------------------------------------------------
def _read_state_dict(source: str | Path | Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], str]:
    """The model state dict of ``source`` with ``module.`` prefixes removed, and a name for errors."""
    if isinstance(source, Mapping):
        obj: Any = source
        where = "checkpoint (in-memory dict)"
    else:
        path = Path(source)
        where = str(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such checkpoint file")
        check_safe_torch_load()
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises several types for non-checkpoints
            raise CheckpointError(f"{path}: {load_failure(err)}") from err
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{where}: not a checkpoint, the file holds a {type(obj).__name__}")
    state: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        if isinstance(key, str) and isinstance(value, torch.Tensor):
            while key.startswith("module."):
                key = key[len("module."):]
            state[key] = value
    if not state:
        raise CheckpointError(
            f"{where}: not a checkpoint, no tensors under 'state_dict' or at the top level; "
            f"keys are {list(obj)[:8]}"
        )
    problem = describe_non_finite(state)
    if problem:
        raise CheckpointError(f"{where}: {problem}; these weights cannot be used")
    return state, where


def check_same_architecture(state: Mapping[str, torch.Tensor], where: str) -> None:
    """Raise :class:`CheckpointError` naming ``where`` when the encoders of ``state`` disagree on
    (input size, hidden size, layers): one of them lost a layer or a tensor."""
    shapes = {}
    for names in ENCODER_NAMES.values():
        for name in names.values():
            if _has_prefix(state, name):
                try:
                    found = infer_encoder_config(_encoder_state(state, name))
                except CheckpointError as err:
                    raise CheckpointError(f"{where}: {name}: {err}") from None
                shapes[name] = (found.input_size, found.hidden_size, found.num_layers)
    if len(set(shapes.values())) > 1:
        groups = "; ".join(f"{', '.join(n for n in shapes if shapes[n] == shape)} {shape}"
                           for shape, _ in Counter(shapes.values()).most_common()[::-1])
        raise CheckpointError(f"{where}: the encoders disagree on (input, hidden, layers): {groups}; a layer or "
                              f"tensor is missing, the checkpoint is damaged")


def _encoder_state(state: Mapping[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    """The tensors under ``name.`` without the prefix and without the head (``fc.*``)."""
    prefix = name + "."
    return {k[len(prefix):]: v for k, v in state.items()
            if k.startswith(prefix) and not k[len(prefix):].startswith("fc.")}


def _has_prefix(state: Mapping[str, torch.Tensor], name: str) -> bool:
    return any(key.startswith(name + ".") for key in state)


def _load_one(state: Mapping[str, torch.Tensor], name: str, encoder_cfg: EncoderConfig | None,
              where: str) -> SequenceEncoder:
    """Build our encoder and fill it with the tensors under ``name.`` (head dropped)."""
    sub = _encoder_state(state, name)
    try:
        found = infer_encoder_config(sub)
    except CheckpointError as err:
        raise CheckpointError(f"{where}: {name}: {err}") from None
    cfg = found if encoder_cfg is None else encoder_cfg
    if encoder_cfg is not None:
        wanted = (cfg.input_size, cfg.hidden_size, cfg.num_layers)
        have = (found.input_size, found.hidden_size, found.num_layers)
        if wanted != have:
            raise CheckpointError(
                f"{where}: {name}: shape mismatch, the checkpoint has (input, hidden, layers) = "
                f"{have} but encoder_cfg asks for {wanted}"
            )
        if cfg.kind == "bigru":
            warnings.warn(
                "loading CMD weights into a true bidirectional GRU (kind 'bigru'): it computes "
                "a different function from the one they were trained in ('bigru_cmd')",
                stacklevel=3,
            )
    encoder = build_encoder(cfg)
    try:
        encoder.load_reference_state_dict(sub)
    except (KeyError, ValueError) as err:
        message = err.args[0] if err.args else str(err)
        raise CheckpointError(f"{where}: {name}: {message}") from None
    return encoder.eval()
