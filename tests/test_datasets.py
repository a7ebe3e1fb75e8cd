"""Datasets: dispatch and its errors, per-item seeding, frame limits, loaders, pickling."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from i2md_lib.config import AugmentConfig, DataConfig, ExperimentConfig
from i2md_lib.data import augment, store
from i2md_lib.data.datasets import (
    EvalDataset, PretrainDataset, load_arrays, make_loader, resolve_num_workers, set_epoch,
)
from i2md_lib.data.store import SkeletonArrays

T, V, M = 40, 25, 2
WINDOW = 8


def make_arrays(n: int = 12, seed: int = 0) -> SkeletonArrays:
    """Random clips whose frames after num_frame are NaN, so reading padding shows up."""
    rng = np.random.default_rng(seed)
    data = rng.standard_normal((n, 3, T, V, M)).astype(np.float32)
    num_frame = rng.integers(5, T + 1, size=n)
    for i, nf in enumerate(num_frame):
        data[i, :, nf:] = np.nan
    labels = np.arange(n) % 3
    return SkeletonArrays(data, num_frame.astype(np.int64), labels.astype(np.int64),
                          [f"S001C001P{i:03d}R001A001" for i in range(n)])


@pytest.fixture
def arrays() -> SkeletonArrays:
    return make_arrays()


@pytest.fixture
def saved_root(tmp_path, arrays):
    """An NTU-60-style root with an xsub benchmark folder in the CMD layout."""
    store.save_split(tmp_path / "xsub", "train", arrays)
    store.save_split(tmp_path / "xsub", "val", make_arrays(5, seed=1))
    return tmp_path


# -- load_arrays -----------------------------------------------------------


def test_load_arrays_reads_benchmark_folder_memory_mapped(saved_root, arrays):
    cfg = DataConfig(dataset="ntu60", benchmark="xsub", root=str(saved_root))
    train = load_arrays(cfg, "train")
    assert isinstance(train.data, np.memmap)
    np.testing.assert_array_equal(train.data, arrays.data)
    np.testing.assert_array_equal(train.num_frame, arrays.num_frame)
    assert len(load_arrays(cfg, "val")) == 5
    in_memory = load_arrays(DataConfig(dataset="pku2", benchmark="xsub", root=str(saved_root), mmap=False), "train")
    assert not isinstance(in_memory.data, np.memmap)


def test_load_arrays_accepts_reference_xsetup_folder(tmp_path, arrays):
    store.save_split(tmp_path / "xsetup", "train", arrays)
    got = load_arrays(DataConfig(dataset="ntu120", benchmark="xset", root=str(tmp_path)), "train")
    assert len(got) == len(arrays)


@pytest.mark.parametrize("fields,error,message", [
    # a benchmark or dataset that does not exist is refused by the config itself
    (dict(dataset="ntu60", benchmark="xset", root="."), ValueError, "data.benchmark .*xsub, xview"),
    (dict(dataset="ntu120", benchmark="xview", root="."), ValueError, "data.benchmark .*xsub, xset"),
    (dict(dataset="kinetics"), ValueError, "data.dataset must be one of .*'kinetics'"),
    (dict(dataset="ntu60", root=None), ValueError, "prepare-ntu"),
    (dict(dataset="pku2", root=None), ValueError, "prepare-pku"),
    (dict(dataset="ntu120", root="/nonexistent/ntu"), FileNotFoundError, "/nonexistent/ntu"),
])
def test_load_arrays_errors(fields, error, message):
    with pytest.raises(error, match=message):
        load_arrays(DataConfig(**fields), "train")


def test_load_arrays_missing_benchmark_or_part(saved_root):
    with pytest.raises(FileNotFoundError, match="xview.*prepare-ntu"):
        load_arrays(DataConfig(dataset="ntu60", benchmark="xview", root=str(saved_root)), "train")
    with pytest.raises(ValueError, match="part"):
        load_arrays(DataConfig(dataset="ntu60", root=str(saved_root)), "test")


def test_load_arrays_synthetic():
    pytest.importorskip("i2md_lib.data.synthetic")
    cfg = ExperimentConfig.for_profile("smoke").data
    train = load_arrays(cfg, "train")
    assert isinstance(train, SkeletonArrays) and train.data.shape[1:] == (3, cfg.synthetic.stored_frames, V, M)


# -- PretrainDataset ------------------------------------------------------------


def test_pretrain_items_shapes_and_padding(arrays):
    ds = PretrainDataset(arrays, AugmentConfig(), WINDOW, seed=0)
    assert len(ds) == len(arrays)
    for i in range(len(ds)):
        q, k, index = ds[i]
        assert index == i
        assert q.shape == k.shape == (3, WINDOW, V, M) and q.dtype == torch.float32
        assert torch.isfinite(q).all() and torch.isfinite(k).all()   # only valid frames are read
        assert not torch.equal(q, k)


def test_pretrain_views_are_seeded_per_seed_epoch_index(arrays):
    ds = PretrainDataset(arrays, AugmentConfig(), WINDOW, seed=3)
    forward = [ds[i] for i in range(len(ds))]
    backward = [ds[i] for i in reversed(range(len(ds)))][::-1]
    other = PretrainDataset(arrays, AugmentConfig(), WINDOW, seed=3)
    for i, (a, b) in enumerate(zip(forward, backward)):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        assert torch.equal(other[i][0], a[0])
    # the views are exactly PretrainAugment driven by default_rng([seed, epoch, index])
    rng = np.random.default_rng([3, 0, 4])
    aug = augment.PretrainAugment(AugmentConfig(), WINDOW)
    clip = arrays.data[4, :, :arrays.num_frame[4]]
    np.testing.assert_array_equal(forward[4][0].numpy(), aug(clip, arrays.num_frame[4], rng))
    np.testing.assert_array_equal(forward[4][1].numpy(), aug(clip, arrays.num_frame[4], rng))

    ds.set_epoch(1)
    assert not torch.equal(ds[4][0], forward[4][0])
    ds.set_epoch(0)
    assert torch.equal(ds[4][0], forward[4][0])
    assert not torch.equal(PretrainDataset(arrays, AugmentConfig(), WINDOW, seed=4)[4][0], forward[4][0])


def test_pretrain_max_frames_limits_frames_read(arrays):
    limited = make_arrays()
    limited.data[:, :, 6:] = np.nan                          # only the first 6 frames are usable
    ds = PretrainDataset(limited, AugmentConfig(), WINDOW, max_frames=6)
    assert all(torch.isfinite(ds[i][0]).all() for i in range(len(ds)))
    with pytest.raises(ValueError, match="max_frames"):
        PretrainDataset(arrays, AugmentConfig(), WINDOW, max_frames=0)


def test_from_config():
    cfg = ExperimentConfig.for_profile("smoke")
    ds = PretrainDataset.from_config(make_arrays(), cfg)
    assert ds.window == cfg.data.window and ds.seed == cfg.pretrain.seed and ds.max_frames == cfg.data.max_frames
    ev = EvalDataset.from_config(make_arrays(), cfg, mode="train")
    assert ev.crop_range == cfg.eval.train_crop_range and ev.mode == "train"


# -- EvalDataset -----------------------------------------------------------------


def test_eval_test_mode_is_centre_crop(arrays):
    ds = EvalDataset(arrays, WINDOW, mode="test")
    clip, label = ds[2]
    assert label == int(arrays.labels[2]) and clip.shape == (3, WINDOW, V, M)
    n = int(arrays.num_frame[2])
    np.testing.assert_array_equal(clip.numpy(), augment.center_crop_resize(arrays.data[2], n, 0.95, WINDOW))
    ds.set_epoch(5)
    assert torch.equal(ds[2][0], clip)                     # deterministic


def test_eval_train_mode_is_seeded_random_crop(arrays):
    ds = EvalDataset(arrays, WINDOW, mode="train", seed=1)
    ds.set_epoch(2)
    first = ds[7][0]
    expected = augment.random_crop_resize(arrays.data[7], int(arrays.num_frame[7]), (0.5, 1.0), WINDOW,
                                          rng=np.random.default_rng([1, 2, 7]))
    np.testing.assert_array_equal(first.numpy(), expected)
    assert torch.isfinite(torch.stack([ds[i][0] for i in range(len(ds))])).all()
    with pytest.raises(ValueError, match="mode"):
        EvalDataset(arrays, WINDOW, mode="val")


# -- loaders and workers ------------------------------------------------------


def test_loader_order_depends_only_on_seed_and_epoch(arrays):
    ds = EvalDataset(arrays, WINDOW)
    loader = make_loader(PretrainDataset(arrays, AugmentConfig(), WINDOW), batch_size=5, shuffle=True,
                         drop_last=True, seed=11)

    def order(epoch):
        set_epoch(loader, epoch)
        return torch.cat([idx for _, _, idx in loader]).tolist()

    epoch0 = order(0)
    assert len(epoch0) == 10 and len(set(epoch0)) == 10                  # 12 clips, drop_last
    assert order(0) == epoch0 and order(1) != epoch0
    fresh = make_loader(PretrainDataset(arrays, AugmentConfig(), WINDOW), 5, True, True, seed=11)
    assert torch.cat([b[2] for b in fresh]).tolist() == epoch0
    plain = make_loader(ds, batch_size=5, shuffle=False)
    assert torch.cat([label for _, label in plain]).tolist() == arrays.labels.tolist()


def test_workers_give_the_same_batches(saved_root):
    arrays = load_arrays(DataConfig(dataset="ntu60", root=str(saved_root)), "train")
    batches = {}
    for workers in (0, 2):
        loader = make_loader(PretrainDataset(arrays, AugmentConfig(), WINDOW, seed=5), 4, True, seed=1,
                             num_workers=workers)
        set_epoch(loader, 3)
        batches[workers] = [torch.cat([q, k]) for q, k, _ in loader]
    assert all(torch.equal(a, b) for a, b in zip(batches[0], batches[2]))


def test_pickled_dataset_reopens_memory_map(saved_root):
    arrays = load_arrays(DataConfig(dataset="ntu60", root=str(saved_root)), "train")
    ds = PretrainDataset(arrays, AugmentConfig(), WINDOW, seed=2)
    ds.set_epoch(4)
    blob = pickle.dumps(ds)
    assert len(blob) < arrays.data.nbytes / 10                # the clips are not copied
    copy = pickle.loads(blob)
    assert isinstance(copy.arrays.data, np.memmap) and copy.epoch == 4
    assert all(torch.equal(copy[i][0], ds[i][0]) for i in range(len(ds)))
    # in-memory arrays (e.g. a subset) still pickle by value
    small = PretrainDataset(arrays.subset(np.arange(3)), AugmentConfig(), WINDOW)
    assert torch.equal(pickle.loads(pickle.dumps(small))[1][0], small[1][0])


def test_resolve_num_workers():
    import os

    assert resolve_num_workers(0) == 0 and resolve_num_workers(3) == 3
    assert resolve_num_workers(-1) == min(os.cpu_count() or 1, 8)
    with pytest.raises(ValueError):
        resolve_num_workers(-2)


def test_subset_of_a_memory_mapped_split_reads_lazily_and_pickles_small(tmp_path):
    import pickle

    from i2md_lib.data.store import RowView, SkeletonArrays, load_split, save_split

    rng = np.random.default_rng(0)
    data = rng.normal(size=(12, 3, 20, 25, 2)).astype(np.float32)
    save_split(tmp_path, "train", SkeletonArrays(data, np.full(12, 20), np.arange(12) % 3,
                                                 [f"c{i}" for i in range(12)]))
    mapped = load_split(tmp_path, "train", mmap=True)
    sub = mapped.subset(np.array([7, 2, 9]))
    assert isinstance(sub.data, RowView) and sub.data.shape == (3, 3, 20, 25, 2)
    np.testing.assert_array_equal(sub.data[1], data[2])
    np.testing.assert_array_equal(sub.data[0, :, :5], data[7, :, :5])
    np.testing.assert_array_equal(np.asarray(sub.data), data[[7, 2, 9]])
    subsub = sub.subset(np.array([2]))
    np.testing.assert_array_equal(subsub.data[0], data[9])
    assert list(sub.labels) == [1, 2, 0] and sub.names == ["c7", "c2", "c9"]
    ds = EvalDataset(sub, window=8)
    blob = pickle.dumps(ds)
    assert len(blob) < data.nbytes // 10            # the map is re-opened, not copied
    again = pickle.loads(blob)
    np.testing.assert_array_equal(again[1][0].numpy(), ds[1][0].numpy())
    # in-memory data is still copied as before
    assert isinstance(SkeletonArrays(data, np.full(12, 20), np.zeros(12, int), list("abcdefghijkl"))
                      .subset(np.array([0])).data, np.ndarray)
