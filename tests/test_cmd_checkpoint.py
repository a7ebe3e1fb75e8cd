"""Tests of i2md_lib.models.cmd_checkpoint on checkpoints built in the reference layout."""
from __future__ import annotations

import argparse

import pytest
import torch
from torch import nn

from i2md_lib.config import EncoderConfig
from i2md_lib.models.cmd_checkpoint import CheckpointError, infer_encoder_config, load_cmd_checkpoint
from i2md_lib.models.encoders import CausalTwinGRU

FEATURES, HIDDEN, LAYERS, OUT = 150, 12, 2, 8
MODALITY_ENCODERS = {"joint": "encoder_q", "motion": "encoder_q_motion", "bone": "encoder_q_bone"}


class PerFrameRecurrent(nn.Module):
    """Holds the GRU under the name ``gru`` (the reference's ``EncoderRNN``)."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(FEATURES, HIDDEN, num_layers=LAYERS, bidirectional=True, batch_first=True)


class ReferenceStructuredBIGRU(nn.Module):
    """Same module tree, names and computation as the reference ``BIGRU`` with the MLP
    head: input BatchNorm, a bidirectional GRU called one frame at a time, ``fc``."""

    def __init__(self) -> None:
        super().__init__()
        self.input_norm = nn.BatchNorm1d(FEATURES)
        self.encoder = PerFrameRecurrent()
        self.fc = nn.Sequential(nn.Linear(2 * HIDDEN, 2 * HIDDEN), nn.ReLU(), nn.Linear(2 * HIDDEN, OUT))
        with torch.no_grad():  # non-trivial BN so that loading it is actually checked
            self.input_norm.weight.uniform_(0.5, 1.5)
            self.input_norm.bias.normal_(0, 0.3)
            self.input_norm.running_mean.normal_(0, 1)
            self.input_norm.running_var.uniform_(0.5, 2.0)

    def feature(self, frames: torch.Tensor) -> torch.Tensor:
        """``frames (N, T, 150)`` -> the 2H feature before ``fc`` (``knn_eval=True``)."""
        seq = self.input_norm(frames.permute(0, 2, 1)).permute(0, 2, 1)
        hidden = None
        for t in range(seq.shape[1]):
            out, hidden = self.encoder.gru(seq[:, t:t + 1], hidden)
        return out[:, 0]


class ReferenceStructuredMoCo(nn.Module):
    """Query and key encoders of the three modalities plus queues, as named by the reference."""

    def __init__(self) -> None:
        super().__init__()
        for name in MODALITY_ENCODERS.values():
            setattr(self, name, ReferenceStructuredBIGRU())
            setattr(self, name.replace("_q", "_k"), ReferenceStructuredBIGRU())
        self.register_buffer("queue", torch.randn(OUT, 32))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))


def flatten(x: torch.Tensor) -> torch.Tensor:
    n, c, t, v, m = x.shape
    return x.permute(0, 2, 3, 1, 4).reshape(n, t, v * c * m)


@pytest.fixture(scope="module")
def reference() -> ReferenceStructuredMoCo:
    torch.manual_seed(0)
    return ReferenceStructuredMoCo().eval()


@pytest.fixture(scope="module")
def clips() -> torch.Tensor:
    return torch.randn(4, 3, 5, 25, 2, generator=torch.Generator().manual_seed(1))


def assert_reproduces(encoders, reference, clips, branch="q"):
    for modality, name in MODALITY_ENCODERS.items():
        ref = getattr(reference, name.replace("_q", f"_{branch}"))
        with torch.no_grad():
            expected = ref.feature(flatten(clips))
            got = encoders[modality](clips)
        assert isinstance(encoders[modality], CausalTwinGRU)
        assert not encoders[modality].training
        assert got.shape == (4, 2 * HIDDEN)
        assert torch.allclose(got, expected, atol=1e-5, rtol=0), (modality, (got - expected).abs().max())


def test_loads_saved_checkpoint_file_and_reproduces_reference(tmp_path, reference, clips):
    path = tmp_path / "checkpoint_0450.pth.tar"
    torch.save({"epoch": 451, "state_dict": reference.state_dict(),
                "optimizer": {"state": {}, "param_groups": [{"lr": 0.01}]}}, path)
    encoders = load_cmd_checkpoint(path)
    assert set(encoders) == {"joint", "motion", "bone"}
    assert encoders["joint"].hidden_size == HIDDEN and encoders["joint"].num_layers == LAYERS
    assert_reproduces(encoders, reference, clips)
    # the encoders differ from each other: each modality got its own weights
    assert not torch.allclose(encoders["joint"](clips), encoders["bone"](clips))


def test_bare_state_dict_with_module_prefix_and_key_branch(reference, clips):
    state = {"module." + k: v for k, v in reference.state_dict().items()}
    cfg = EncoderConfig(hidden_size=HIDDEN, num_layers=LAYERS)
    assert_reproduces(load_cmd_checkpoint(state, encoder_cfg=cfg), reference, clips)
    assert_reproduces(load_cmd_checkpoint(state, branch="key"), reference, clips, branch="k")


def test_subset_of_modalities_and_missing_modality(reference):
    state = {k: v for k, v in reference.state_dict().items() if not k.startswith("encoder_q_bone.")}
    assert set(load_cmd_checkpoint(state, modalities=("joint",))) == {"joint"}
    with pytest.raises(CheckpointError, match=r"'bone'.*found query encoders for \['joint', 'motion'\]"):
        load_cmd_checkpoint(state)
    with pytest.raises(ValueError, match="unknown modality 'rgb'"):
        load_cmd_checkpoint(reference.state_dict(), modalities=("rgb",))


def test_shape_mismatch_with_config_is_reported(reference):
    with pytest.raises(CheckpointError, match=r"shape mismatch.*\(150, 12, 2\).*\(150, 1024, 3\)"):
        load_cmd_checkpoint(reference.state_dict(), encoder_cfg=EncoderConfig())


def test_broken_encoder_keys_are_reported(reference):
    state = dict(reference.state_dict())
    state.pop("encoder_q.encoder.gru.weight_hh_l1_reverse")
    with pytest.raises(CheckpointError, match="encoder_q: .*missing.*weight_hh_l1_reverse"):
        load_cmd_checkpoint(state, modalities=("joint",))
    state = dict(reference.state_dict())
    state["encoder_q.encoder.gru.bias_ih_l1"] = torch.zeros(5)
    with pytest.raises(CheckpointError, match="shape mismatch for 'encoder.gru.bias_ih_l1'"):
        load_cmd_checkpoint(state, modalities=("joint",))


def test_not_a_checkpoint(tmp_path):
    junk = tmp_path / "notes.pth.tar"
    junk.write_bytes(b"this is not a torch file")
    with pytest.raises(CheckpointError, match="notes.pth.tar: not a readable PyTorch checkpoint"):
        load_cmd_checkpoint(junk)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_cmd_checkpoint(tmp_path / "missing.pth")
    tensor_file = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor_file)
    with pytest.raises(CheckpointError, match="tensor.pt: not a checkpoint, the file holds a Tensor"):
        load_cmd_checkpoint(tensor_file)
    pickled_objects = tmp_path / "with_args.pth.tar"
    torch.save({"state_dict": {}, "args": argparse.Namespace(lr=0.01)}, pickled_objects)
    with pytest.raises(CheckpointError, match="with_args.pth.tar: holds Python objects"):
        load_cmd_checkpoint(pickled_objects)
    other_model = {"state_dict": nn.Linear(2, 2).state_dict()}
    with pytest.raises(CheckpointError, match=r"not a CMD checkpoint.*\['bias', 'weight'\]"):
        load_cmd_checkpoint(other_model)


def test_infer_encoder_config_from_shapes():
    enc = CausalTwinGRU(150, 7, 3)
    cfg = infer_encoder_config(enc.reference_state_dict())
    assert (cfg.kind, cfg.input_size, cfg.hidden_size, cfg.num_layers) == ("bigru_cmd", 150, 7, 3)
